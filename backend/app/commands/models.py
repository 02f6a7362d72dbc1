"""``touchup models list|download NAME|verify NAME|plan``: the diffusion presets, their weights and memory plans."""

from __future__ import annotations

import argparse
import json
import sys


def _models_dir(args: argparse.Namespace) -> str | None:
    """``--models-dir`` or the config's ``models_dir``, so the CLI looks where the backend looks."""
    if args.models_dir:
        return str(args.models_dir)
    from ...config import load_config

    try:
        return load_config(args.config).models_dir
    except (OSError, ValueError) as exc:
        print(f"touchup models: {exc}", file=sys.stderr)
        return None


def _list(args: argparse.Namespace) -> int:
    from ... import models

    rows = models.list_presets(_models_dir(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["preset"]) for r in rows)
    for row in rows:
        state = "present" if row["present"] else "missing"
        size = models.human_size(row["bytes"]) if row["bytes"] else "-"
        print(f"{row['preset']:<{width}}  {state:<7}  {size:>10}  engine {row['engine']}")
        for repo in row["repos"]:
            mark = "+" if repo["present"] else "-"
            what = f" ({', '.join(repo['files'])})" if repo["files"] else ""
            print(f"{'':<{width}}    {mark} {repo['repo']}{what}")
            if repo["gated"] and not repo["present"]:
                print(f"{'':<{width}}      gated: {repo['licence']}")
    missing = [r["preset"] for r in rows if not r["present"]]
    if missing:
        print(f"\nDownload with: touchup models download {missing[0]}")
    return 0


def _unknown_preset(name: str) -> bool:
    """True (after saying so on stderr) when ``name`` is not a preset of the table."""
    from ...engines.diffusion.presets import PRESETS

    if name in PRESETS:
        return False
    print(f"touchup models: unknown preset {name!r}; known: {', '.join(PRESETS)}", file=sys.stderr)
    return True


def _download(args: argparse.Namespace) -> int:
    from ... import models

    if _unknown_preset(args.name):
        return 2
    try:
        folders = models.download(args.name, _models_dir(args), token=args.token)
    except models.DownloadError as exc:
        print(f"touchup models: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # network trouble: the download resumes when run again
        print(
            f"touchup models: download failed ({type(exc).__name__}: {exc}); run the same command again to resume",
            file=sys.stderr,
        )
        return 1
    for folder in folders:
        print(f"ok  {folder}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ... import models

    if _unknown_preset(args.name):
        return 2
    problems = models.verify(args.name, _models_dir(args), quick=args.quick)
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        return 1
    print(f"{args.name}: all files present and intact")
    return 0


#: The hardware cells of the docs table (GB of free VRAM x GB of available host RAM).
TABLE_VRAM = (8, 12, 16, 24, 48, 80)
TABLE_RAM = (16, 32, 64)


def _plan(args: argparse.Namespace) -> int:
    """The memory plan per preset for this machine, a hypothetical one, or every table cell."""
    from ...engines.diffusion import memory
    from ...engines.diffusion.presets import PRESETS

    if args.preset and _unknown_preset(args.preset):
        return 2
    names = [args.preset] if args.preset else list(PRESETS)
    if args.table:
        cells: list[tuple[float | None, float | None]] = [
            (float(v), float(r)) for v in TABLE_VRAM for r in TABLE_RAM
        ]
        machine = "table"
        quantisation = True
    else:
        vram, ram, gpu_name = memory.this_machine()
        machine = f"this machine ({gpu_name})"
        if args.vram is not None or args.ram is not None:
            machine = "hypothetical"
            vram = args.vram if args.vram is not None else vram
            ram = args.ram if args.ram is not None else ram
            quantisation = True  # the diffusion extra brings bitsandbytes where it has wheels
        else:
            quantisation = memory.quantisation_available()
        cells = [(vram, ram)]
    plans = [
        memory.plan(PRESETS[name], vram, ram, quantisation=quantisation)
        for name in names
        for vram, ram in cells
    ]
    if args.json:
        print(json.dumps({"machine": machine, "plans": [p.to_dict() for p in plans]}, indent=2))
        return 0
    if args.table and args.markdown:
        print(markdown_table(plans))
        return 0
    if not args.table:
        vram, ram = cells[0]
        gpu = f"{vram:.1f} GB VRAM free" if vram is not None else "no CUDA GPU"
        print(f"{machine}: {gpu}" + (f", {ram:.1f} GB RAM available" if ram is not None else ""))
    width = max(len(n) for n in names)
    for p in plans:
        where = f"{p.vram_gb:>4.0f} GB VRAM {p.ram_gb:>3.0f} GB RAM  " if args.table else ""
        if p.policy is not None and p.cost is not None:
            c = p.cost
            print(
                f"{p.preset:<{width}}  {where}{p.policy.value:<18} peak {c.vram_gb:5.1f} GB VRAM, "
                f"{c.ram_gb:5.1f} GB RAM, speed x{c.speed:.2f}  ({p.reason})"
            )
        else:
            print(f"{p.preset:<{width}}  {where}{p.reason}")
    return 0


def markdown_table(plans: list) -> str:
    """One row per preset and VRAM size, one column per RAM size: the policy with its peak VRAM
    and RAM, or what a machine would need."""
    rows: dict[tuple[str, float], dict[float, str]] = {}
    for p in plans:
        if p.fits and p.cost is not None:
            cell = f"`{p.policy.value}` ({p.cost.vram_gb:.0f} / {p.cost.ram_gb:.0f} GB)"
        else:
            cell = p.reason
        rows.setdefault((p.preset, p.vram_gb), {})[p.ram_gb] = cell
    lines = [
        "| preset | VRAM | " + " | ".join(f"{r} GB RAM" for r in TABLE_RAM) + " |",
        "|---|---|" + "---|" * len(TABLE_RAM),
    ]
    for (preset, vram), cells in rows.items():
        lines.append(f"| `{preset}` | {vram:g} GB | " + " | ".join(cells[float(r)] for r in TABLE_RAM) + " |")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, download and verify diffusion model weights")
    p.add_argument(
        "--models-dir", help="folder searched before the Hugging Face cache (default: config's models_dir)"
    )
    p.add_argument("--config", help="config file (default: the user config)")
    cmds = p.add_subparsers(dest="models_command", metavar="ACTION")

    ls = cmds.add_parser("list", help="every preset: present or missing, size on disk, licence notes")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)

    dl = cmds.add_parser("download", help="download a preset's weights (resumable)")
    dl.add_argument("name", help="preset name, e.g. refine-anything")
    dl.add_argument(
        "--token", help="Hugging Face token for gated models (default: HF_TOKEN / `hf auth login`)"
    )
    dl.set_defaults(func=_download)

    ve = cmds.add_parser("verify", help="check a preset's files (presence, configs, checksums)")
    ve.add_argument("name", help="preset name")
    ve.add_argument("--quick", action="store_true", help="skip the checksums of large files")
    ve.set_defaults(func=_verify)

    pl = cmds.add_parser(
        "plan", help="which memory policy each preset uses here (or on a machine you describe)"
    )
    pl.add_argument("--preset", help="one preset (default: all)")
    pl.add_argument("--vram", type=float, help="free GPU memory in GB of a hypothetical machine")
    pl.add_argument("--ram", type=float, help="available host RAM in GB of a hypothetical machine")
    pl.add_argument("--table", action="store_true", help="every cell of the docs table (8-80 GB x 16-64 GB)")
    pl.add_argument("--markdown", action="store_true", help="with --table: the docs table in Markdown")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=_plan)

    p.set_defaults(func=lambda args: p.print_help() or 2)
