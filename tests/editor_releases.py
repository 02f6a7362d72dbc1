"""The editor releases the plugin tests run in, and how to start a program inside each.

Krita 5.1 is the host's own (Debian 12). Every newer release lives in a Debian chroot that
``scripts/setup_krita.sh`` / ``scripts/setup_gimp.sh`` build and cache: Krita 5.2 (trixie),
5.3 (sid), 6.0 (experimental; Qt 6, PyQt6, Python 3.14), GIMP 3.0 (trixie) and 3.2 (sid).

A chrooted editor is started in a private mount namespace (``unshare --mount``) where the test's
folders and this checkout are bind-mounted at the same paths as on the host, so configs, result
files and ``PYTHONPATH`` entries mean the same inside and out, and the host's root is at
``/run/host`` so a command the plugin starts (the docker's Start backend button) can step back
out with ``chroot /run/host``. The mounts vanish with the namespace: nothing to clean up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROOTS = REPO / ".cache" / "chroots"
#: Where the host's root appears inside a chroot started by :meth:`EditorRelease.command`.
HOST_ROOT = "/run/host"

# Runs as: sh -c SCRIPT sh ROOT BIND... -- ARGV...
_ENTER = r"""
set -e
root=$1; shift
mkdir -p "$root/run/host"
mount --rbind / "$root/run/host"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
while [ "$1" != "--" ]; do
    mkdir -p "$root$1"
    mount --bind "$1" "$root$1"
    shift
done
shift
exec chroot "$root" "$@"
"""


def chroot_command(root: Path, argv: list[str], binds: list[Path] = ()) -> list[str]:
    """``argv`` run inside the chroot at ``root``, in a private mount namespace where this
    checkout and ``binds`` appear at their host paths and the host's root at ``/run/host``."""
    mounts = [str(Path(b).resolve()) for b in (REPO, *binds)]
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        _ENTER,
        "sh",
        str(root),
        *mounts,
        "--",
        *argv,
    ]


@dataclass(frozen=True)
class EditorRelease:
    """One editor release under test. ``chroot`` is None for the host's own install."""

    editor: str  # "krita" | "gimp"
    version: str  # major.minor, as in test ids
    chroot: Path | None
    #: Debian package version the chroot was built with (for docs and messages only).
    debian: str = ""

    @property
    def id(self) -> str:
        return f"{self.editor}-{self.version}"

    def path(self, inner: str | Path) -> Path:
        """Host path of an absolute path inside the editor's root."""
        if self.chroot is None:
            return Path(inner)
        return self.chroot / Path(inner).relative_to("/")

    def missing_reason(self) -> str | None:
        """Why this release cannot run here, or None."""
        script = "setup_krita.sh" if self.editor == "krita" else "setup_gimp.sh"
        if self.chroot is None:
            if shutil.which(self.editor) is None:
                return f"{self.id} is not installed (scripts/{script} installs it)"
            return None
        if os.geteuid() != 0:
            return f"{self.id} runs in a chroot, which needs root"
        if not (self.chroot / ".touchup-chroot").exists() and not (self.chroot / "usr" / "bin").is_dir():
            return f"no {self.id} chroot at {self.chroot} (scripts/{script} builds it)"
        return None

    def command(self, argv: list[str], binds: list[Path] = ()) -> list[str]:
        """``argv`` as run in this release; ``binds`` are host folders it must see (same paths)."""
        if self.chroot is None:
            return list(argv)
        return chroot_command(self.chroot, argv, binds)

    def python(self, code: str, binds: list[Path] = ()) -> subprocess.CompletedProcess:
        """Run ``code`` in the release's system Python (the one the editor embeds)."""
        return subprocess.run(
            self.command(["/usr/bin/python3", "-c", code], binds),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def host_command(self, argv: list[str]) -> list[str]:
        """A command that, started by the editor, runs ``argv`` on the host (for the backend)."""
        return list(argv) if self.chroot is None else ["chroot", HOST_ROOT, *argv]


def _chroot(name: str) -> Path:
    return Path(
        os.environ.get(f"TOUCHUP_CHROOT_{name.upper().replace('-', '_').replace('.', '_')}", CHROOTS / name)
    )


KRITA = [
    EditorRelease("krita", "5.1", None, "1:5.1.5+dfsg-2+deb12u1"),
    EditorRelease("krita", "5.2", _chroot("krita-5.2"), "trixie"),
    EditorRelease("krita", "5.3", _chroot("krita-5.3"), "sid"),
    EditorRelease("krita", "6.0", _chroot("krita-6.0"), "experimental"),
]
GIMP = [
    EditorRelease(
        "gimp",
        "3.0",
        Path(os.environ.get("TOUCHUP_GIMP_CHROOT") or REPO / ".cache" / "gimp" / "trixie"),
        "trixie",
    ),
    EditorRelease("gimp", "3.2", _chroot("gimp-3.2"), "sid"),
]
#: The oldest and newest of each editor run every check; the ones between run a smoke subset.
FULL = {KRITA[0].id, KRITA[-1].id, GIMP[0].id, GIMP[-1].id}


def ids(releases: list[EditorRelease]) -> list[str]:
    return [r.id for r in releases]
