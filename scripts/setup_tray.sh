#!/usr/bin/env bash
# What the tray tests (and the tray on a bare X session) need, for both of pystray's Linux
# backends:
#
# * plain X: a virtual X server, a small XEmbed system tray to dock into (trayer), and
#   xdotool/xprop to find and click the icon. pystray talks to X through python-xlib (a pip
#   package) and its menu fallback uses Tk, which Python already ships.
# * AppIndicator (what GNOME and KDE panels show, through StatusNotifierItem over D-Bus): the
#   Ayatana AppIndicator and GTK typelibs, PyGObject in the project's .venv (built from source,
#   hence the -dev packages), a D-Bus daemon for a private session bus, and a StatusNotifier host
#   -- Debian's snixembed, which Debian 12 lacks, so it comes from a cached Debian sid chroot
#   (scripts/setup_chroot.sh) in <repo>/.cache/chroots/snixembed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $EUID -ne 0 ]]; then
    echo "setup_tray: must run as root (apt-get, chroot)" >&2
    exit 1
fi
packages=(xvfb xauth trayer xdotool x11-utils dbus dbus-bin gir1.2-ayatanaappindicator3-0.1 gir1.2-gtk-3.0
    libgirepository1.0-dev libcairo2-dev pkg-config gcc python3-dev)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup_tray: installing ${missing[*]}" >&2
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
fi
if [[ -x "$repo/.venv/bin/python" ]] && ! "$repo/.venv/bin/python" -c "import gi" 2>/dev/null; then
    # PyGObject 3.51+ needs GLib 2.80's girepository-2.0; Debian 12 has 2.74.
    echo "setup_tray: building PyGObject into .venv" >&2
    "$repo/.venv/bin/python" -m pip install --disable-pip-version-check --quiet "PyGObject<3.51" >&2
fi
bash "$repo/scripts/setup_chroot.sh" snixembed sid "$repo/.cache/chroots/snixembed" snixembed >/dev/null
echo "setup_tray: Xvfb, trayer, xdotool, D-Bus, AppIndicator, PyGObject and snixembed ready"
