#!/usr/bin/env bash
# Set up Touchup in .venv at the project root. Idempotent: a second run only installs what changed.
#
#   scripts/setup.sh          the product (CPU engine, CLI, backend)
#   scripts/setup.sh --test   also the test, evaluation, tray, diffusion and cluster extras
#
# Torch: the project asks for any recent torch (users pick the build for their GPU). On a machine
# without an NVIDIA GPU this script pins the CPU build first, so pip never pulls the multi-GB
# CUDA build just to run tests.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"
log() { echo "setup: $*" >&2; }

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)

extras=""
if [[ "${1:-}" == "--test" ]]; then
    extras="[test,eval,tray,diffusion,cluster]"
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
        if ! "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
            log "no NVIDIA GPU: installing the CPU build of torch"
            "${pip[@]}" install "torch==2.13.0"
        fi
    fi
fi

log "installing touchup$extras (editable)"
"${pip[@]}" install -e "$repo$extras"
log "ready: $venv/bin/touchup"
