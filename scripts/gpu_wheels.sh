#!/usr/bin/env bash
# Prepare the wheel folder scripts/gpu_check.sh --wheels DIR installs from, on a machine that
# reaches PyPI, for a GPU machine that does not. The GPU machine is assumed to have torch,
# transformers, peft, accelerate and their dependencies (numpy, safetensors, huggingface_hub,
# regex, requests, filelock, tqdm, packaging); this adds diffusers, Touchup and Touchup's small
# dependencies (about 15 MB). --full adds OpenCV and SciPy (about 90 MB more), which only the
# 96x96-in-4096x4096 overhead column needs; without them that column reads "n/a".
#
#   scripts/gpu_wheels.sh DIR [--python-version 3.12] [--full]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: scripts/gpu_wheels.sh DIR [--python-version 3.12] [--full]}"
shift
pyver="3.12"
full=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --python-version) pyver="$2"; shift ;;
        --full) full=1 ;;
        *) echo "gpu_wheels: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
python="${PYTHON:-python3}"
[[ -x "$repo/.venv/bin/python" ]] && python="$repo/.venv/bin/python"
mkdir -p "$dest"

packages=(diffusers importlib_metadata zipp pillow msgpack pyzmq platformdirs)
if [[ "$full" == 1 ]]; then
    packages+=(opencv-python-headless scipy scikit-image)
fi
# Binary wheels for the GPU machine's interpreter and platform, without resolving against this one.
"$python" -m pip download --quiet --dest "$dest" --no-deps --only-binary=:all: \
    --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "${packages[@]}"
# Touchup itself (pure Python).
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$dest" "$repo"
du -sh "$dest" >&2
ls "$dest"
