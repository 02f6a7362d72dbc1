"""Tables, CSV/JSON and pictures of an evaluation.

Files are named ``eval-<engine>-<preset>...`` so that several engines and presets can share
one output folder and be compared side by side.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .baselines import METHODS
from .metrics import METRICS, PSNR_CAP
from .perceptual import PERCEPTUAL
from .runner import EvalResult

#: Every metric's (label, direction); direction 0 means "closest to 1 is best".
ALL_METRICS: dict[str, tuple[str, int]] = {**METRICS, **PERCEPTUAL, "seconds": ("s / region", -1)}
#: Columns of the per-category table and the bar chart: the ones that tell methods apart.
MAIN_METRICS = ["in_psnr", "in_ssim", "in_mse", "seam", "color_shift", "sharpness"]
DECIMALS = {
    "out_changed": 0,
    "out_psnr": 2,
    "out_ssim": 4,
    "in_psnr": 2,
    "in_ssim": 4,
    "in_mse": 5,
    "seam": 3,
    "color_shift": 2,
    "sharpness": 2,
    "lpips": 4,
    "dreamsim": 4,
    "dino": 4,
    "seconds": 2,
}
#: One colour per method, the same in every picture.
COLOURS = {
    "ours": "#1b9e77",
    "nothing": "#9e9e9e",
    "naive": "#d95f02",
    "overlay": "#7570b3",
    "nofocus": "#e7298a",
}


# -- aggregation -----------------------------------------------------------------------------


def summarize(
    rows: Iterable[dict[str, Any]], metrics: Sequence[str], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows grouped by ``keys``: mean of each metric (sum for changed pixels), case count."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(keys, key, strict=True))
        entry["cases"] = len(members)
        entry["errors"] = sum(1 for r in members if r.get("error"))
        for name in [*metrics, "seconds"]:
            values = np.array([r.get(name, np.nan) for r in members], dtype=np.float64)
            values = values[np.isfinite(values)]
            if not len(values):
                entry[name] = float("nan")
            elif name == "out_changed":
                entry[name] = int(values.sum())
            elif name == "sharpness":  # a ratio: average in log space (x2 and x0.5 cancel)
                entry[name] = float(np.exp(np.log(np.maximum(values, 1e-9)).mean()))
            else:
                entry[name] = float(values.mean())
        out.append(entry)
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(out, key=lambda e: tuple(order.get(e[k], 99) if k == "method" else e[k] for k in keys))


def gain_summary(
    rows: Iterable[dict[str, Any]], keys: Sequence[str], method: str = "ours"
) -> list[dict[str, Any]]:
    """``method``'s PSNR gain inside the selection over the damaged input, grouped by ``keys``:
    median, smallest and mean gain (dB) and how many references the engine refused."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["method"] == method and math.isfinite(row.get("gain", float("nan"))):
            groups[tuple(row[k] for k in keys)].append(row)
    out = []
    for key, members in sorted(groups.items()):
        gains = np.array([r["gain"] for r in members])
        entry: dict[str, Any] = dict(zip(keys, key, strict=True))
        entry.update(
            cases=len(members),
            median_gain=float(np.median(gains)),
            min_gain=float(gains.min()),
            mean_gain=float(gains.mean()),
            refused=sum(1 for r in members if str(r.get("reference_status", "")).startswith("rejected")),
        )
        out.append(entry)
    return out


