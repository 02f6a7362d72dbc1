"""``touchup tray``: run the backend under a tray icon that shows its state (see ``backend/app/tray.py``)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tray",
        help="run the backend as a tray daemon (restarts it when it dies; icon shows idle/busy/error)",
        description=(
            "Starts `touchup serve` as a child, restarts it with backoff when it dies and shows its "
            "state in the system tray. Without a system tray it runs as a plain daemon. "
            "`touchup install --autostart` starts this at login."
        ),
    )
    p.add_argument("--endpoint", help="backend endpoint (default: the backend config's)")
    p.add_argument("--config", help="backend TOML config file, passed on to `touchup serve`")
    p.add_argument("--engine", help="default engine, passed on to `touchup serve`")
    p.add_argument("--log-file", help="tray log file (default: the user log dir's tray.log)")
    p.add_argument("--no-icon", action="store_true", help="run as a plain daemon even where a tray exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    from pathlib import Path

    from ...config import config_dir, load_config, log_dir
    from ..launch import backend_command
    from ..tray import Tray

    try:
        config = load_config(args.config, {"endpoint": args.endpoint})
    except (OSError, ValueError) as exc:
        print(f"touchup tray: {exc}", file=sys.stderr)
        return 2
    log_path = Path(args.log_file) if args.log_file else log_dir() / "tray.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(log_path, encoding="utf-8"), logging.StreamHandler()],
    )
    command = backend_command(config.endpoint, args.engine)
    if args.config:
        command += ["--config", args.config]
    if args.no_icon:
        os.environ["TOUCHUP_TRAY"] = "none"
    # "Open log" shows the backend's own log; the child's stray output goes beside the tray log.
    tray = Tray(
        command, config.endpoint, config.log_path(), config_dir(), log_path.with_name("backend-output.log")
    )
    return tray.run()
