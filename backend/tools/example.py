"""The bundled example: a real photo with one small detail broken the way generators break it.

Built on the fly from scikit-image's sample images (they ship with the package, so this works
offline and nothing binary lives in the repository). The astronaut's mission patch -- a round
logo with lettering -- is degraded the way image generators collapse small details: detail
lost to a downsample/upsample, blur, JPEG blocking and a slight colour cast. A reference photo
of the clean patch is provided the way a user would have one: a separate image, at another
scale, slightly rotated and in perspective, under different lighting. Everything is seeded, so
``touchup example make`` writes the same files every time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .eval.datasets import downsample, jpeg

#: The damaged detail: the mission patch on the astronaut's suit (centre x, y and radius, px).
PATCH_CENTER = (171, 386)
DAMAGE_RADIUS = 40
#: A retoucher selects a little more than the broken area.
SELECTION_MARGIN = 10
#: The reference shows the patch plus this much of its surroundings (px beyond the damage box).
REFERENCE_MARGIN = 24
SEED = 7


@dataclass
class Example:
    """All images of the example, uint8 RGB (mask: uint8 HxW)."""

    input: np.ndarray
    mask: np.ndarray
    reference: np.ndarray
    clean: np.ndarray
    unrelated_reference: np.ndarray

    def files(self) -> dict[str, np.ndarray]:
        return {
            "input.png": self.input,
            "mask.png": self.mask,
            "reference.png": self.reference,
            "clean.png": self.clean,
            "unrelated_reference.png": self.unrelated_reference,
        }


def _disc(shape: tuple[int, int], radius: float, soft: float) -> np.ndarray:
    """A float disc around the patch centre; ``soft`` px of Gaussian edge (0: anti-aliased only)."""
    canvas = np.zeros(shape, np.uint8)
    cv2.circle(canvas, PATCH_CENTER, round(radius), 255, -1, lineType=cv2.LINE_AA)
    out: np.ndarray = canvas.astype(np.float32) / 255.0
    if soft > 0:
        out = cv2.GaussianBlur(out, (0, 0), soft)
    return out


def degrade(image: np.ndarray, factor: int = 5, quality: int = 30) -> np.ndarray:
    """Collapse small details: down/up-sampling, blur, JPEG blocking and a colour cast (the
    evaluation's degradations, at fixed strengths)."""
    up = cv2.GaussianBlur(downsample(image, factor, upsample=cv2.INTER_CUBIC), (0, 0), 1.0)
    blocky = jpeg(up, quality).astype(np.float32)
    cast = blocky * np.array([1.06, 1.0, 0.93], np.float32) + np.array([4.0, 2.0, 0.0], np.float32)
    return np.clip(np.rint(cast), 0, 255).astype(np.uint8)


def _reference(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The clean patch as a separate photo: another scale, a small rotation and perspective,
    other lighting. Sampled from the whole clean image so it has no empty corners."""
    cx, cy = PATCH_CENTER
    half = DAMAGE_RADIUS + REFERENCE_MARGIN
    scale = rng.uniform(1.2, 1.5)
    angle = np.deg2rad(rng.uniform(-8.0, 8.0))
    size = round(2 * half * scale)
    # Similarity about the patch centre, then a small perspective tilt of the output corners.
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    similarity = np.array(
        [[c, -s, size / 2 - (c * cx - s * cy)], [s, c, size / 2 - (s * cx + c * cy)], [0, 0, 1]], np.float64
    )
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    jitter = rng.uniform(-0.03, 0.03, size=(4, 2)).astype(np.float32) * size
    tilt = cv2.getPerspectiveTransform(corners, corners + jitter)
    warp = tilt @ similarity
    ref = cv2.warpPerspective(
        clean.astype(np.float32) / 255.0,
        warp,
        (size, size),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT,
    )
    gamma = rng.uniform(0.85, 1.15)
    gain = rng.uniform(0.85, 1.1, size=3).astype(np.float32)
    offset = rng.uniform(-0.03, 0.03, size=3).astype(np.float32)
    lit = np.clip(ref, 0.0, 1.0) ** gamma * gain + offset
    return np.clip(np.rint(lit * 255.0), 0, 255).astype(np.uint8)


def make_example(seed: int = SEED) -> Example:
    """Build the example deterministically from ``skimage.data``."""
    from skimage import data

    rng = np.random.default_rng(seed)
    clean = np.ascontiguousarray(data.astronaut()[:, :, :3])
    damage = _disc(clean.shape[:2], DAMAGE_RADIUS, soft=1.5)[:, :, None]
    broken = clean.astype(np.float32) * (1 - damage) + degrade(clean).astype(np.float32) * damage
    image = np.clip(np.rint(broken), 0, 255).astype(np.uint8)
    mask = np.clip(np.rint(_disc(clean.shape[:2], DAMAGE_RADIUS + SELECTION_MARGIN, 0) * 255), 0, 255)
    reference = _reference(clean, rng)
    cat = data.chelsea()
    unrelated = np.ascontiguousarray(cat[40:200, 120:300, :3])
    return Example(image, mask.astype(np.uint8), reference, clean, unrelated)


def write_example(out_dir: Path, seed: int = SEED) -> list[Path]:
    """Write the example's PNGs into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in make_example(seed).files().items():
        path = out_dir / name
        write_image(path, img)
        paths.append(path)
    return paths


def write_image(path: Path, img: np.ndarray) -> None:
    """Write an 8/16-bit grey or RGB(A) array as PNG (cv2 wants BGR order)."""
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")


def read_image(path: Path) -> np.ndarray:
    """Read a PNG/JPEG/TIFF as RGB(A) or grey, keeping its bit depth."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read image {path}")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return img


def _unit_rgb(img: np.ndarray) -> np.ndarray:
    """float32 RGB in [0, 1] from grey/RGB/RGBA of any integer or float depth."""
    from ..pipeline.imaging import rgb_float

    return rgb_float(img)


def region_psnr(image: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 1) of ``image`` against ``clean`` over the selected pixels (mask > 0)."""
    sel = (mask[..., 0] if mask.ndim == 3 else mask) > 0
    diff = _unit_rgb(image)[sel] - _unit_rgb(clean)[sel]
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    """The panel with a caption strip on top."""
    strip = np.full((28, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, panel])


def _fit(img: np.ndarray, side: int, nearest: bool = False) -> np.ndarray:
    h, w = img.shape[:2]
    s = side / max(h, w)
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


def make_sheet(
    before: np.ndarray,
    after: np.ndarray,
    clean: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    gain: float = 4.0,
    side: int = 360,
) -> np.ndarray:
    """A before / after / |after - before| x gain sheet (uint8 RGB), plus clean if given.

    With a mask, a second row zooms on the selection's box, and the captions carry the
    region's PSNR against ``clean`` when that is given too.
    """
    b, a = _unit_rgb(before), _unit_rgb(after)
    if b.shape != a.shape:
        raise ValueError(f"before is {b.shape[1]}x{b.shape[0]}, after is {a.shape[1]}x{a.shape[0]}")
    diff = np.clip(np.abs(a - b) * gain, 0, 1)
    panels = [("before", b), ("after", a), (f"|after - before| x{gain:g}", diff)]
    if clean is not None:
        panels.append(("clean", _unit_rgb(clean)))
    if mask is not None and clean is not None:
        c = _unit_rgb(clean)
        panels[0] = (f"before  {region_psnr(b, c, mask):.2f} dB", b)
        panels[1] = (f"after  {region_psnr(a, c, mask):.2f} dB", a)
    return contact_sheet(panels, mask, side)


def contact_sheet(
    panels: list[tuple[str, np.ndarray]], mask: np.ndarray | None = None, side: int = 360
) -> np.ndarray:
    """Captioned images side by side (uint8, 3 channels in the images' own order), each fitted
    to ``side`` px; with a mask, a second row zooms on the selection's box, where a refine's
    changes are. Images of any depth and mode; all of one size when a mask is given."""
    to8 = [(t, np.clip(np.rint(_unit_rgb(p) * 255), 0, 255).astype(np.uint8)) for t, p in panels]
    rows = [[_label(_fit(p, side), t) for t, p in to8]]
    if mask is not None:
        m = (mask[..., 0] if mask.ndim == 3 else mask) > 0
        ys, xs = np.nonzero(m)
        if len(xs):
            pad = max(8, (xs.max() - xs.min()) // 4)
            y0, y1 = max(0, ys.min() - pad), min(m.shape[0], ys.max() + pad + 1)
            x0, x1 = max(0, xs.min() - pad), min(m.shape[1], xs.max() + pad + 1)
            rows.append([_label(_fit(p[y0:y1, x0:x1], side, nearest=True), f"zoom: {t}") for t, p in to8])
    cell_h = max(p.shape[0] for row in rows for p in row) + 4
    cell_w = max(p.shape[1] for row in rows for p in row) + 4
    lines = []
    for row in rows:
        cells = [
            np.pad(p, ((0, cell_h - p.shape[0]), (0, cell_w - p.shape[1]), (0, 0)), constant_values=255)
            for p in row
        ]
        lines.append(np.hstack(cells))
    return np.vstack(lines)