def gain_table(entries: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """A markdown table of :func:`gain_summary` entries."""
    head = [*keys, "n", "median gain (dB)", "min gain (dB)", "mean gain (dB)", "reference refused"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        cells = [str(e[k]) for k in keys] + [str(e["cases"])]
        cells += [f"{e[name]:+.2f}" for name in ("median_gain", "min_gain", "mean_gain")]
        cells.append(str(e["refused"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if name in ("out_psnr", "in_psnr") and value >= PSNR_CAP:
        return "∞"
    return f"{value:.{DECIMALS.get(name, 3)}f}"


def _best(entries: list[dict[str, Any]], name: str) -> set[int]:
    """Indices of the best entries for metric ``name`` (ties all win)."""
    direction = ALL_METRICS[name][1]
    values = [e.get(name, float("nan")) for e in entries]
    finite = [(i, v) for i, v in enumerate(values) if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(finite) < 2:
        return set()
    key = (lambda v: -v) if direction > 0 else (lambda v: abs(v - 1)) if direction == 0 else (lambda v: v)
    best = min(key(v) for _, v in finite)
    return {i for i, v in finite if math.isclose(key(v), best, rel_tol=1e-9, abs_tol=1e-12)}


def markdown_table(entries: list[dict[str, Any]], metrics: Sequence[str], keys: Sequence[str]) -> str:
    """A GitHub markdown table, best value of each column in bold."""
    head = [*keys, "n"]
    head += [ALL_METRICS[m][0] for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # Best values are picked within each group of the leading keys (e.g. per category).
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        groups[tuple(e[k] for k in keys[:-1])].append(i)
    bold: dict[str, set[int]] = {m: set() for m in metrics}
    for idx in groups.values():
        for m in metrics:
            bold[m] |= {idx[j] for j in _best([entries[i] for i in idx], m)}
    for i, e in enumerate(entries):
        cells = [METHODS.get(e[k], e[k]) if k == "method" else str(e[k]) for k in keys] + [str(e["cases"])]
        for m in metrics:
            text = _fmt(m, e.get(m))
            cells.append(f"**{text}**" if i in bold[m] and m not in ("out_changed", "seconds") else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- files -----------------------------------------------------------------------------------


def _slug(result: EvalResult) -> str:
    return f"eval-{result.engine}-{result.preset}".replace("/", "_").replace(" ", "_")


def _write_csv(path: Path, entries: list[dict[str, Any]]) -> None:
    if not entries:
        path.write_text("", encoding="utf-8")
        return
    fields = list(dict.fromkeys(k for e in entries for k in e))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(entries)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


METRIC_NOTES = """\
- **changed px outside**: pixels outside the selection that differ from the input in any
  channel, summed over all cases (must be 0). PSNR/SSIM outside compare with the input; ∞ = identical.
- **PSNR / SSIM inside**, **masked MSE** ([0, 1] scale): the selection against the ground truth.
- **seam step**: along the selection edge, the jump of the error (result − truth) from just outside
  to just inside (local means, σ = 2 px), divided by the clean photo's own jump across that edge:
  0 = no step added; a patch whose tone differs from its surroundings scores high.
- **edge ΔE2000**: mean CIEDE2000 colour difference to the ground truth in the 6 px band just
  inside the selection edge (a colour step at the edge shows here).
- **sharpness**: high-frequency (Laplacian) energy inside the selection divided by the ground
  truth's: below 1 blurrier, above 1 over-sharpened or noisy; best = closest to 1. Averaged as a
  geometric mean, so read it per degradation: noise pushes it up, blur down.
- **s / region**: wall time of one refine (crop, engine, paste-back) for one case.
- Bold = best in its column (within each group in the per-category and per-degradation tables)."""


def write_report(result: EvalResult, out: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write tables, CSV/JSON and both pictures for ``result`` into ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    slug = _slug(result)
    metrics = list(result.metrics)
    overall = summarize(result.rows, metrics, ["method"])
    by_category = summarize(result.rows, metrics, ["category", "method"])
    by_degradation = summarize(result.rows, metrics, ["degradation", "method"])
    paths = {
        "markdown": out / f"{slug}.md",
        "json": out / f"{slug}.json",
        "summary_csv": out / f"{slug}-summary.csv",
        "categories_csv": out / f"{slug}-categories.csv",
        "cases_csv": out / f"{slug}-cases.csv",
    }
    cases = len({r["case"] for r in result.rows})
    with_ref = len({r["case"] for r in result.rows if r["reference"]})
    lines = [
        f"# {title or f'Evaluation: engine `{result.engine}`, preset `{result.preset}`'}",
        "",
        f"{cases} cases ({with_ref} with a reference), methods: "
        + ", ".join(f"{METHODS[m]} (`{m}`)" for m in result.methods)
        + ".",
        "",
        "## All cases",
        "",
        markdown_table(overall, [*metrics, "seconds"], ["method"]),
        "",
    ]
    for key, entries in (("category", by_category), ("degradation", by_degradation)):
        if len({e[key] for e in entries}) > 1:  # a user's set may not record degradations
            table = markdown_table(entries, [*MAIN_METRICS, "out_changed"], [key, "method"])
            lines += [f"## By {key}", "", table, ""]
    if "ours" in result.methods and any("gain" in r for r in result.rows):
        by_kind = gain_summary(result.rows, ["reference_kind"])
        by_family = gain_summary(result.rows, ["family", "reference_kind"])
        by_both = gain_summary(result.rows, ["degradation", "reference_kind"])
        lines += [
            "## Gain by reference",
            "",
            "PSNR inside the selection, Touchup's result against the damaged input (`none`: no reference; "
            "`match`: the clean region under another pose and light; `unrelated`: another photo, which "
            "must be refused and must not harm).",
            "",
            gain_table(by_kind, ["reference_kind"]),
            "",
            "## Gain by damage family",
            "",
            "`blur/downsample/jpeg`: damage made only of blur, downsampling and JPEG (alone or combined), "
            "which a reference-free restore can undo from measurements; `other`: erosion, lighting, noise.",
            "",
            gain_table(by_family, ["family", "reference_kind"]),
            "",
            "## Gain by degradation, with and without a reference",
            "",
            gain_table(by_both, ["degradation", "reference_kind"]),
            "",
        ]
    lines += ["## Metrics", "", METRIC_NOTES]
    if result.skipped:
        lines += ["", "## Skipped perceptual metrics", ""]
        lines += [f"- {PERCEPTUAL[name][0].split()[0]}: {why}" for name, why in result.skipped.items()]
    errors = [r for r in result.rows if r.get("error")]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- `{r['case']}` / {r['method']}: {r['error']}" for r in errors]
    paths["markdown"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_csv(paths["summary_csv"], overall)
    _write_csv(paths["categories_csv"], by_category)
    _write_csv(paths["cases_csv"], result.rows)
    payload = {
        "engine": result.engine,
        "preset": result.preset,
        "methods": {m: METHODS[m] for m in result.methods},
        "metrics": {
            m: {"label": ALL_METRICS[m][0], "better": ALL_METRICS[m][1]} for m in [*metrics, "seconds"]
        },
        "skipped": result.skipped,
        "summary": overall,
        "by_category": by_category,
        "by_degradation": by_degradation,
        "gain_by_reference": gain_summary(result.rows, ["reference_kind"]),
        "gain_by_family_and_reference": gain_summary(result.rows, ["family", "reference_kind"]),
        "gain_by_degradation_and_reference": gain_summary(result.rows, ["degradation", "reference_kind"]),
        "cases": result.rows,
    }
    paths["json"].write_text(json.dumps(_json_safe(payload), indent=1) + "\n", encoding="utf-8")
    try:
        import matplotlib
    except ImportError:
        return paths  # the caller says how to get the pictures
    matplotlib.use("Agg")
    if result.samples:
        paths["contact_sheet"] = contact_sheet(result, out / f"{slug}-contact.png")
    paths["chart"] = bar_chart(overall, result, out / f"{slug}-metrics.png")
    return paths


# -- pictures --------------------------------------------------------------------------------


def zoom_window(mask: np.ndarray, margin: float = 0.3, minimum: int = 32) -> tuple[slice, slice]:
    """A square window around the selection with some surroundings, clamped to the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape[:2]
    side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    side = min(max(minimum, round(side * (1 + 2 * margin))), h, w)
    cy, cx = (ys.min() + ys.max() + 1) // 2, (xs.min() + xs.max() + 1) // 2
    y0 = int(np.clip(cy - side // 2, 0, h - side))
    x0 = int(np.clip(cx - side // 2, 0, w - side))
    return slice(y0, y0 + side), slice(x0, x0 + side)


def _tile(img: np.ndarray, window: tuple[slice, slice], size: int) -> np.ndarray:
    crop = img[window]
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_NEAREST  # show real pixels
    return cv2.resize(crop, (size, size), interpolation=interp)


def contact_sheet(result: EvalResult, path: Path, tile: int = 200) -> Path:
    """input (selection outlined) | each method | ground truth, zoomed on each kept case."""
    import matplotlib.pyplot as plt

    methods = result.methods
    columns = ["input", *[m for m in methods if m != "nothing"], "truth"]
    rows_by_case = {(r["case"], r["method"]): r for r in result.rows}
    n_rows, n_cols = len(result.samples), len(columns)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.9 * n_cols, 2.15 * n_rows + 0.5), squeeze=False, dpi=110
    )
    for r, sample in enumerate(result.samples):
        case = sample.case
        window = zoom_window(case.mask)
        outline = case.image.copy()
        contours, _ = cv2.findContours(
            (case.mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        thickness = max(1, round((window[0].stop - window[0].start) / tile))
        cv2.drawContours(outline, contours, -1, (255, 40, 40), thickness)
        for c, col in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == "input":
                img, label = (
                    outline,
                    f"{case.category}, {case.degradation}\n{case.size}{', ref' if case.has_reference else ''}",
                )
            elif col == "truth":
                img, label = case.truth, ""
            else:
                img = sample.outputs.get(col)
                row = rows_by_case.get((case.name, col), {})
                label = f"PSNR {_fmt('in_psnr', row.get('in_psnr'))}  ΔE {_fmt('color_shift', row.get('color_shift'))}"
            if img is None:
                ax.axis("off")
                continue
            ax.imshow(_tile(img, window, tile))
            ax.set_xlabel(label, fontsize=7)
            if r == 0:
                title = {"input": "input", "truth": "ground truth"}.get(col, METHODS.get(col, col))
                ax.set_title(title.replace(" (", "\n("), fontsize=8)
    fig.suptitle(f"engine {result.engine} / {result.preset}: zoom on the selection", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def bar_chart(overall: list[dict[str, Any]], result: EvalResult, path: Path) -> Path:
    """One panel per main metric, one bar per method, values printed on the bars."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4), dpi=100)
    methods = [e["method"] for e in overall]
    for ax, name in zip(axes.flat, MAIN_METRICS, strict=True):
        values = [e.get(name, float("nan")) for e in overall]
        bars = ax.bar(range(len(methods)), values, color=[COLOURS.get(m, "#666666") for m in methods])
        label, direction = ALL_METRICS[name]
        hint = {1: "higher is better", -1: "lower is better", 0: "1 is best"}[direction]
        ax.set_title(f"{label}\n({hint})", fontsize=9)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([m for m in methods], fontsize=8)
        if direction == 0:
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        for bar, v in zip(bars, values, strict=True):
            if math.isfinite(v):
                ax.annotate(
                    _fmt(name, v),
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        finite = [v for v in values if math.isfinite(v)]
        if name in ("in_psnr", "in_ssim") and finite:  # zoom in: differences are small
            lo, hi = min(finite), max(finite)
            ax.set_ylim(max(0.0, lo - (hi - lo) * 1.5 - 1e-3), hi + (hi - lo) * 0.5 + 1e-3)
    cases = len({r["case"] for r in result.rows})
    fig.suptitle(f"engine {result.engine} / {result.preset}: {cases} cases, mean per method", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
