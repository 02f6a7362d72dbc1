#!/usr/bin/env bash
# System packages the tray tests (and the tray on a bare X session) need: a virtual X server,
# a small XEmbed system tray to dock into, and xdotool/xprop to find and click the icon.
# pystray's pure-X backend talks to the X server through python-xlib (a pip package), and its
# menu fallback uses Tk, which Python already ships.
set -euo pipefail
if [[ $EUID -ne 0 ]]; then
    echo "setup_tray: must run as root (apt-get)" >&2
    exit 1
fi
missing=()
for tool in Xvfb:xvfb xauth:xauth trayer:trayer xdotool:xdotool xprop:x11-utils; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}"
fi
echo "setup_tray: Xvfb, trayer, xdotool ready"
