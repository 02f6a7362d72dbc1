"""``touchup models list|download NAME|verify NAME``: the weights of the diffusion presets."""

from __future__ import annotations

import argparse
import json
import sys


def _models_dir(args: argparse.Namespace) -> str | None:
    """``--models-dir`` or the config's ``models_dir``, so the CLI looks where the backend looks."""
    if args.models_dir:
        return args.models_dir
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
    from ...engines.presets import PRESETS

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

    p.set_defaults(func=lambda args: p.print_help() or 2)
