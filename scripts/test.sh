#!/usr/bin/env bash
# Set up everything the test suite needs and run it: the venv with all extras, then -- where
# this user may install system packages (root, as in CI) -- real Krita 5.1 (Debian) and Krita
# 5.2/5.3/6.0, GIMP 3.0/3.2 and the tray's StatusNotifier host in Debian chroots, plus Xvfb, so
# the editor tests run inside every tested editor release. The chroots are cached as tarballs in
# ~/.cache/touchup/chroots (and ~/.cache/touchup/gimp): keep those folders between CI runs and
# setting up takes seconds instead of minutes. Extra arguments go to pytest.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh --test

# setup.sh --test installed the diffusion extra: its tests must run, never skip.
export TOUCHUP_REQUIRE_DIFFUSION=1
if [[ $EUID -eq 0 ]]; then
    for script in scripts/setup_krita.sh scripts/setup_gimp.sh scripts/setup_tray.sh; do
        [[ -f "$script" ]] && bash "$script" >/dev/null
    done
fi
if [[ $EUID -eq 0 || "${CI:-}" == "true" ]]; then
    # The editors are installed now (or, in CI, must have been): their tests must run, not skip.
    export TOUCHUP_REQUIRE_EDITORS=1
else
    echo "test: not root, so Krita/GIMP are not installed; their tests skip where absent" >&2
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/typecheck.sh

set +e
.venv/bin/python -m pytest -ra "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "test: pytest collected no tests" >&2
    exit 1
fi
exit $status
