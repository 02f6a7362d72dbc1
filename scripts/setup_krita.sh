#!/usr/bin/env bash
# Everything the Krita tests need on Debian/Ubuntu: the system's Krita (5.1 on Debian 12) with
# its Python plugin support, Xvfb for the GUI tests, pyzmq/msgpack for Krita's system Python --
# and, as root, Debian chroots with the newer releases the plugin is tested in:
#
#   krita-5.2  Debian trixie        (PyQt5, Python 3.13)
#   krita-5.3  Debian sid           (PyQt5, Python 3.13)
#   krita-6.0  Debian experimental  (Qt 6, PyQt6, Python 3.14)
#
# Each chroot is cached as a zstd tarball in the user cache (scripts/setup_chroot.sh), so a
# second run, or a fresh clone on the same machine, restores it in seconds. Safe to run
# repeatedly. TOUCHUP_KRITA_CHROOTS=0 skips the chroots.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# python3-pyqt5 and python3-sip are only Recommends of krita, but its Python plugins need them.
packages=(krita python3-pyqt5 python3-sip xvfb xauth python3-zmq python3-msgpack)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
if ((${#missing[@]} == 0)); then
    echo "setup_krita: all present (${packages[*]})"
else
    echo "setup_krita: installing ${missing[*]}"
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}"
fi

# Krita's Python is the system one; the plugin needs pyzmq and msgpack importable there.
/usr/bin/python3 -c "import zmq, msgpack, PyQt5.QtWidgets"
command -v kritarunner >/dev/null
echo "setup_krita: krita $(dpkg-query -W -f='${Version}' krita), pyzmq $(/usr/bin/python3 -c 'import zmq; print(zmq.__version__)')"

[[ ${TOUCHUP_KRITA_CHROOTS:-1} == 0 ]] && exit 0
chroots="$repo/.cache/chroots"
common=(krita xvfb xauth python3-zmq python3-msgpack)
pyqt5=(python3-pyqt5 python3-pyqt5.sip)
pyqt6=(python3-pyqt6 python3-pyqt6.sip)
"${sudo[@]}" bash "$repo/scripts/setup_chroot.sh" krita-5.2 trixie "$chroots/krita-5.2" "${common[@]}" "${pyqt5[@]}" >/dev/null
"${sudo[@]}" bash "$repo/scripts/setup_chroot.sh" krita-5.3 sid "$chroots/krita-5.3" "${common[@]}" "${pyqt5[@]}" >/dev/null
"${sudo[@]}" bash "$repo/scripts/setup_chroot.sh" krita-6.0 experimental "$chroots/krita-6.0" "${common[@]}" "${pyqt6[@]}" >/dev/null
for name in krita-5.2 krita-5.3 krita-6.0; do
    echo "setup_krita: $name chroot: krita $(chroot "$chroots/$name" dpkg-query -W -f='${Version}' krita)"
done
