#!/usr/bin/env bash
# Build (or restore) a Debian chroot holding one editor release for the plugin tests.
#
#   setup_chroot.sh NAME SUITE DIR PACKAGE...
#
# NAME names the tarball (e.g. krita-6.0); SUITE is a Debian suite (trixie, sid) or
# "experimental", which is sid with experimental's packages preferred for PACKAGEs; DIR is where
# the chroot lives. Idempotent: a complete chroot (its marker matches the package list) is
# reused; otherwise the zstd tarball from the user cache is unpacked (seconds); otherwise the
# chroot is bootstrapped from a cached minbase of the suite (itself bootstrapped once) and the
# tarball is written for next time. The chroot shares the host's network namespace, so an
# editor inside reaches a backend on the host's loopback. Needs root (debootstrap and chroot).
#
# Environment:
#   TOUCHUP_CHROOT_CACHE  folder for the tarballs (default: <user cache>/touchup/chroots)
#   TOUCHUP_DEBIAN_MIRROR Debian mirror          (default: http://deb.debian.org/debian)
#
# The last line printed on stdout is the chroot's path.
set -euo pipefail

if (($# < 4)); then
    echo "usage: setup_chroot.sh NAME SUITE DIR PACKAGE..." >&2
    exit 2
fi
name=$1 suite=$2 chroot_dir=$3
shift 3
packages=("$@")
cache_dir="${TOUCHUP_CHROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/touchup/chroots}"
mirror="${TOUCHUP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
base_suite=$suite
[[ $suite == experimental ]] && base_suite=sid
# The suite and package list are the cache key, so changing either never reuses a stale tarball.
key="$(printf '%s\n' "$suite" "${packages[@]}" | sha256sum | cut -c1-12)"
tarball="$cache_dir/$name-$key.tar.zst"
base="$cache_dir/debian-$base_suite-minbase.tar.zst"
marker=".touchup-chroot"

log() { echo "setup_chroot[$name]: $*" >&2; }

if [[ $EUID -ne 0 ]]; then
    log "must run as root (debootstrap and chroot need it)"
    exit 1
fi

complete() { [[ "$(cat "$chroot_dir/$marker" 2>/dev/null)" == "$key" ]]; }

write_cache() { # DIR TARBALL
    log "writing cache $2"
    mkdir -p "$cache_dir"
    tar -I 'zstd -T0 -3' -cf "$2.partial" -C "$1" .
    mv "$2.partial" "$2"
}

if complete; then
    log "chroot already complete"
    [[ -f "$tarball" ]] || write_cache "$chroot_dir" "$tarball"
    echo "$chroot_dir"
    exit 0
fi

need=()
command -v zstd >/dev/null || need+=(zstd)
command -v debootstrap >/dev/null || [[ -f "$tarball" || -f "$base" ]] || need+=(debootstrap)
# Ubuntu hosts lack Debian's archive key, which debootstrap needs to verify the suite.
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg || -f "$tarball" || -f "$base" ]] ||
    need+=(debian-archive-keyring)
if ((${#need[@]})); then
    log "installing ${need[*]}"
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
    if [[ -f "$base" ]]; then
        log "unpacking the $base_suite minbase"
        tar -I 'zstd -T0' -xf "$base" -C "$chroot_dir"
    else
        log "bootstrapping Debian $base_suite into $chroot_dir"
        debootstrap --variant=minbase "$base_suite" "$chroot_dir" "$mirror" >&2
        chroot "$chroot_dir" apt-get clean
        write_cache "$chroot_dir" "$base"
    fi
    cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf" 2>/dev/null || true
    target=()
    if [[ $suite == experimental ]]; then
        echo "deb $mirror experimental main" >"$chroot_dir/etc/apt/sources.list.d/experimental.list"
        target=(-t experimental)
    fi
    log "installing ${packages[*]}"
    # A mirror snapshot (or a machine whose clock runs ahead) serves Release files past their
    # Valid-Until date; these chroots only run tests, so that is not a reason to fail.
    chroot "$chroot_dir" apt-get -o Acquire::Check-Valid-Until=false update -qq >&2
    chroot "$chroot_dir" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${target[@]}" "${packages[@]}" >&2
    chroot "$chroot_dir" apt-get clean
    rm -rf "$chroot_dir"/var/lib/apt/lists/*
    echo "$key" >"$chroot_dir/$marker"
    log "built in $((SECONDS - start)) s"
    write_cache "$chroot_dir" "$tarball"
    # Older tarballs of this chroot (other package lists) are dead weight.
    find "$cache_dir" -maxdepth 1 -name "$name-*.tar.zst" ! -name "$(basename "$tarball")" -delete
fi

complete || {
    log "the chroot at $chroot_dir is incomplete"
    exit 1
}
echo "$chroot_dir"
