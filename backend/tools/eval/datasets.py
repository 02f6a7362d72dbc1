"""Evaluation cases: quadruples of (input, selection, references, ground truth).

The built-in set is generated, reproducibly, from the photographs scikit-image ships inside its
wheel (no download, so it runs from a fresh clone and in CI). It follows the data pipelines of
reference-based refiners: take a clean photo (the ground truth), pick a region over a face,
text, logo or texture, degrade that region (blur, downsample-upsample, JPEG, erosion of
strokes, lighting/colour shift, noise, and combinations such as blur then JPEG), and make a
reference from the clean region seen under another pose (1.2-2.5x, up to 30 degrees, a mild
perspective) and light -- or, in some cases, an unrelated reference that must be refused. The user's selection is the degraded region grown by a few
pixels, because retouchers select generously; its band of clean pixels is exactly where a
careless paste-back shows a seam.

A user's own set is a folder of case folders (see :func:`load_folder` and docs/eval.md).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

CATEGORIES = ("text", "logo", "face", "texture")
DEGRADATIONS = ("blur", "downsample", "jpeg", "erosion", "lighting", "noise")
#: Damage made of several degradations in turn, as real photos collect it (a soft, enlarged
#: detail that was then saved as a JPEG).
COMBINED = ("blur+jpeg", "downsample+jpeg", "blur+downsample+jpeg")
#: Damage a reference-free restore can undo from measurements alone (lost detail, not lost
#: content): blur, downsampling and JPEG, alone or combined. The issue's reference-free target
#: is stated over this family, so the report gives it a row of its own.
RESTORABLE = frozenset({"blur", "downsample", "jpeg"})


def damage_family(degradation: str) -> str:
    """``blur/downsample/jpeg`` when every part of ``degradation`` is in :data:`RESTORABLE`,
    ``other`` otherwise (erosion, lighting, noise, or a user's case without a label)."""
    parts = set(degradation.split("+")) if degradation else set()
    return "blur/downsample/jpeg" if parts and parts <= RESTORABLE else "other"


class ReferenceKind(str, Enum):
    """What reference a case comes with."""

    NONE = "none"
    MATCH = "match"  # the clean region under another pose and light
    UNRELATED = "unrelated"  # another photo: it must be refused and must not harm


#: The built-in cases' (degradation, reference) in turn. Category and size rotate
#: independently (every 4 and every 16 cases), so 24 cases hold each degradation with and
#: without a reference, four unrelated references and every category and size.
SCHEDULE: tuple[tuple[str, ReferenceKind], ...] = (
    ("blur", ReferenceKind.NONE),
    ("downsample", ReferenceKind.MATCH),
    ("jpeg", ReferenceKind.NONE),
    ("blur+jpeg", ReferenceKind.MATCH),
    ("downsample", ReferenceKind.NONE),
    ("noise", ReferenceKind.MATCH),
    ("blur+jpeg", ReferenceKind.NONE),
    ("jpeg", ReferenceKind.MATCH),
    ("lighting", ReferenceKind.UNRELATED),
    ("blur", ReferenceKind.MATCH),
    ("downsample+jpeg", ReferenceKind.NONE),
    ("erosion", ReferenceKind.MATCH),
    ("jpeg", ReferenceKind.NONE),
    ("blur+downsample+jpeg", ReferenceKind.MATCH),
    ("noise", ReferenceKind.NONE),
    ("blur", ReferenceKind.UNRELATED),
    ("blur", ReferenceKind.NONE),
    ("downsample+jpeg", ReferenceKind.MATCH),
    ("downsample", ReferenceKind.NONE),
    ("lighting", ReferenceKind.MATCH),
    ("jpeg", ReferenceKind.UNRELATED),
    ("blur+downsample+jpeg", ReferenceKind.NONE),
    ("erosion", ReferenceKind.NONE),
    ("downsample", ReferenceKind.UNRELATED),
)
#: Region size classes: the degraded region's share of the image area.
SIZES: dict[str, float] = {"tiny": 0.01, "small": 0.04, "medium": 0.10, "large": 0.25}
SHAPES = ("ellipse", "rect", "blob")

PROMPTS = {
    "text": "restore the lettering so it is sharp and legible",
    "logo": "restore the logo with clean edges and true colours",
    "face": "restore the face with natural detail",
    "texture": "restore the texture with crisp natural detail",
}


@dataclass(frozen=True)
class Source:
    """A bundled photo and where, as fractions of its width/height, the region centre may fall."""

    image: str  # a ``skimage.data`` loader that needs no download
    category: str
    roi: tuple[float, float, float, float]  # x0, y0, x1, y1


SOURCES: tuple[Source, ...] = (
    Source("text", "text", (0.2, 0.3, 0.8, 0.7)),
    Source("page", "text", (0.2, 0.2, 0.8, 0.8)),
    Source("astronaut", "text", (0.57, 0.69, 0.61, 0.72)),  # the name tag
    Source("logo", "logo", (0.35, 0.35, 0.65, 0.65)),
    Source("astronaut", "logo", (0.27, 0.72, 0.32, 0.78)),  # the mission patch
    Source("astronaut", "face", (0.37, 0.12, 0.48, 0.26)),
    Source("chelsea", "face", (0.40, 0.25, 0.65, 0.60)),
    Source("camera", "face", (0.43, 0.15, 0.48, 0.24)),
    Source("brick", "texture", (0.25, 0.25, 0.75, 0.75)),
    Source("grass", "texture", (0.25, 0.25, 0.75, 0.75)),
    Source("gravel", "texture", (0.25, 0.25, 0.75, 0.75)),
    Source("immunohistochemistry", "texture", (0.25, 0.25, 0.75, 0.75)),
)


@dataclass
class EvalCase:
    """One benchmark case. All images are uint8 RGB of the same size except references.

    ``image`` is the whole document as the user has it (degraded inside the region only);
    ``mask`` the selection (``HxW`` uint8, 0 = not selected); ``truth`` the clean document.
    """

    name: str
    category: str
    image: np.ndarray
    mask: np.ndarray
    truth: np.ndarray
    references: list[np.ndarray] = field(default_factory=list)
    prompt: str = ""
    degradation: str = ""
    size: str = ""
    source: str = ""
    seed: int = 0
    #: ``none``, ``match`` or ``unrelated`` (a user's case: ``match`` when it has references,
    #: unless its case.json says otherwise).
    reference_kind: str = ""

    def __post_init__(self) -> None:
        if not self.reference_kind:
            self.reference_kind = (ReferenceKind.MATCH if self.references else ReferenceKind.NONE).value

    @property
    def has_reference(self) -> bool:
        return bool(self.references)

    @property
    def selected_fraction(self) -> float:
        return float(np.count_nonzero(self.mask)) / self.mask.size


class DatasetError(ValueError):
    """A user's dataset folder does not follow the documented layout."""


# -- the built-in set ------------------------------------------------------------------------


def as_rgb8(img: np.ndarray) -> np.ndarray:
    """uint8 RGB from grey, RGB or RGBA samples (16-bit and [0, 1] float scaled, alpha composited
    on white). Raises ValueError for other sample types."""
    img = np.asarray(img)
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype.kind == "f":
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"only 8- and 16-bit or float images are supported, not {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(img[:, :, :3])


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 RGB (grey replicated, alpha composited on white)."""
    import skimage.data

    img = as_rgb8(getattr(skimage.data, name)())
    img.setflags(write=False)  # shared by every case through the cache
    return img


def case_plan(index: int) -> tuple[str, str, str, ReferenceKind]:
    """(category, size, degradation, reference kind) of case ``index``.

    A fixed rotation rather than random draws, so that even a handful of cases covers every
    category, size, degradation and reference mode.
    """
    category = CATEGORIES[index % len(CATEGORIES)]
    size = list(SIZES)[(index // len(CATEGORIES)) % len(SIZES)]
    degradation, reference = SCHEDULE[index % len(SCHEDULE)]
    return category, size, degradation, reference


def region_mask(
    height: int, width: int, fraction: float, roi: tuple[float, float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """A boolean region covering about ``fraction`` of the image, centred inside ``roi``."""
    area = fraction * height * width
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    aspect = float(np.exp(rng.uniform(-0.4, 0.4)))  # width / height of the region
    # Half extents of the region's box, then limited so it fits inside the image.
    if shape == "rect":
        hw, hh = math.sqrt(area * aspect) / 2, math.sqrt(area / aspect) / 2
    else:
        hw, hh = math.sqrt(area * aspect / math.pi), math.sqrt(area / aspect / math.pi)
    hw, hh = min(hw, width / 2 - 4), min(hh, height / 2 - 4)
    x0, y0, x1, y1 = roi
    cx = float(np.clip(rng.uniform(x0, x1) * width, hw + 3, width - hw - 3))
    cy = float(np.clip(rng.uniform(y0, y1) * height, hh + 3, height - hh - 3))
    mask = np.zeros((height, width), np.uint8)
    if shape == "rect":
        cv2.rectangle(mask, (round(cx - hw), round(cy - hh)), (round(cx + hw) - 1, round(cy + hh) - 1), 1, -1)
    elif shape == "ellipse":
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(
            mask, (round(cx), round(cy)), (max(1, round(hw)), max(1, round(hh))), angle, 0, 360, 1, -1
        )
    else:  # a wobbly ellipse, like a lasso selection
        theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        wobble = (
            1
            + 0.12 * np.sin(3 * theta + rng.uniform(0, 6.3))
            + 0.07 * np.sin(5 * theta + rng.uniform(0, 6.3))
        )
        wobble /= wobble.max()
        pts = np.stack([cx + hw * wobble * np.cos(theta), cy + hh * wobble * np.sin(theta)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _lighting(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Exposure, gamma and white-balance change of a float RGB image."""
    gain = 1 + strength * rng.choice([-1, 1]) * rng.uniform(0.15, 0.3)
    tint = 1 + strength * rng.uniform(-0.08, 0.08, size=3)
    gamma = float(np.exp(strength * rng.uniform(-0.25, 0.25)))
    return np.clip(np.power(img, gamma) * gain * tint, 0, 1).astype(np.float32)


def downsample(img: np.ndarray, factor: float, upsample: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Detail lost to a shrink by ``factor`` (area) and an enlargement back (``upsample``)."""
    h, w = img.shape[:2]
    small = cv2.resize(
        img, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=upsample)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (uint8 RGB, or float RGB in [0, 1]) through JPEG at ``quality``, in its own dtype."""
    u8 = img if img.dtype == np.uint8 else np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError("JPEG decoding failed")
    out = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return out if img.dtype == np.uint8 else out.astype(np.float32) / 255.0


def degrade(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` (float32 RGB in [0, 1]) degraded by ``kind`` (``a+b``: ``a``, then ``b``); the
    caller keeps only the region."""
    if "+" in kind:
        for part in kind.split("+"):
            img = degrade(img, part, rng)
        return img
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.5, 3.5)))
    if kind == "downsample":
        return downsample(img, float(rng.uniform(3, 6)))
    if kind == "jpeg":
        return jpeg(img, int(rng.integers(5, 16)))
    if kind == "erosion":
        # Thin strokes the way generators break lettering: grow the background over them.
        k = int(rng.choice([3, 5]))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        light_background = float(np.median(img)) > 0.5
        return (cv2.dilate if light_background else cv2.erode)(img, kernel)
    if kind == "lighting":
        return _lighting(img, rng)
    if kind == "noise":
        return np.clip(img + rng.normal(0, rng.uniform(0.04, 0.09), img.shape), 0, 1).astype(np.float32)
    raise ValueError(f"unknown degradation {kind!r}")


def _reference_window(truth: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """The clean region with 15 % surroundings, float RGB."""
    ys, xs = np.nonzero(selection)
    h, w = truth.shape[:2]
    pad_x, pad_y = int(0.15 * (np.ptp(xs) + 1)) + 2, int(0.15 * (np.ptp(ys) + 1)) + 2
    x0, x1 = max(0, xs.min() - pad_x), min(w, xs.max() + 1 + pad_x)
    y0, y1 = max(0, ys.min() - pad_y), min(h, ys.max() + 1 + pad_y)
    return truth[y0:y1, x0:x1].astype(np.float32) / 255.0


def make_reference(truth: np.ndarray, selection: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The clean region (with some surroundings) as another photo of it: enlarged 1.2-2.5x,
    rotated up to 30 degrees, in mild perspective and under another light."""
    crop = _reference_window(truth, selection)
    ch, cw = crop.shape[:2]
    zoom = float(rng.uniform(1.2, 2.5))  # references are often sharper, larger photos
    angle = float(rng.uniform(-30, 30))
    # Output big enough for the rotated window, so the reference shows all of the region.
    rad = np.deg2rad(abs(angle))
    out_w = max(8, round(zoom * (cw * np.cos(rad) + ch * np.sin(rad))))
    out_h = max(8, round(zoom * (cw * np.sin(rad) + ch * np.cos(rad))))
    m = cv2.getRotationMatrix2D((cw / 2, ch / 2), angle, zoom)
    m[:, 2] += [(out_w - cw) / 2, (out_h - ch) / 2]
    similarity = np.vstack([m, [0, 0, 1]])
    corners = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], np.float32)

    jitter = rng.uniform(-0.04, 0.04, (4, 2)) * [out_w, out_h]  # mild perspective
    tilt = cv2.getPerspectiveTransform(corners, (corners + jitter).astype(np.float32))
    warped = cv2.warpPerspective(
        crop, tilt @ similarity, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    lit = _lighting(np.clip(warped, 0, 1), rng)
    return np.clip(np.rint(lit * 255), 0, 255).astype(np.uint8)


def unrelated_reference(source: Source, selection: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A window of the same size from a photo of another category: what a user picks by mistake."""
    others = [s for s in SOURCES if s.category != source.category and s.image != source.image]
    other = load_photo(others[int(rng.integers(len(others)))].image)
    ys, xs = np.nonzero(selection)
    h, w = min(other.shape[0], np.ptp(ys) + 1), min(other.shape[1], np.ptp(xs) + 1)
    y0 = int(rng.integers(0, other.shape[0] - h + 1))
    x0 = int(rng.integers(0, other.shape[1] - w + 1))
    window = other[y0 : y0 + h, x0 : x0 + w].astype(np.float32) / 255.0
    zoom = float(rng.uniform(1.2, 2.0))
    big = cv2.resize(window, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(np.clip(big, 0, 1) * 255), 0, 255).astype(np.uint8)


def make_case(index: int, seed: int = 0) -> EvalCase:
    """Built-in case ``index``; the same (index, seed) always gives the same arrays."""
    category, size, degradation, reference = case_plan(index)
    rng = np.random.default_rng([seed, index])
    sources = [s for s in SOURCES if s.category == category]
    source = sources[int(rng.integers(len(sources)))]
    truth = load_photo(source.image)
    h, w = truth.shape[:2]
    region = region_mask(h, w, SIZES[size], source.roi, rng)
    degraded = degrade(truth.astype(np.float32) / 255.0, degradation, rng)
    image = truth.copy()
    image[region] = np.clip(np.rint(degraded[region] * 255), 0, 255).astype(np.uint8)
    # The selection: the damaged region grown by a few percent of its size.
    grow = max(2, round(0.04 * math.sqrt(region.sum())))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    selection = cv2.dilate(region.astype(np.uint8), kernel) * np.uint8(255)
    references: list[np.ndarray] = []
    if reference is ReferenceKind.MATCH:
        references = [make_reference(truth, selection > 0, rng)]
    elif reference is ReferenceKind.UNRELATED:
        references = [unrelated_reference(source, selection > 0, rng)]
    ref_tag = {ReferenceKind.NONE: "noref", ReferenceKind.MATCH: "ref"}.get(reference, "unrelated")
    return EvalCase(
        name=f"{index:03d}-{category}-{source.image}-{degradation}-{size}-{ref_tag}",
        category=category,
        image=image,
        mask=selection,
        truth=truth.copy(),
        references=references,
        prompt=PROMPTS[category],
        degradation=degradation,
        size=size,
        source=source.image,
        seed=seed,
        reference_kind=reference.value,
    )


def builtin_cases(count: int, seed: int = 0) -> list[EvalCase]:
    """The first ``count`` built-in cases."""
    return [make_case(i, seed) for i in range(count)]


# -- a user's folder -------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def read_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 RGB (16-bit scaled down, alpha composited on white)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    if img.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{path}: only 8- and 16-bit images are supported")
    if img.ndim == 3:  # OpenCV's BGR(A) to RGB(A)
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return as_rgb8(img)


def read_mask(path: Path) -> np.ndarray:
    """A selection image as ``HxW`` uint8 (colour masks use their first channel)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot read mask {path}")
    if img.ndim == 3:
        img = img[:, :, 0]
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    return np.ascontiguousarray(img.astype(np.uint8))


def load_case_folder(folder: Path) -> EvalCase:
    """One case folder: input, mask, truth, optional reference*, optional case.json."""
    found = {stem: _find(folder, stem) for stem in ("input", "mask", "truth")}
    missing = [stem for stem, p in found.items() if p is None]
    if missing:
        raise DatasetError(f"{folder}: missing {', '.join(missing)} image (expected e.g. {missing[0]}.png)")
    paths = {stem: p for stem, p in found.items() if p is not None}
    image, mask, truth = read_rgb(paths["input"]), read_mask(paths["mask"]), read_rgb(paths["truth"])

    if mask.shape != image.shape[:2] or truth.shape != image.shape:
        raise DatasetError(
            f"{folder}: input {image.shape[1]}x{image.shape[0]}, mask {mask.shape[1]}x{mask.shape[0]} and "
            f"truth {truth.shape[1]}x{truth.shape[0]} must all have the same size"
        )
    if not mask.any():
        raise DatasetError(f"{folder}: the mask selects nothing")
    refs = sorted(
        (
            p
            for p in folder.iterdir()
            if p.stem.startswith("reference") and p.suffix.lower() in IMAGE_SUFFIXES
        ),
        key=lambda p: (p.stem != "reference", len(p.stem), p.stem),
    )
    meta = {}
    if (folder / "case.json").is_file():
        try:
            meta = json.loads((folder / "case.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{folder / 'case.json'}: not valid JSON ({exc})") from exc
    return EvalCase(
        name=folder.name,
        category=str(meta.get("category", "other")),
        image=image,
        mask=mask,
        truth=truth,
        references=[read_rgb(p) for p in refs],
        prompt=str(meta.get("prompt", "")),
        degradation=str(meta.get("degradation", "")),
        size=str(meta.get("size", "")),
        source=str(meta.get("source", folder.name)),
        reference_kind=str(meta.get("reference", "")),
    )


def load_folder(path: str | Path, count: int | None = None) -> list[EvalCase]:
    """Every case folder under ``path`` in name order (the first ``count`` when given)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root} has no case folders (see docs/eval.md for the layout)")
    if count is not None:
        folders = folders[:count]
    return [load_case_folder(f) for f in folders]


def save_case_folder(case: EvalCase, folder: str | Path) -> Path:
    """Write ``case`` in the folder layout :func:`load_case_folder` reads (round-trips exactly)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write = cv2.imwrite
    write(str(out / "input.png"), case.image[:, :, ::-1])
    write(str(out / "mask.png"), case.mask)
    write(str(out / "truth.png"), case.truth[:, :, ::-1])
    for i, ref in enumerate(case.references):
        write(str(out / (f"reference-{i}.png" if i else "reference.png")), ref[:, :, ::-1])
    meta = {
        "category": case.category,
        "prompt": case.prompt,
        "degradation": case.degradation,
        "size": case.size,
        "reference": case.reference_kind,
    }
    (out / "case.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
