"""Registering a reference image onto the focus crop, and deciding whether to trust it.

The crop's selected region is the broken part, so registration leans on what is reliable: the
unselected context around it at every scale, and the region's own coarse structure (large-scale
SIFT blobs survive blur and blocking; ECC on low-passed images compares low frequencies only).
A reference is accepted only when every check passes -- enough RANSAC inliers, a plausible
transform (bounded scale change, shear and perspective), full coverage of the selection, and
good agreement of the warped reference with the region's low frequencies and the context. A
rejected reference costs nothing: the engine falls back to reference-free restoration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .cancel import Checkpoint, never

#: The final, sub-pixel ECC pass runs on the crop at up to this many pixels (a third of a pixel
#: there is still a fraction of a pixel of the photo, which is what the paste-back sees).
FINE_AREA = 640 * 640
#: ECC iterations in all, and per burst between cancellation checks.
ECC_ITERATIONS, ECC_BURST = 60, 10
#: A burst that moves no corner of the image by more than this (px) ends the refinement.
ECC_SETTLED = 0.01
#: Registration runs on images of about this many pixels (the crop was upsampled for the
#: engine; finding the transform does not need every one of those pixels).
REGISTRATION_AREA = 320 * 320
#: References are matched at up to this many pixels (the crop at REGISTRATION_AREA: finer
#: reference features would have no counterpart); the fine pass uses the full reference.
MAX_REFERENCE_AREA = 768 * 768
RATIO_TEST = 0.8
MIN_INLIERS = 15
MIN_INLIER_RATIO = 0.15
#: Plausibility: largest anisotropy of the local Jacobian (shear / aspect change) ...
MAX_ANISOTROPY = 1.4
#: ... largest variation of the local scale across the region (perspective) ...
MAX_SCALE_VARIATION = 1.5
#: ... and the region-to-reference scale range.
SCALE_RANGE = (1 / 12, 12.0)
MIN_COVERAGE = 0.97
#: Agreement of the warped, tone-matched reference with the crop.
MIN_REGION_NCC = 0.6
MIN_CONTEXT_NCC = 0.5
#: Damage that moves the region's low frequencies too (strokes eroded into the background)
#: lowers its agreement; a reference that explains textured context this well is still the
#: right one, down to this region agreement.
#: (Only when the reference shows about as much structure in the region as the photo does.)
STRONG_CONTEXT_NCC, MIN_REGION_NCC_STRONG_CONTEXT, MIN_STRUCTURE = 0.8, 0.5, 0.7
#: Context whose grey standard deviation is below this is too flat to judge agreement by.
FLAT_CONTEXT_STD = 0.02


@dataclass
class Registration:
    """The outcome of registering one reference. ``homography`` maps crop pixel coordinates
    to reference pixel coordinates (full resolution of both)."""

    ok: bool
    reason: str = ""
    homography: np.ndarray | None = None
    model: str = ""
    inliers: int = 0
    matches: int = 0
    score: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "ok" if self.ok else f"rejected: {self.reason}",
            "model": self.model,
            "inliers": self.inliers,
            "matches": self.matches,
        }
        out.update({k: round(float(v), 4) for k, v in self.metrics.items()})
        return out


def gray8(img: np.ndarray) -> np.ndarray:
    """uint8 luma of a float RGB image in [0, 1]."""
    g = cv2.cvtColor(np.clip(img, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY)
    return np.clip(np.rint(g * 255), 0, 255).astype(np.uint8)


def resize_map(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """The 3x3 map from pixel coordinates of an image of size ``src`` (w, h) to those of its
    ``cv2.resize`` to ``dst``. Pixel centres, not corners, scale: a bare ``diag(s, s, 1)``
    would misplace everything by half a pixel times (1 - s), a visible shift on fine detail."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _scale_to_area(img: np.ndarray, area: int) -> tuple[np.ndarray, np.ndarray]:
    """``img`` shrunk (never enlarged) to about ``area`` pixels, and the map of its pixel
    coordinates onto the shrunk image's."""
    h, w = img.shape[:2]
    s = min(1.0, float(np.sqrt(area / max(h * w, 1))))
    if s >= 0.999:
        return img, np.eye(3)
    size = (max(8, round(w * s)), max(8, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), resize_map((w, h), size)


def _fit_models(src: np.ndarray, dst: np.ndarray, threshold: float) -> list[tuple[str, np.ndarray, int]]:
    """Similarity, affine and homography fits (RANSAC) of ``src -> dst``; (name, H, inliers)."""
    fits: list[tuple[str, np.ndarray, int]] = []
    kw: dict[str, Any] = {
        "method": cv2.RANSAC,
        "ransacReprojThreshold": threshold,
        "maxIters": 4000,
        "confidence": 0.999,
    }
    for name, fn in (("similarity", cv2.estimateAffinePartial2D), ("affine", cv2.estimateAffine2D)):
        m, inl = fn(src, dst, **kw)
        if m is not None and inl is not None:
            fits.append((name, np.vstack([m, [0, 0, 1]]), int(inl.sum())))
    if len(src) >= 8:
        h, inl = cv2.findHomography(src, dst, cv2.RANSAC, threshold, maxIters=4000, confidence=0.999)
        if h is not None and inl is not None:
            fits.append(("homography", h / h[2, 2], int(inl.sum())))
    return fits


def _pick_model(fits: list[tuple[str, np.ndarray, int]]) -> tuple[str, np.ndarray, int] | None:
    """The simplest model that explains nearly as many matches as the best one."""
    if not fits:
        return None
    best = max(f[2] for f in fits)
    for fit in fits:  # ordered simplest first
        if fit[2] >= 0.92 * best:
            return fit
    return fits[-1]


def jacobian(h: np.ndarray, x: float, y: float) -> np.ndarray:
    """Local 2x2 Jacobian of the projective map ``h`` at (x, y)."""
    p = h @ np.array([x, y, 1.0])
    w = p[2]
    j = np.empty((2, 2))
    for i in range(2):
        j[i, 0] = (h[i, 0] * w - p[i] * h[2, 0]) / (w * w)
        j[i, 1] = (h[i, 1] * w - p[i] * h[2, 1]) / (w * w)
    return j


def local_scale(h: np.ndarray, x: float, y: float) -> float:
    """How many reference pixels one crop pixel spans at (x, y) under ``h`` (linear factor)."""
    return float(np.sqrt(abs(np.linalg.det(jacobian(h, x, y)))))


def plausibility(h: np.ndarray, box: tuple[int, int, int, int]) -> tuple[str, dict[str, float]]:
    """Why the map ``h`` (crop -> reference) is implausible over ``box`` (x, y, w, h); "" if fine."""
    x, y, bw, bh = box
    points = [(x + bw / 2, y + bh / 2), (x, y), (x + bw, y), (x, y + bh), (x + bw, y + bh)]
    dets, aniso = [], []
    for px, py in points:
        p = h @ np.array([px, py, 1.0])
        if p[2] <= 1e-9:
            return "transform folds the region", {}
        j = jacobian(h, px, py)
        sv = np.linalg.svd(j, compute_uv=False)
        det = float(np.linalg.det(j))
        if det <= 0:
            return "transform mirrors the region", {}
        dets.append(np.sqrt(det))
        aniso.append(sv[0] / max(sv[1], 1e-12))
    scale = dets[0]
    variation = max(dets) / max(min(dets), 1e-12)
    metrics = {"scale": scale, "anisotropy": max(aniso), "scale_variation": variation}
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return f"implausible scale {scale:.3g}", metrics
    if variation > MAX_SCALE_VARIATION:
        return f"implausible perspective {variation:.2f}", metrics
    if max(aniso) > MAX_ANISOTROPY:
        return f"implausible shear/aspect {max(aniso):.2f}", metrics
    return "", metrics


def warp_to_crop(
    ref: np.ndarray, h: np.ndarray, size: tuple[int, int], interp: int = cv2.INTER_LINEAR
) -> tuple[np.ndarray, np.ndarray]:
    """``ref`` resampled onto the crop grid (``size`` = (w, h)) and where it is valid (float)."""
    flags = interp | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(ref, h, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    ones = np.ones(ref.shape[:2], np.float32)
    valid = cv2.warpPerspective(ones, h, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return warped, valid


def _ncc(a: np.ndarray, b: np.ndarray, sel: np.ndarray) -> tuple[float, float]:
    """Normalised cross-correlation of ``a`` and ``b`` over ``sel``, and ``a``'s std there."""
    if sel.sum() < 16:
        return 0.0, 0.0
    x, y = a[sel].astype(np.float64), b[sel].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    sx, sy = np.sqrt((x * x).mean()), np.sqrt((y * y).mean())
    if sx < 1e-6 or sy < 1e-6:
        return 0.0, float(sx)
    return float((x * y).mean() / (sx * sy)), float(sx)


def _ecc_refine(
    template: np.ndarray,
    warped: np.ndarray,
    sel: np.ndarray,
    check: Checkpoint,
    eps: float = 1e-5,
    blur: int = 5,
) -> np.ndarray | None:
    """A residual homography aligning ``warped`` to ``template`` (ECC, photometric-invariant),
    or None when ECC does not converge.

    Run in short bursts of iterations, each starting from the last one's warp, with a
    cancellation check between them: one full run on a large crop takes over a second.
    """
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_BURST, eps)
    residual: np.ndarray = np.eye(3, dtype=np.float32)
    template, warped = template.astype(np.float32), warped.astype(np.float32)
    sel8 = sel.astype(np.uint8)
    h, w = template.shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T
    for _ in range(ECC_ITERATIONS // ECC_BURST):
        check()
        before = residual.astype(np.float64)
        try:
            _, residual = cv2.findTransformECC(
                template, warped, residual, cv2.MOTION_HOMOGRAPHY, criteria, sel8, blur
            )
        except cv2.error:
            return None
        a, b = before @ corners, residual.astype(np.float64) @ corners
        if np.abs(a[:2] / a[2] - b[:2] / b[2]).max() < ECC_SETTLED:  # converged in the burst
            break
    return residual.astype(np.float64)


class Registrar:
    """Registers references onto one crop; computes the crop's features once."""

    def __init__(self, crop: np.ndarray, mask: np.ndarray, check: Checkpoint = never) -> None:
        self.check = check
        self.crop = crop
        self.mask = mask
        small, self.to_small = _scale_to_area(crop, REGISTRATION_AREA)
        self.scale = float(self.to_small[0, 0])
        self.small_gray = gray8(small)
        sh, sw = self.small_gray.shape
        self.small_mask = cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA) > 0.0
        self.sift = cv2.SIFT_create(nfeatures=3000)  # type: ignore[attr-defined]  # missing from OpenCV's stubs
        check()
        self.keypoints, self.descriptors = self.sift.detectAndCompute(self.small_gray, None)
        check()
        ys, xs = np.nonzero(self.small_mask)
        self.box = (
            (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
            if len(xs)
            else (0, 0, sw, sh)
        )
        # Low-pass scale: detail below ~1/40 of the region is what the damage destroyed.
        self.sigma = max(1.5, max(self.box[2], self.box[3]) / 40.0)

    def register(self, ref: np.ndarray) -> Registration:
        ref_small, ref_to_small = _scale_to_area(ref, MAX_REFERENCE_AREA)
        ref_gray = gray8(ref_small)
        self.check()
        kps, desc = self.sift.detectAndCompute(ref_gray, None)
        self.check()
        if self.descriptors is None or desc is None or len(kps) < 4 or len(self.keypoints) < 4:
            return Registration(False, "no features to match")
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(self.descriptors, desc, k=2)
        good = [m for m, *rest in pairs if rest and m.distance < RATIO_TEST * rest[0].distance]
        if len(good) < MIN_INLIERS:
            return Registration(False, f"too few matches ({len(good)})", matches=len(good))
        src = np.array([self.keypoints[m.queryIdx].pt for m in good], np.float32)
        dst = np.array([kps[m.trainIdx].pt for m in good], np.float32)

        threshold = 3.0 * max(1.0, ref_gray.shape[1] / self.small_gray.shape[1])
        picked = _pick_model(_fit_models(src, dst, threshold))
        if picked is None:
            return Registration(False, "no transform fits the matches", matches=len(good))
        model, h_small, inliers = picked
        reg = Registration(False, model=model, inliers=inliers, matches=len(good))
        if inliers < MIN_INLIERS or inliers < MIN_INLIER_RATIO * len(good):
            reg.reason = f"too few inliers ({inliers} of {len(good)})"
            return reg
        why, metrics = plausibility(h_small, self.box)
        reg.metrics.update(metrics)
        if why:
            reg.reason = why
            return reg
        self.check()
        h_small = self._refine(ref_gray, h_small, reg)
        self.check()
        return self._validate(ref, ref_gray, h_small, ref_to_small, reg)

    def _refine(self, ref_gray: np.ndarray, h_small: np.ndarray, reg: Registration) -> np.ndarray:
        """ECC on low-passed grey images: context at all scales, the region by its low
        frequencies. Kept only if it stays plausible and correlates better."""
        size = self.small_gray.shape[::-1]
        warped, valid = warp_to_crop(ref_gray.astype(np.float32), h_small, size)
        template = cv2.GaussianBlur(self.small_gray.astype(np.float32), (0, 0), 1.0)
        warped = cv2.GaussianBlur(warped, (0, 0), 1.0)
        sel = valid > 0.99
        before, _ = _ncc(template, warped, sel)
        residual = _ecc_refine(template, warped, sel, self.check)
        if residual is None:
            return h_small
        candidate = h_small @ residual
        candidate /= candidate[2, 2]
        if plausibility(candidate, self.box)[0]:
            return h_small
        w2, v2 = warp_to_crop(ref_gray.astype(np.float32), candidate, size)
        after, _ = _ncc(template, cv2.GaussianBlur(w2, (0, 0), 1.0), sel & (v2 > 0.99))
        if after > before:
            reg.model += "+ecc"
            return candidate
        return h_small

    def _validate(
        self,
        ref: np.ndarray,
        ref_gray: np.ndarray,
        h_small: np.ndarray,
        ref_to_small: np.ndarray,
        reg: Registration,
    ) -> Registration:
        """Coverage and agreement checks (``ref_gray``: the reference as matched, ``ref_to_small``
        the map from its full size to that); on success the full-resolution homography."""
        size = self.small_gray.shape[::-1]
        warped, valid = warp_to_crop(ref_gray.astype(np.float32), h_small, size)
        inside = valid > 0.99
        region = self.small_mask
        coverage = float((region & inside).sum() / max(region.sum(), 1))
        reg.metrics["coverage"] = coverage
        if coverage < MIN_COVERAGE:
            reg.reason = f"reference covers only {coverage:.0%} of the selection"
            return reg
        crop_f = self.small_gray.astype(np.float32) / 255
        ref_f = warped / 255
        low = lambda im: cv2.GaussianBlur(im, (0, 0), self.sigma)  # noqa: E731
        region_ncc, crop_std = _ncc(low(crop_f), low(ref_f), region & inside)
        _, ref_std = _ncc(low(ref_f), low(crop_f), region & inside)
        context = ~cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & inside
        context_ncc, context_std = _ncc(crop_f, ref_f, context)
        # Structure the reference shows in the region, relative to the photo's: near 1 when both
        # show the same kind of content, near 0 when the reference's region is painted over.
        structure = ref_std / max(crop_std, 1e-6)
        reg.metrics.update(region_ncc=region_ncc, context_ncc=context_ncc, structure=structure)
        textured = context.sum() >= 64 and context_std >= FLAT_CONTEXT_STD
        strong = textured and context_ncc >= STRONG_CONTEXT_NCC and structure >= MIN_STRUCTURE
        if region_ncc < (MIN_REGION_NCC_STRONG_CONTEXT if strong else MIN_REGION_NCC):
            reg.reason = f"poor agreement with the region's low frequencies (ncc {region_ncc:.2f})"
            return reg
        if textured and context_ncc < MIN_CONTEXT_NCC:
            reg.reason = f"poor agreement with the context (ncc {context_ncc:.2f})"
            return reg
        # crop(full) -> crop(small) -> ref(small) -> ref(full)
        h_full = np.linalg.inv(ref_to_small) @ h_small @ self.to_small
        self.check()
        reg.homography = self._refine_fine(ref, h_full / h_full[2, 2], reg)
        reg.ok = True
        reg.score = region_ncc + 0.5 * max(context_ncc, 0.0) + 0.001 * reg.inliers
        return reg

    def _refine_fine(self, ref: np.ndarray, h_full: np.ndarray, reg: Registration) -> np.ndarray:
        """Sub-pixel ECC at (nearly) the crop's own resolution, on the unselected context only:
        there the original is intact, so it is the one place where fine detail must line up.
        Falls back to the whole covered crop when the context is too small or too flat, and
        keeps the coarser estimate when ECC fails or wanders off."""
        h, w = self.crop.shape[:2]
        s = min(1.0, float(np.sqrt(FINE_AREA / (h * w))))
        size = (max(8, round(w * s)), max(8, round(h * s)))
        to_small = resize_map((w, h), size)
        h_fine = h_full @ np.linalg.inv(to_small)
        crop_g = gray8(cv2.resize(self.crop, size, interpolation=cv2.INTER_AREA)).astype(np.float32)
        ref_g = gray8(ref).astype(np.float32)
        warped, valid = warp_to_crop(ref_g, h_fine, size)
        covered = valid > 0.99
        region = cv2.resize(self.mask, size, interpolation=cv2.INTER_LINEAR) > 0
        near = cv2.dilate(region.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        context = covered & ~near
        _, context_std = _ncc(crop_g / 255, warped / 255, context)
        sel = context if context.sum() >= 2000 and context_std >= FLAT_CONTEXT_STD else covered
        self.check()
        residual = _ecc_refine(crop_g, warped, sel, self.check, eps=1e-6, blur=1)
        self.check()
        if residual is None:
            return h_full
        candidate = h_fine @ residual @ to_small
        candidate /= candidate[2, 2]
        # A refinement moves the region by a fraction of a pixel of the coarse grid, not more.
        cx, cy = w / 2, h / 2
        p0, p1 = h_full @ [cx, cy, 1.0], candidate @ [cx, cy, 1.0]
        shift = float(np.hypot(*(p0[:2] / p0[2] - p1[:2] / p1[2])))
        limit = 3.0 * local_scale(h_full, cx, cy) / self.scale
        if shift > limit or plausibility(candidate, (0, 0, w, h))[0]:
            return h_full
        # The context can pull the fit off the region (a reference whose surroundings differ
        # from the photo's): keep the refinement only if the region's own low frequencies,
        # which the damage spares, agree with it at least as well.
        # (Half the validation low-pass: coarse enough to ignore the damage, fine enough to see
        # a shift of a few pixels.)
        sigma = 0.5 * self.sigma * size[0] / self.small_gray.shape[1]
        low = lambda im: cv2.GaussianBlur(im, (0, 0), sigma)  # noqa: E731
        fine_warped, fine_valid = warp_to_crop(ref_g, h_fine @ residual, size)
        sel = region & covered & (fine_valid > 0.99)
        before, _ = _ncc(low(crop_g), low(warped), sel)
        after, _ = _ncc(low(crop_g), low(fine_warped), sel)
        reg.metrics.update(fine_region_ncc=after)
        if after < before:
            return h_full
        reg.model += "+fine"
        return candidate
