"""``touchup ping``, ``touchup status`` and ``touchup stop``: talk to a running backend."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ....shared.protocol import DEFAULT_ENDPOINT, ErrorCode

if TYPE_CHECKING:
    from ....shared.client import BackendError, Client


def register(sub: argparse._SubParsersAction) -> None:
    for name, helptext, func in (
        ("ping", "check that the backend answers, and how fast", ping),
        ("status", "show the backend's queue, engine and device", status),
        ("stop", "ask the backend to shut down (loopback only)", stop),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
        p.add_argument("--connection", metavar="FILE", help="connection file from `touchup keys add`")
        p.add_argument("--timeout", type=float, default=3.0)
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the raw status as JSON")
        p.set_defaults(func=func)


def _client(args: argparse.Namespace) -> Client:
    from ....shared.client import Client

    if args.connection:
        from ....shared.client import BackendError
        from ....shared.connection import ConnectionError_

        try:
            client = Client(name="touchup-cli", connection=args.connection)
        except ConnectionError_ as exc:
            raise BackendError(ErrorCode.BAD_CONNECTION, str(exc)) from None
        args.endpoint = client.endpoint
        return client
    return Client(args.endpoint, name="touchup-cli")


def _fail(exc: BackendError) -> int:

    print(f"touchup: {exc.message} [{exc.code}]", file=sys.stderr)
    return 1


def ping(args: argparse.Namespace) -> int:
    from ....shared.client import BackendError

    try:
        with _client(args) as c:
            rtt = c.ping(timeout=args.timeout)
    except BackendError as exc:
        return _fail(exc)
    print(f"pong from {args.endpoint} in {rtt * 1000:.1f} ms")
    return 0


def status(args: argparse.Namespace) -> int:
    from ....shared.client import BackendError

    try:
        with _client(args) as c:
            st = c.status(timeout=args.timeout)
    except BackendError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    worker, queue = st.get("worker", {}), st.get("queue", {})
    running = queue.get("running")
    print(
        f"backend   touchup {st.get('backend_version')} at {st.get('endpoint')} (pid {st.get('pid')}, up {st.get('uptime_s')} s)"
    )
    print(f"device    {st.get('device')}")
    pool = worker.get("pool")
    if pool:  # serve --cluster: one line per replica
        print(f"pool      {len(pool['replicas'])} replica(s) of {pool['target']} on {pool['cluster']}")
        if pool.get("error"):
            print(f"          unreachable: {pool['error']}")
        for r in pool["replicas"]:
            state = "busy" if r.get("busy") else "idle"
            print(
                f"  {r['replica']:<10} {r.get('node')} pid {r.get('pid')} {r.get('device')}: "
                f"{r.get('engine') or '-'} {r.get('preset') or ''} ({state}, {r.get('jobs')} jobs, {r.get('loads')} loads)"
            )
    else:
        print(f"engine    {worker.get('engine') or '-'} {worker.get('preset') or ''} ({worker.get('state')})")
    for job in queue.get("running_all") or ([running] if running else []):
        print(f"running   {job['job']}: {job['stage']} {job['step']}/{job['total']}")
    waiting = queue.get("waiting_total", len(queue.get("waiting", [])))
    print(f"queue     {waiting} waiting, {queue.get('completed', 0)} completed")
    if worker.get("restarts"):
        last = worker.get("last_restart") or {}
        print(f"worker    restarted {worker['restarts']}x (last: {last.get('reason', '?')}); see the log")
    return 0


def stop(args: argparse.Namespace) -> int:
    from ....shared.client import BackendError

    try:
        with _client(args) as c:
            c.shutdown(timeout=args.timeout)
    except BackendError as exc:
        return _fail(exc)
    print("backend stopped")
    return 0
