#!/usr/bin/env bash
# Set up everything the test suite needs and run it: the venv with all extras, then -- where
# this user may install system packages (root, as in CI) -- real Krita (Debian), GIMP 3 (a
# Debian trixie chroot, cached) and Xvfb, so the editor tests run inside the real editors.
# Extra arguments go to pytest.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh --test

if [[ $EUID -eq 0 ]]; then
    for script in scripts/setup_krita.sh scripts/setup_gimp.sh scripts/setup_tray.sh; do
        [[ -f "$script" ]] && bash "$script" >/dev/null
    done
    # The editors are installed now: their tests must run, not skip.
    export TOUCHUP_REQUIRE_EDITORS=1
else
    echo "test: not root, so Krita/GIMP are not installed; their tests skip where absent" >&2
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .

set +e
.venv/bin/python -m pytest -ra "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "test: pytest collected no tests" >&2
    exit 1
fi
exit $status
