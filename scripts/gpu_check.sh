#!/usr/bin/env bash
# Measure every diffusion preset on an NVIDIA GPU without any weights: full-size pipelines built
# from the vendored real configs with random weights, per memory policy that fits the card.
# Prints a Markdown table (see docs/diffusion.md, "GPU check"). Meant to finish within about
# 8 minutes on one H100/H200 (--budget, default 450 s, skips what is left after that).
#
#   scripts/gpu_check.sh                   on a GPU machine where touchup[diffusion] is installed
#   scripts/gpu_check.sh --wheels DIR      on a GPU machine without a package index: installs
#                                          diffusers, Touchup and the small extras from DIR only
#                                          (made beforehand by scripts/gpu_wheels.sh DIR)
#   scripts/gpu_check.sh --tiny            tiny pipelines on the CPU (CI runs this)
#
# Other arguments go to scripts/gpu_check.py (--presets a,b  --policies gpu,model_offload  --budget S).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "gpu_check: $*" >&2; }
tiny=0
wheels=""
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tiny) tiny=1; args+=("--tiny") ;;
        --wheels) wheels="$2"; shift ;;
        *) args+=("$1") ;;
    esac
    shift
done

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi

if [[ "$tiny" == 0 ]]; then
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
        log "no NVIDIA GPU here; use --tiny for the CPU run"
        exit 2
    fi
    if [[ -n "$wheels" ]]; then
        # A virtual environment that sees the machine's torch, transformers, peft and accelerate,
        # with only what is missing installed from the wheel folder (no index is contacted).
        venv="$repo/.gpu-venv"
        base="${PYTHON:-python3}"
        [[ -x "$venv/bin/python" ]] || "$base" -m venv --system-site-packages "$venv"
        python="$venv/bin/python"
        log "installing from $wheels (no index)"
        shopt -s nullglob
        files=("$wheels"/*.whl)
        [[ ${#files[@]} -gt 0 ]] || { log "no wheels in $wheels; run scripts/gpu_wheels.sh $wheels first"; exit 2; }
        "$python" -m pip install --quiet --no-index --no-deps --find-links "$wheels" "${files[@]}"
    fi
    "$python" -c 'import torch, diffusers, transformers, touchup.backend' || {
        log "torch, diffusers, transformers or touchup is missing (pass --wheels DIR)"
        exit 2
    }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
fi

cd "$repo"
exec "$python" "$repo/scripts/gpu_check.py" "${args[@]}"
