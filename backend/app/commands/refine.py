"""``touchup refine``: refine a region of an image file through the backend, like a plugin does.

The CLI is a protocol client, not a shortcut into the engine: it reads the selection, sends
only the context tile (the same ``shared.geometry`` helper the plugins use), and composites the
returned layer exactly as an editor would. Images are read with OpenCV, whose BGR(A) order goes
on the wire as ``BGRA`` -- the backend converts, as it does for Krita.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ....shared.protocol import DEFAULT_ENDPOINT, ErrorCode

if TYPE_CHECKING:
    import numpy as np
    from tqdm import tqdm

    from ....shared.protocol import Message


class CliError(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refine", help="refine a region of an image file")
    p.add_argument("input", help="image to refine (PNG, TIFF, JPEG...; 8/16-bit or float)")
    p.add_argument(
        "-o", "--output", required=True, help="where to write the refined image (same size/mode/depth)"
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", help="selection mask image (white = refine; grey = soft)")
    where.add_argument("--box", help="rectangular selection X,Y,W,H")
    p.add_argument("--reference", action="append", default=[], help="reference image (repeatable)")
    p.add_argument("--prompt", default="", help="instruction for engines that take one")
    p.add_argument("--engine", help="engine name (default: the backend's default)")
    p.add_argument("--preset", help="engine preset")
    p.add_argument("--seed", type=int, default=0, help="random seed (variant i uses SEED + i)")
    p.add_argument(
        "--variants",
        type=int,
        metavar="N",
        help="N results with consecutive seeds (1-8; default: the preset's, 1 on the CPU engine, 4 on "
        "diffusion presets); several write OUTPUT-1 ... OUTPUT-N and a contact sheet OUTPUT-sheet.png",
    )
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--context", type=float, default=64, help="context margin, px at 1-megapixel scale")
    p.add_argument("--feather", type=float, default=8, help="inward blend width in px")
    p.add_argument("--mode", choices=["refine", "regenerate"], default="refine")
    p.add_argument("--no-color-correct", action="store_true", help="paste back without colour correction")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    p.add_argument(
        "--connection",
        metavar="FILE",
        help="connection file from `touchup keys add` (a backend on another machine; implies --no-start)",
    )
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="give up after this many seconds (default: an hour)"
    )
    p.add_argument(
        "--layer-out", help="also write the RGBA result tile (what a plugin gets) + PATH.json offset"
    )
    p.add_argument(
        "--no-start", action="store_true", help="fail instead of starting a backend when none runs"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        _run(args)
    except CliError as exc:
        print(f"touchup refine: {exc.message} [{exc.code}]", file=sys.stderr)
        return 1
    return 0


def _read(path: str, what: str) -> np.ndarray:
    import cv2

    if not Path(path).is_file():
        raise CliError(f"{what} not found: {path}", "file_not_found")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CliError(f"cannot read {what} {path}: not an image OpenCV understands", "bad_image")
    return image


def _selection(args: argparse.Namespace, height: int, width: int) -> np.ndarray:
    import numpy as np

    if args.box:
        try:
            x, y, w, h = (int(v) for v in args.box.split(","))
        except ValueError:
            raise CliError("--box must be X,Y,W,H", ErrorCode.BAD_PARAMS) from None
        mask: np.ndarray = np.zeros((height, width), np.uint8)

        mask[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = 255
        return mask
    mask = _read(args.mask, "mask")
    if mask.shape[:2] != (height, width):
        raise CliError(
            f"the mask is {mask.shape[1]}x{mask.shape[0]} but the input is {width}x{height}",
            ErrorCode.SIZE_MISMATCH,
        )
    if mask.ndim == 3:  # an RGBA mask with real transparency selects by alpha, otherwise by brightness
        mask = (
            mask[:, :, 3]
            if mask.shape[2] == 4 and mask[:, :, 3].min() < mask[:, :, 3].max()
            else mask[:, :, 0]
        )
    return mask


def _run(args: argparse.Namespace) -> None:
    import numpy as np

    from ....shared.client import BackendError, Client, refine_request
    from ....shared.geometry import Rect, context_tile
    from ....shared.result import SentTile, checked_result
    from ...pipeline.imaging import frame_to_array, wrap_frame
    from ..launch import is_running, start_backend

    image = _read(args.input, "input")
    grey = image.ndim == 2
    bgr = np.repeat(image[:, :, None], 3, axis=2) if grey else image
    height, width = bgr.shape[:2]
    mask = _selection(args, height, width)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0 and args.mode != "regenerate":
        raise CliError("the selection is empty: nothing to refine", ErrorCode.EMPTY_MASK)
    bounds = (
        Rect.from_corners(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        if len(xs)
        else Rect(0, 0, 0, 0)
    )
    tile = context_tile(bounds, width, height, args.context)
    src = np.ascontiguousarray(bgr[tile.y : tile.y1, tile.x : tile.x1])
    # OpenCV holds BGR(A): the bytes go out as they are, labelled BGRA, and the backend converts.
    refs = [wrap_frame(_as_colour(_read(r, "reference")), "reference", "BGRA") for r in args.reference]
    header, frames = refine_request(
        wrap_frame(src, "source", "BGRA"),
        wrap_frame(mask[tile.y : tile.y1, tile.x : tile.x1], "mask"),
        origin=(tile.x, tile.y),
        doc_size=(width, height),
        references=refs,
        prompt=args.prompt,
        engine=args.engine,
        preset=args.preset,
        params={
            "strength": args.strength,
            "steps": args.steps,
            "seed": args.seed,
            "variants": args.variants,
            "guidance": args.guidance,
            "context": args.context,
            "feather": args.feather,
            "mode": args.mode,
            "color_correct": not args.no_color_correct,
        },
    )

    from ....shared.connection import ConnectionError_, load_connection

    connection = None
    if args.connection:
        try:
            connection = load_connection(args.connection)
        except ConnectionError_ as exc:
            raise CliError(str(exc), ErrorCode.BAD_CONNECTION) from None
        args.endpoint, args.no_start = connection.endpoint, True
    started = None
    if connection is None and not is_running(args.endpoint):
        if args.no_start:
            raise CliError(
                f"no backend is running at {args.endpoint}; start one with `touchup serve`",
                ErrorCode.UNREACHABLE,
            )
        print(f"touchup refine: no backend at {args.endpoint}; starting one for this call", file=sys.stderr)
        try:
            started = start_backend(args.endpoint, args.engine)
        except RuntimeError as exc:
            raise CliError(str(exc), ErrorCode.UNREACHABLE) from None
    try:
        with (
            Client(args.endpoint, name="touchup-cli", connection=connection) as client,
            _Progress(args.quiet) as progress,
        ):
            try:
                client.hello(timeout=10)  # learn the backend's instance: a restart then fails the job at once
                results = client.refine_variants(
                    header, frames, on_event=progress.update, timeout=args.timeout
                )
            except BackendError as exc:
                raise CliError(exc.message, exc.code) from None
            if started is not None:
                try:
                    client.shutdown(timeout=5)
                except BackendError:
                    started.terminate()
    finally:
        if started is not None:
            try:
                started.wait(timeout=15)
            except Exception:
                started.kill()

    sent = SentTile.of_request(header, frames)
    several = len(results) > 1
    written: list[tuple[str, Any]] = []
    for result in results:
        try:
            frame, (ox, oy) = checked_result(result, sent)
        except BackendError as exc:
            raise CliError(exc.message, exc.code) from None
        layer = frame_to_array(frame)  # RGBA order after conversion
        out = _composite(image, bgr, mask, layer, ox, oy)
        index = int(result.header.get("variant", 0)) + 1
        path = _numbered(args.output, index) if several else args.output
        _write(path, out)
        written.append((f"seed {result.header.get('seed', args.seed)}", out))
        if args.layer_out:
            layer_path = _numbered(args.layer_out, index) if several else args.layer_out
            _write(layer_path, layer[:, :, [2, 1, 0, 3]])
            lh, lw = layer.shape[:2]
            info: dict[str, Any] = {"x": ox, "y": oy, "width": lw, "height": lh, "doc_size": [width, height]}
            info["meta"] = result.header.get("meta", {})
            Path(layer_path + ".json").write_text(json.dumps(info, indent=2))
    meta = results[-1].header.get("meta", {})
    if several:
        from ...tools.example import contact_sheet

        sheet_path = str(Path(args.output).with_name(Path(args.output).stem + "-sheet.png"))
        _write(sheet_path, contact_sheet([("before", image), *written], mask))  # BGR in, BGR out
        print(
            f"wrote {_numbered(args.output, 1)} ... {_numbered(args.output, len(results))} and {sheet_path} "
            f"({meta.get('engine')}, {meta.get('seconds', 0):.2f} s)",
            file=sys.stderr,
        )
    else:
        print(f"wrote {args.output} ({meta.get('engine')}, {meta.get('seconds', 0):.2f} s)", file=sys.stderr)


def _numbered(path: str, index: int) -> str:
    """``out.png`` -> ``out-3.png``: variant 3 of the job (counted from 1, as a user does)."""
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{index}{p.suffix}"))


def _composite(image: Any, bgr: Any, mask: Any, layer: Any, ox: int, oy: int) -> Any:
    """The input with the RGBA ``layer`` blended in at (``ox``, ``oy``), as an editor shows it:
    same size, mode and depth; every pixel the layer leaves transparent copied unchanged."""
    import numpy as np

    from ...pipeline.imaging import from_float, to_float

    lh, lw = layer.shape[:2]
    out = bgr.copy()
    region = out[oy : oy + lh, ox : ox + lw]
    alpha = to_float(layer[:, :, 3])[:, :, None]
    src_alpha = to_float(region[:, :, 3])[:, :, None] if region.shape[2] == 4 else None
    if src_alpha is not None:  # the layer's alpha carries the source's own alpha: take it back out
        alpha = np.where(src_alpha > 0, np.clip(alpha / np.maximum(src_alpha, 1e-12), 0, 1), 0)
    new_bgr = to_float(layer[:, :, [2, 1, 0]])
    blended = from_float(alpha * new_bgr + (1 - alpha) * to_float(region[:, :, :3]), region.dtype)
    keep = alpha[:, :, 0] <= 0  # untouched pixels are copied, never recomputed
    blended[keep] = region[:, :, :3][keep]
    region[:, :, :3] = blended
    if image.ndim == 2:
        import cv2

        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
        out[mask == 0] = image[mask == 0]
    return out


def _as_colour(image: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def _write(path: str, image: np.ndarray) -> None:
    import cv2

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(path, image):
        raise CliError(
            f"cannot write {path} (unsupported format or depth for this extension?)", "write_failed"
        )


class _Progress:
    """A tqdm bar on stderr fed by progress events."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: tqdm[Any] | None = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, msg: Message) -> None:

        if self.quiet or msg.kind != "progress":
            return
        from tqdm import tqdm

        total = int(msg.header.get("total") or 0)
        if self.bar is None or self.bar.total != total:
            if self.bar is not None:
                self.bar.close()
            # disable=None: a bar on a terminal, silence in logs and pipes.
            self.bar = tqdm(total=total, file=sys.stderr, leave=False, unit="step", disable=None)
        stage, variants = str(msg.header.get("stage", "")), msg.header.get("variants") or 1
        if isinstance(variants, int) and variants > 1:
            stage = f"variant {int(msg.header.get('variant') or 0) + 1}/{variants} {stage}"
        self.bar.set_description(stage)
        self.bar.n = int(msg.header.get("step") or 0)
        self.bar.refresh()
