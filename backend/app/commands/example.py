"""``touchup example make`` and ``touchup example sheet``: the bundled example and its
before/after/difference sheet, so anyone can see what refining does in two commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("example", help="write the bundled example, or a before/after sheet")
    cmds = p.add_subparsers(dest="example_command", metavar="ACTION", required=True)

    make = cmds.add_parser(
        "make", help="write input.png, mask.png, reference.png, clean.png, unrelated_reference.png"
    )
    make.add_argument("--out", required=True, type=Path, help="folder to write into (created)")
    make.set_defaults(func=run_make)

    sheet = cmds.add_parser("sheet", help="write a before / after / difference sheet PNG")
    sheet.add_argument("--input", required=True, type=Path, help="the image before refining")
    sheet.add_argument("--output", required=True, type=Path, help="the refined image")
    sheet.add_argument("--clean", type=Path, help="ground truth: adds a column and the region's PSNR")
    sheet.add_argument("--mask", type=Path, help="the selection: adds a zoomed row around it")
    sheet.add_argument("--gain", type=float, default=4.0, help="amplification of the difference")
    sheet.add_argument("--out", required=True, type=Path, help="the sheet PNG to write")
    sheet.set_defaults(func=run_sheet)


def run_make(args: argparse.Namespace) -> int:
    from ...tools.example import write_example

    try:
        paths = write_example(args.out)
    except OSError as exc:
        print(f"touchup: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def run_sheet(args: argparse.Namespace) -> int:
    from ...tools.example import make_sheet, read_image, region_psnr, write_image

    try:
        before, after = read_image(args.input), read_image(args.output)
        clean = read_image(args.clean) if args.clean else None
        mask = read_image(args.mask) if args.mask else None
        if mask is not None and mask.shape[:2] != before.shape[:2]:
            raise ValueError(
                f"the mask is {mask.shape[1]}x{mask.shape[0]}, the input {before.shape[1]}x{before.shape[0]}"
            )
        if clean is not None and clean.shape[:2] != before.shape[:2]:
            raise ValueError(
                f"clean is {clean.shape[1]}x{clean.shape[0]}, the input {before.shape[1]}x{before.shape[0]}"
            )
        sheet = make_sheet(before, after, clean, mask, gain=args.gain)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_image(args.out, sheet)
    except (OSError, ValueError) as exc:
        print(f"touchup: {exc}", file=sys.stderr)
        return 1
    if clean is not None and mask is not None:
        gain = region_psnr(after, clean, mask) - region_psnr(before, clean, mask)
        print(
            f"region PSNR vs clean: before {region_psnr(before, clean, mask):.2f} dB, "
            f"after {region_psnr(after, clean, mask):.2f} dB ({gain:+.2f} dB)"
        )
    print(args.out)
    return 0
