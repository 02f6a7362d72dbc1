"""A hostile client: hundreds of malformed, out-of-range and oversized messages, and a tally.

Run against a backend (``python tests/hostile.py tcp://127.0.0.1:PORT``) or from the tests.
Every message is sent on its own, then classified by its first reply:

* ``clean``: an error with a protocol code other than ``internal``, carrying the request id
  whenever the id was valid -- or an ordinary answer (a hostile-looking refine that is in fact
  valid is accepted and must then finish);
* ``internal_without_id``: ``internal`` and no id (the bug class this tool was written for);
* ``internal``: ``internal`` with the id;
* ``silent``: no reply within the timeout.

Afterwards the backend must still run a normal job, and ``status`` tells how often its worker
had to be restarted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

V = [1, 0]
SRC = {"role": "source", "width": 8, "height": 8, "channels": 4, "dtype": "u8", "order": "RGBA"}
MASK = {"role": "mask", "width": 8, "height": 8, "channels": 1, "dtype": "u8", "order": "RGBA"}
SRC_BYTES = bytes(range(256)) * 1  # 8*8*4
MASK_BYTES = b"\xff" * 64
HUGE = "x" * 1_000_000
BAD_VALUES: list[Any] = [
    None, True, -1, 0, 2**63 - 1, 2**64 - 1, -(2**63), 1e308, float("inf"), float("-inf"), float("nan"),
    "", "text", HUGE, [], [1], [1, 2, 3], {}, {"a": 1}, b"\x00\x01", [2**64 - 1, 0], [0, 2**64 - 1],
    [1.5, 2], ["a", "b"], [[1], [2]], [True, False],
]  # fmt: skip


@dataclass
class Case:
    name: str
    parts: list[bytes]
    req_id: Any = None  # the id the reply must carry, or None when the id itself is hostile


@dataclass
class Tally:
    tried: int = 0
    outcomes: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    accepted_jobs: int = 0
    accepted_finished: int = 0
    worker_restarts: int = 0
    normal_job_ok: bool = False

    def add(self, case: Case, outcome: str) -> None:
        self.tried += 1
        self.outcomes[outcome] += 1
        self.examples.setdefault(outcome, [])
        if len(self.examples[outcome]) < 12:
            self.examples[outcome].append(case.name)

    def summary(self) -> dict[str, Any]:
        return {
            "tried": self.tried,
            "clean": self.outcomes["clean"],
            "silent": self.outcomes["silent"],
            "internal_without_id": self.outcomes["internal_without_id"],
            "internal": self.outcomes["internal"],
            "accepted_jobs": self.accepted_jobs,
            "accepted_finished": self.accepted_finished,
            "worker_restarts": self.worker_restarts,
            "normal_job_ok": self.normal_job_ok,
            "examples": {k: v for k, v in self.examples.items() if k != "clean"},
        }


def pack(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def refine(req_id: str, **over: Any) -> dict:
    header = {"kind": "refine", "v": V, "id": req_id, "engine": "identity", "frames": [SRC, MASK]}
    header.update(over)
    return header


def cases(seed: int = 0) -> list[Case]:
    out: list[Case] = []
    n = iter(range(10**6))

    def rid() -> str:
        return f"h{next(n)}"

    def add_refine(name: str, parts: list[bytes] | None = None, **over: Any) -> None:
        i = rid()
        header = refine(i, **over)
        out.append(Case(name, [pack(header), *(parts if parts is not None else [SRC_BYTES, MASK_BYTES])], i))

    # -- not a header at all
    for name, raw in {
        "not msgpack": b"\xc1\xc1",
        "truncated map": b"\x82\xa4kind",
        "msgpack list": pack([1, 2]),
        "msgpack int": pack(7),
        "msgpack nil": pack(None),
        "empty bytes": b"",
        "huge str header": pack(HUGE),
    }.items():
        out.append(Case(name, [raw]))
    # -- hostile ids (no id can be echoed) and kinds
    for value in BAD_VALUES:
        if value is None or (
            isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        ):
            continue
        if isinstance(value, str) and len(value) <= 128:
            continue
        out.append(Case(f"id={_short(value)}", [pack({"kind": "ping", "v": V, "id": value})]))
    for value in [*BAD_VALUES, "teleport", "PING", "result", "error"]:
        i = rid()
        out.append(Case(f"kind={_short(value)}", [pack({"kind": value, "v": V, "id": i})], i))
    # -- versions
    for value in [*BAD_VALUES, [9, 0], [0, 9]]:
        i = rid()
        out.append(Case(f"v={_short(value)}", [pack({"kind": "ping", "v": value, "id": i})], i))
    # -- frame lists and descriptors
    for value in BAD_VALUES:
        add_refine(f"frames={_short(value)}", parts=[], **{"frames": value})
    for key in ("width", "height", "channels", "dtype", "order", "role"):
        for value in BAD_VALUES:
            add_refine(
                f"source.{key}={_short(value)}", parts=None, **{"frames": [dict(SRC, **{key: value}), MASK]}
            )
    add_refine("three frames two parts", parts=[SRC_BYTES, MASK_BYTES], **{"frames": [SRC, MASK, MASK]})
    add_refine("frame too short", parts=[SRC_BYTES[:-1], MASK_BYTES])
    add_refine("twenty references", parts=[SRC_BYTES, MASK_BYTES] + [SRC_BYTES] * 20,
               **{"frames": [SRC, MASK] + [dict(SRC, role="reference")] * 20})  # fmt: skip
    add_refine("two masks", parts=[SRC_BYTES, MASK_BYTES, MASK_BYTES], **{"frames": [SRC, MASK, MASK]})
    add_refine("no frames", parts=[], **{"frames": []})
    # -- refine fields
    for key in ("origin", "doc_size", "prompt", "engine", "preset", "output_dtype", "params"):
        for value in BAD_VALUES:
            add_refine(f"{key}={_short(value)}", **{key: value})
    add_refine("doc_size huge + context 4096", doc_size=[2**64 - 1, 2**64 - 1], params={"context": 4096})
    add_refine("origin 2**64-1", origin=[2**64 - 1, 0])
    # -- params
    for key in (
        "strength",
        "steps",
        "seed",
        "guidance",
        "context",
        "feather",
        "mode",
        "color_correct",
        "extra",
    ):
        for value in BAD_VALUES:
            add_refine(f"params.{key}={_short(value)}", params={key: value})
    add_refine("params with 1000 keys", params={f"k{i}": i for i in range(1000)})
    add_refine("params nested map", params={"deep": {"deeper": [1, {"x": 2}]}})
    # -- other kinds' fields
    for value in BAD_VALUES:
        i = rid()
        out.append(
            Case(f"cancel job={_short(value)}", [pack({"kind": "cancel", "v": V, "id": i, "job": value})], i)
        )
        i = rid()
        out.append(
            Case(
                f"hello client={_short(value)}",
                [pack({"kind": "hello", "v": V, "id": i, "client": value})],
                i,
            )
        )
    # -- byte fuzz of a valid refine header
    rng = random.Random(seed)
    base = pack(refine("fuzz"))
    for k in range(60):
        raw = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        out.append(Case(f"fuzz {k}", [bytes(raw), SRC_BYTES, MASK_BYTES]))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _reply_for(sock: zmq.Socket, timeout: float) -> dict | None:
    if not sock.poll(int(timeout * 1000)):
        return None
    header = msgpack.unpackb(sock.recv_multipart()[0], raw=False, strict_map_key=False)
    return header if isinstance(header, dict) else {"kind": "?"}


def run(endpoint: str, timeout: float = 3.0, seed: int = 0) -> Tally:
    """Send every case, classify the replies, then check the backend still works."""
    tally = Tally()
    ctx = zmq.Context.instance()
    jobs: list[tuple[Any, zmq.Socket]] = []
    for case in cases(seed):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(case.parts)
        reply = _reply_for(sock, timeout)
        if reply is None:
            outcome = "silent"
        elif reply.get("kind") == "error" and reply.get("code") == "internal":
            outcome = "internal" if reply.get("id") is not None else "internal_without_id"
        elif case.req_id is not None and reply.get("id") != case.req_id:
            outcome = "silent"  # answered, but the client waiting on its id would never know
        else:
            outcome = "clean"
        tally.add(case, outcome)
        if reply is not None and reply.get("kind") == "accepted":
            tally.accepted_jobs += 1
            jobs.append((reply.get("id"), sock))
        else:
            sock.close(0)
    deadline = time.monotonic() + 60
    for req_id, sock in jobs:
        while time.monotonic() < deadline:
            reply = _reply_for(sock, max(0.1, deadline - time.monotonic()))
            if reply is None:
                break
            if reply.get("kind") in ("result", "error", "cancelled") and reply.get("id") == req_id:
                tally.accepted_finished += 1
                break
        sock.close(0)
    tally.worker_restarts, tally.normal_job_ok = _still_serving(endpoint)
    return tally


def _still_serving(endpoint: str) -> tuple[int, bool]:
    from touchup.shared.client import Client

    with Client(endpoint, name="after-hostile") as c:
        ok = False
        try:
            header = refine("after")
            header.pop("id")
            result = c.refine(header, _frames(), timeout=60)
            ok = result.kind == "result"
        except Exception:
            ok = False
        restarts = int(c.status(timeout=5).get("worker", {}).get("restarts", 0))
    return restarts, ok


def _frames():
    from touchup.shared.frames import Frame, FrameDesc

    return [Frame(FrameDesc(**SRC), SRC_BYTES), Frame(FrameDesc(**MASK), MASK_BYTES)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("endpoint")
    p.add_argument("--timeout", type=float, default=3.0)
    args = p.parse_args(argv)
    tally = run(args.endpoint, args.timeout)
    print(json.dumps(tally.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
