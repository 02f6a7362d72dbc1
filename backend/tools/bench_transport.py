"""``touchup bench transport``: what everything except the model costs, and what raw frames buy.

For a selection in a large canvas the client sends only the context tile. This measures, with
the ``identity`` engine so no model time hides anything: the transport (client -> backend ->
client, i.e. encode, ZeroMQ, decode, validation, queue hop and the result's way back), the
focus crop + resize and the paste-back (as timed inside the backend), and -- in the same run,
on the same tile -- the common way of shipping pixels: PNG encode + decode both ways at zlib's
default level. Machines here are noisy, so the figure to read is the ratio, not the times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np

from ...shared.client import Client, refine_request
from ...shared.geometry import Rect, context_tile
from ..pipeline.imaging import array_to_frame, frame_to_array

#: zlib's (and PIL's) default; OpenCV's own default is a faster 1, which would flatter PNG less.
PNG_LEVEL = 6


@dataclass
class Case:
    selection: int
    canvas: int
    dtype: type

    @property
    def name(self) -> str:
        return f"{self.selection}x{self.selection} in {self.canvas}x{self.canvas} {np.dtype(self.dtype).name}"


def register_transport(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transport", help="time transport, crop and paste-back vs the PNG round trip")
    p.add_argument("--canvas", type=int, default=8192)
    p.add_argument("--sizes", default="1024,4096", help="selection sides, comma-separated")
    p.add_argument("--dtypes", default="u8,u16")
    p.add_argument("--repeat", type=int, default=3, help="runs per case (median reported)")
    p.add_argument("--endpoint", help="use this running backend (must offer the identity engine)")
    p.set_defaults(func=run)


def _tile(case: Case) -> tuple[np.ndarray, np.ndarray, Rect]:
    """The context tile a client would read for a centred square selection, and its mask."""
    c = case.canvas
    sel = Rect((c - case.selection) // 2, (c - case.selection) // 2, case.selection, case.selection)
    tile = context_tile(sel, c, c)
    top = 255 if case.dtype == np.uint8 else 65535
    # A smooth photo-like gradient with mild noise: PNG compresses it as it would a photo.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : tile.height, 0 : tile.width].astype(np.float32)
    base = np.stack([xx / tile.width, yy / tile.height, (xx + yy) / (tile.width + tile.height)], axis=2)
    noise = rng.normal(0, 0.01, base.shape).astype(np.float32)
    rgb = np.clip(base + noise, 0, 1) * top
    image: np.ndarray = np.concatenate(
        [rgb, np.full((tile.height, tile.width, 1), top, np.float32)], axis=2
    ).astype(case.dtype)
    mask = np.zeros((tile.height, tile.width), np.uint8)
    mask[sel.y - tile.y : sel.y1 - tile.y, sel.x - tile.x : sel.x1 - tile.x] = 255
    return image, mask, tile


def _png_round_trip(source: np.ndarray, mask: np.ndarray, result: np.ndarray) -> float:
    """Seconds to ship the same request and result as PNGs: encode + decode each image once."""
    t0 = time.perf_counter()
    for image in (source, mask, result):
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
        assert ok
        cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return time.perf_counter() - t0


def measure(client: Client, case: Case, repeat: int) -> dict[str, float]:
    image, mask, tile = _tile(case)
    rows: list[dict[str, float]] = []
    layer: np.ndarray | None = None

    for _ in range(repeat):
        header, frames = refine_request(
            array_to_frame(image, "source", "BGRA"),
            array_to_frame(mask, "mask"),
            origin=(tile.x, tile.y),
            doc_size=(case.canvas, case.canvas),
            engine="identity",
            params={"steps": 1},
        )
        t0 = time.perf_counter()
        result = client.refine(header, frames, timeout=600)
        total = time.perf_counter() - t0
        frame = result.frame("result")
        assert frame is not None, "the backend answered without a result frame"
        layer = frame_to_array(frame)

        meta = result.header["meta"]
        timings = meta["timings"]
        rows.append(
            {
                "total": total,
                "transport": total - meta["seconds"],
                "crop": timings.get("crop", 0.0),
                "engine": timings.get("engine", 0.0),
                "paste": timings.get("paste", 0.0),
            }
        )
    assert layer is not None  # repeat >= 1
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["png"] = statistics.median(_png_round_trip(image, mask, layer) for _ in range(max(1, repeat - 1)))
    med["non_engine"] = med["transport"] + med["crop"] + med["paste"]
    med["tile_mb"] = (image.nbytes + mask.nbytes + layer.nbytes) / 1e6
    return med


def run(args: argparse.Namespace) -> int:
    from ..app.launch import start_backend
    from .bench_engines import IDENTITY

    sizes = [int(s) for s in args.sizes.split(",")]
    dtypes = {"u8": np.uint8, "u16": np.uint16}
    cases = [Case(s, args.canvas, dtypes[d]) for s in sizes for d in args.dtypes.split(",")]
    proc = None
    endpoint = args.endpoint
    if endpoint is None:
        import socket

        from ...shared.geometry import DEFAULT_CONTEXT  # noqa: F401 - documents the margin used

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        proc = start_backend(endpoint, engine="identity", extra_engines={"identity": IDENTITY})
    print(
        f"# touchup bench transport -- identity engine, median of {args.repeat}, PNG at zlib level {PNG_LEVEL}"
    )
    print(
        "| case | MB moved | transport ms | crop+resize ms | paste-back ms | non-engine ms | PNG round trip ms | PNG / raw |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    try:
        with Client(endpoint, name="bench") as client:
            client.refine(
                *refine_request(  # warm-up: first job imports and allocates
                    array_to_frame(np.zeros((8, 8, 4), np.uint8), "source"),
                    array_to_frame(np.full((8, 8), 255, np.uint8), "mask"),
                    origin=(0, 0),
                    doc_size=(8, 8),
                    engine="identity",
                ),
                timeout=120,
            )
            for case in cases:
                m = measure(client, case, args.repeat)
                print(
                    f"| {case.name} | {m['tile_mb']:.0f} | {m['transport'] * 1e3:.1f} | {m['crop'] * 1e3:.1f} | "
                    f"{m['paste'] * 1e3:.1f} | {m['non_engine'] * 1e3:.1f} | {m['png'] * 1e3:.0f} | "
                    f"{m['png'] / max(m['transport'], 1e-9):.0f}x |",
                    flush=True,
                )
            if proc is not None:
                client.shutdown()
    finally:
        if proc is not None:
            proc.wait(timeout=30) if proc.poll() is None else None
    print(
        "transport = client wall time minus the backend's job time (encode, ZeroMQ both ways, decode, validation)",
        file=sys.stderr,
    )
    return 0
