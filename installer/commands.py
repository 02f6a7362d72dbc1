"""``touchup install``, ``touchup uninstall`` and ``touchup doctor``.

These commands live with the installer, not in ``backend/app/commands/``: the installer imports
the backend (its config, launch command and engines), so the backend must never import the
installer. The CLI finds this module by name in its command table instead.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "install",
        help="install the Krita and GIMP 3 plugins (every editor found when none is named)",
        description=(
            "Copy the plugins into the editors' user plugin folders with what their Python lacks, "
            "point them at this environment's backend, and record everything written so that "
            "`touchup uninstall` can remove it. Safe to run again: it upgrades in place."
        ),
    )
    p.add_argument("--krita", action="store_true", help="install into Krita")
    p.add_argument("--gimp", action="store_true", help="install into GIMP 3")
    p.add_argument("--autostart", action="store_true", help="start the tray (`touchup tray`) at login")
    p.add_argument("--dry-run", action="store_true", help="show what would be written, write nothing")
    p.add_argument(
        "--force", action="store_true", help="take over files at the target that Touchup did not write"
    )
    p.add_argument("--krita-dir", metavar="D", help="Krita resource folder (the one holding pykrita/)")
    p.add_argument("--gimp-dir", metavar="D", help="GIMP 3 profile folder (the one holding plug-ins/)")
    p.add_argument("--krita-python", metavar="X.Y|PATH", help="Python version (or interpreter) Krita uses")
    p.add_argument("--gimp-python", metavar="X.Y|PATH", help="Python version (or interpreter) GIMP uses")
    p.add_argument(
        "--vendor",
        choices=("auto", "always", "never"),
        default="auto",
        help="place pyzmq/msgpack wheels in the plugins: when the editor's Python lacks them (auto), always, never",
    )
    p.add_argument(
        "--wheel-cache", metavar="D", help="folder for downloaded wheels (default: the user cache dir)"
    )
    p.add_argument("--endpoint", help="backend endpoint the plugins use (default: the backend config's)")
    p.set_defaults(func=run_install)

    u = sub.add_parser("uninstall", help="remove everything `touchup install` wrote")
    u.add_argument("--dry-run", action="store_true", help="show what would be removed")
    u.add_argument(
        "parts", nargs="*", metavar="PART", help="only these: krita, gimp, autostart (default: everything)"
    )
    u.set_defaults(func=run_uninstall)

    d = sub.add_parser("doctor", help="check the backend, the models and the editor plugins")
    d.add_argument("--endpoint", help="backend endpoint to check (default: the backend config's)")
    d.add_argument("--krita-dir", metavar="D", help="Krita resource folder to check")
    d.add_argument("--gimp-dir", metavar="D", help="GIMP 3 profile folder to check")
    d.set_defaults(func=run_doctor)


def run_install(args: argparse.Namespace) -> int:
    from .install import Options, install

    opts = Options(
        krita=args.krita,
        gimp=args.gimp,
        autostart=args.autostart,
        dry_run=args.dry_run,
        force=args.force,
        krita_dir=args.krita_dir,
        gimp_dir=args.gimp_dir,
        krita_python=args.krita_python,
        gimp_python=args.gimp_python,
        vendor=args.vendor,
        wheel_cache=args.wheel_cache,
        endpoint=args.endpoint,
    )
    return install(opts)


def run_uninstall(args: argparse.Namespace) -> int:
    from .uninstall import uninstall

    return uninstall(only=args.parts or None, dry_run=args.dry_run)


def run_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    return doctor(endpoint=args.endpoint, krita_dir=args.krita_dir, gimp_dir=args.gimp_dir)
