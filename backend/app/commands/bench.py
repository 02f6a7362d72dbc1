"""``touchup bench``: benchmarks that print figures (never timed tests)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: transport, classic, speed, cluster")
    bench = p.add_subparsers(dest="bench", metavar="BENCH")
    from ...tools.bench_transport import register_transport

    register_transport(bench)
    from ...tools.bench_classic import register_classic

    register_classic(bench)
    try:
        from ...tools.bench_speed import register_speed
    except ModuleNotFoundError as exc:  # the diffusion benchmark ships with the diffusion engines
        if not (exc.name or "").endswith("bench_speed"):
            raise
    else:
        register_speed(bench)
    from ...tools.bench_cluster import register_cluster  # imports Ray only when run

    register_cluster(bench)
    p.set_defaults(func=lambda args: p.print_help() or 2)
