#!/usr/bin/env bash
# Quick start: set up .venv, build the bundled example (a real photo with a degraded region and a
# reference), refine it with the embedded CPU engine, and write a before/after/difference sheet.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/out/example}"
bash "$repo/scripts/setup.sh"
touchup="$repo/.venv/bin/touchup"

"$touchup" example make --out "$out"
"$touchup" refine "$out/input.png" --mask "$out/mask.png" --reference "$out/reference.png" \
    -o "$out/refined.png" --layer-out "$out/layer.png"
"$touchup" example sheet --input "$out/input.png" --output "$out/refined.png" \
    --clean "$out/clean.png" --mask "$out/mask.png" --out "$out/sheet.png"
echo "refined image: $out/refined.png"
echo "before/after sheet: $out/sheet.png"
