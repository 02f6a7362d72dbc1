#!/usr/bin/env bash
# Install what the Krita tests need on Debian/Ubuntu: Krita (with its Python plugin support),
# Xvfb for the GUI test, and pyzmq/msgpack for Krita's system Python. Safe to run repeatedly:
# packages already present are skipped. Needs root (or sudo).
set -euo pipefail

# python3-pyqt5 and python3-sip are only Recommends of krita, but its Python plugins need them.
packages=(krita python3-pyqt5 python3-sip xvfb xauth python3-zmq python3-msgpack)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "setup_krita: all present (${packages[*]})"
else
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    echo "setup_krita: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Krita's Python is the system one; the plugin needs pyzmq and msgpack importable there.
/usr/bin/python3 -c "import zmq, msgpack, PyQt5.QtWidgets"
command -v kritarunner >/dev/null
echo "setup_krita: krita $(dpkg-query -W -f='${Version}' krita), pyzmq $(/usr/bin/python3 -c 'import zmq; print(zmq.__version__)')"
