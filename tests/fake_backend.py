"""A backend that lies: it answers like Touchup but returns a result that does not fit.

For the plugin tests ("a result must fit the tile that was sent"): run
``python tests/fake_backend.py tcp://127.0.0.1:PORT MODE`` and point an editor at it. MODE:

* ``outside``: a 5000x1 tile at (-100000, 999999), far outside anything sent;
* ``order``: the right place and size, but the other channel order;
* ``badprogress``: a progress message whose ``step`` is text, then silence (a plugin must
  fail the job rather than leave it hanging).

It binds loopback only and stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys

import msgpack
import zmq

CAPS = {
    "engines": [{"name": "classic", "presets": [{"name": "default", "accepts": {}}], "default_preset": "default",
                 "available": {"ok": True}}],
    "default_engine": "classic",
    "limits": {},
}  # fmt: skip


def main(endpoint: str, mode: str) -> None:
    assert endpoint.startswith(("tcp://127.0.0.1:", "ipc://")), "loopback only"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    while running[0]:
        if not sock.poll(200):
            continue
        peer, head, *_frames = sock.recv_multipart()
        h = msgpack.unpackb(head, raw=False)
        rid = h.get("id")

        def send(header: dict, *parts: bytes, peer: bytes = peer, rid=rid) -> None:
            header = {"v": [1, 0], "id": rid, **header}
            sock.send_multipart([peer, msgpack.packb(header), *parts])

        kind = h.get("kind")
        if kind == "ping":
            send({"kind": "pong", "instance": "fake"})
        elif kind == "hello":
            send({"kind": "hello", "protocol": [1, 0], "backend_version": "fake", "instance": "fake",
                  "capabilities": CAPS})  # fmt: skip
        elif kind == "refine":
            send({"kind": "accepted", "job": "j1", "position": 0, "instance": "fake"})
            if mode == "badprogress":
                send({"kind": "progress", "job": "j1", "stage": "refine", "step": "three", "total": 5})
                continue
            src = h["frames"][0]
            x, y = h.get("origin", [0, 0])
            order = src.get("order", "RGBA")
            if mode == "outside":
                w, hh, ox, oy = 5000, 1, -100000, 999999
            else:
                w, hh, ox, oy = src["width"], src["height"], x, y
                order = "RGBA" if order == "BGRA" else "BGRA"
            desc = {"role": "result", "width": w, "height": hh, "channels": 4, "dtype": src.get("dtype", "u8"),
                    "order": order}  # fmt: skip
            size = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}[desc["dtype"]]
            send({"kind": "result", "job": "j1", "origin": [ox, oy], "size": [w, hh], "frames": [desc], "meta": {}},
                 b"\x7f" * (w * hh * 4 * size))  # fmt: skip
        else:
            send({"kind": "error", "code": "unknown_kind", "message": "fake backend"})
    sock.close(0)
    ctx.term()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "outside")
