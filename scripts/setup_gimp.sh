#!/usr/bin/env bash
# Build (or restore) Debian chroots with GIMP 3 and the Python modules the Touchup plug-in
# needs, for the GIMP integration tests and for trying the plug-in on a system whose own GIMP is
# older than 3.0: GIMP 3.0 from Debian trixie, and GIMP 3.2 from Debian sid (built by
# scripts/setup_chroot.sh into <repo>/.cache/chroots/gimp-3.2; TOUCHUP_GIMP_32=0 skips it).
#
# Idempotent: an existing, complete chroot is reused; otherwise a zstd tarball cache is unpacked;
# otherwise the chroot is bootstrapped (about a minute) and the cache is written for next time.
# The chroot shares the host's network namespace, so a backend on the host's loopback is
# reachable from GIMP inside it. Needs root (debootstrap and chroot).
#
# Environment:
#   TOUCHUP_GIMP_CHROOT   where the chroot lives     (default: <repo>/.cache/gimp/trixie)
#   TOUCHUP_GIMP_CACHE    folder for the tarball     (default: the user cache dir, so fresh
#                         clones on the same machine restore the chroot in seconds)
#   TOUCHUP_DEBIAN_MIRROR Debian mirror              (default: http://deb.debian.org/debian)
#
# The last line printed on stdout is the GIMP 3.0 chroot's path.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chroot_dir="${TOUCHUP_GIMP_CHROOT:-$repo/.cache/gimp/trixie}"
cache_dir="${TOUCHUP_GIMP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/touchup/gimp}"
mirror="${TOUCHUP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# xdotool: the GUI test presses OK and Ctrl+Z the way a user does.
packages=(gimp python3-gi gir1.2-gimp-3.0 python3-zmq python3-msgpack xvfb xauth xdotool)
# The package list is part of the cache key, so changing it never reuses a stale tarball.
key="$(printf '%s\n' trixie "${packages[@]}" | sha256sum | cut -c1-12)"
tarball="$cache_dir/trixie-gimp-$key.tar.zst"

log() { echo "setup_gimp: $*" >&2; }

complete() {
    [[ -x "$1/usr/bin/gimp-console-3.0" && -x "$1/usr/bin/xvfb-run" && -x "$1/usr/bin/xdotool" ]] &&
        chroot "$1" python3 -c 'import zmq, msgpack, gi; gi.require_version("Gimp", "3.0")' 2>/dev/null
}

if [[ $EUID -ne 0 ]]; then
    log "must run as root (debootstrap and chroot need it)"
    exit 1
fi

write_cache() {
    log "writing cache $tarball"
    mkdir -p "$cache_dir"
    tar -I 'zstd -T0 -3' -cf "$tarball.partial" -C "$chroot_dir" .
    mv "$tarball.partial" "$tarball"
    # Older caches for other package lists are dead weight.
    find "$cache_dir" -maxdepth 1 -name 'trixie-gimp-*.tar.zst' ! -name "$(basename "$tarball")" -delete
}

gimp_32() {
    [[ ${TOUCHUP_GIMP_32:-1} == 0 ]] && return 0
    bash "$repo/scripts/setup_chroot.sh" gimp-3.2 sid "$repo/.cache/chroots/gimp-3.2" "${packages[@]}" >/dev/null
}

if complete "$chroot_dir"; then
    log "chroot already complete"
    [[ -f "$tarball" ]] || { command -v zstd >/dev/null && write_cache; }
    gimp_32
    echo "$chroot_dir"
    exit 0
fi

need=()
command -v zstd >/dev/null || need+=(zstd)
command -v debootstrap >/dev/null || [[ -f "$tarball" ]] || need+=(debootstrap)
# Ubuntu hosts lack Debian's archive key, which debootstrap needs to verify trixie.
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg || -f "$tarball" ]] || need+=(debian-archive-keyring)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    # Wait for the dpkg lock rather than failing when another apt run holds it.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${need[@]}" >&2
fi

rm -rf "$chroot_dir"
mkdir -p "$chroot_dir" "$cache_dir"

if [[ -f "$tarball" ]]; then
    log "restoring $tarball"
    tar -I 'zstd -T0' -xf "$tarball" -C "$chroot_dir"
else
    start=$SECONDS
    log "bootstrapping Debian trixie into $chroot_dir"
    debootstrap --variant=minbase trixie "$chroot_dir" "$mirror" >&2
    cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf" 2>/dev/null || true
    log "installing ${packages[*]}"
    chroot "$chroot_dir" apt-get update -qq >&2
    chroot "$chroot_dir" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
    chroot "$chroot_dir" apt-get clean
    rm -rf "$chroot_dir"/var/lib/apt/lists/*
    log "built in $((SECONDS - start)) s"
    write_cache
fi

if ! complete "$chroot_dir"; then
    log "the chroot at $chroot_dir is incomplete (GIMP 3 or its Python modules are missing)"
    exit 1
fi
gimp_32
echo "$chroot_dir"
