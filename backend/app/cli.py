"""The ``touchup`` command: a thin dispatcher over the modules in ``commands/``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ...shared import __version__
from .commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchup",
        description="Region refinement for Krita and GIMP: select a region, refine it, get a new layer.",
    )
    parser.add_argument("--version", action="version", version=f"touchup {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    root = __package__.split(".")[0]  # "touchup"
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{root}.{name}")
        except ModuleNotFoundError as exc:
            # A command whose module is not part of this build is simply absent.
            if exc.name and exc.name.endswith(name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("touchup: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
