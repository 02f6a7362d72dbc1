#!/usr/bin/env bash
# Type-check the product with mypy (settings: [tool.mypy] in pyproject.toml; stubs for the
# editors' APIs in typings/). Extra arguments go to mypy.
#
# The top-level folders are the subpackages of one `touchup` package (pyproject maps them), a
# layout mypy cannot read from the folders themselves: this script gives it a `touchup/` folder
# of symlinks in .cache/typecheck and prints the errors against the real paths. The GIMP
# plug-in's folder name is not a package name, so its modules are checked as top-level modules.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
tree=.cache/typecheck/touchup
mkdir -p "$tree"
: >"$tree/__init__.py"
for folder in shared backend installer plugin_krita plugin_gimp; do
    ln -sfn "../../../$folder" "$tree/$folder"
done
set +e
.venv/bin/mypy "$tree" plugin_gimp/touchup-refine/*.py "$@" 2>&1 | sed "s#^$tree/##"
status=${PIPESTATUS[0]}
set -e
exit "$status"
