"""``touchup serve``: run the resident backend in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the resident backend (loopback only by default)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--endpoint", help="ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:57361 or ipc:///tmp/touchup"
    )
    where.add_argument(
        "--listen",
        dest="endpoint",
        metavar="tcp://ADDR:PORT",
        help="serve other machines, e.g. tcp://0.0.0.0:57361 (needs --curve and keys: see `touchup keys`)",
    )
    p.add_argument(
        "--curve",
        action="store_true",
        default=None,
        help="CurveZMQ: encrypt, and accept only clients whose key is in the keys folder (also on loopback)",
    )
    p.add_argument(
        "--keys-dir", help="folder of the server key and allowed client keys (default: config dir's keys)"
    )
    p.add_argument("--engine", help="default engine for requests that name none (default: classic)")
    p.add_argument("--config", help="TOML config file (default: the user config dir's config.toml)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--log-file", help="rotating log file (default: the user log dir's backend.log)")
    p.add_argument("--max-pixels", type=int, help="largest tile accepted, in pixels")
    p.add_argument("--max-side", type=int, help="longest image side accepted, in pixels")
    p.add_argument("--max-references", type=int, help="most reference images per job")
    p.add_argument("--max-queue", type=int, help="most jobs waiting at once")
    p.add_argument("--max-queue-per-client", type=int, help="most jobs one client may have waiting")
    p.add_argument(
        "--idle-unload", type=float, dest="idle_unload_s", help="unload a model after this many idle seconds"
    )
    p.add_argument("--models-dir", help="folder searched for model weights before the Hugging Face cache")
    p.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="ENGINE.KEY=VALUE",
        help="an engine option, as in the config's [engines.ENGINE] table (repeatable), e.g. qwen-edit.memory_policy=model_offload",
    )
    p.add_argument(
        "--extra-engine",
        action="append",
        default=[],
        metavar="NAME=MODULE:CLASS",
        help="offer an engine outside the product's table, as in the config's [extra_engines] (benchmarks, tests)",
    )
    pool = p.add_argument_group("scale-out (needs the 'cluster' extra: pip install 'touchup[cluster]')")
    pool.add_argument(
        "--cluster",
        metavar="local|ADDRESS",
        help="run jobs on a Ray Serve pool: 'local' starts Ray on this machine, ADDRESS joins a running "
        "Ray cluster (e.g. 10.0.0.5:6379); see docs/cluster.md",
    )
    size = pool.add_mutually_exclusive_group()
    size.add_argument("--replicas", type=int, help="engine replicas in the pool (default 1; one GPU each)")
    size.add_argument(
        "--autoscale", metavar="MIN:MAX", help="let the pool grow and shrink between MIN and MAX"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...cluster.executor import ClusterError, parse_autoscale
    from ...config import load_config
    from ...engines import register_engine
    from ...logs import setup_logging
    from ...server import AlreadyRunning, InsecureEndpoint, Server

    try:
        config = load_config(
            args.config,
            {
                "endpoint": args.endpoint,
                "engine": args.engine,
                "log_level": args.log_level,
                "log_file": args.log_file,
                "max_pixels": args.max_pixels,
                "max_side": args.max_side,
                "max_references": args.max_references,
                "max_queue": args.max_queue,
                "max_queue_per_client": args.max_queue_per_client,
                "curve": args.curve,
                "keys_dir": args.keys_dir,
                "idle_unload_s": args.idle_unload_s,
                "models_dir": args.models_dir,
                "cluster": args.cluster,
                "replicas": args.replicas,
                "autoscale": args.autoscale,
            },
        )
        if (config.autoscale or args.replicas) and not config.cluster:
            raise ValueError("--replicas and --autoscale need --cluster local|ADDRESS")
        if config.autoscale:
            parse_autoscale(config.autoscale)
        if config.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {config.replicas}")
        for option in args.engine_option:
            engine, key, value = parse_engine_option(option)
            config.engines.setdefault(engine, {})[key] = value
        for option in args.extra_engine:
            name, sep, path = option.partition("=")
            if not sep or ":" not in path:
                raise ValueError(f"--extra-engine wants NAME=MODULE:CLASS, got {option!r}")
            config.extra_engines[name] = path
        for name, path in config.extra_engines.items():
            register_engine(name, path)
    except (OSError, ValueError, ImportError, AttributeError, TypeError) as exc:
        print(f"touchup serve: {exc}", file=sys.stderr)
        return 2
    from ...server.auth import is_loopback
    from ...server.endpoint import insecure_message

    if not config.curve and not is_loopback(config.endpoint):
        print(f"touchup serve: {insecure_message(config.endpoint)}", file=sys.stderr)
        return 2
    log_file = setup_logging(config.log_level, config.log_path())
    if log_file:
        logging.getLogger("touchup").info("logging to %s", log_file)
    try:
        Server(config).run()
    except (AlreadyRunning, ClusterError, ValueError) as exc:
        print(f"touchup serve: {exc}", file=sys.stderr)
        return 1
    except InsecureEndpoint as exc:
        print(f"touchup serve: {exc}", file=sys.stderr)
        return 2
    return 0


def parse_engine_option(text: str) -> tuple[str, str, object]:
    """``ENGINE.KEY=VALUE`` with VALUE read as a TOML value (``8``, ``true``, ``"x"``), else text."""
    from ...config import tomllib

    name, sep, raw = text.partition("=")
    engine, dot, key = name.strip().partition(".")
    if not sep or not dot or not engine or not key:
        raise ValueError(f"--engine-option wants ENGINE.KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return engine, key.strip(), value
