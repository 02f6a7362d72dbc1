"""Variants in the GIMP 3 GUI (under Xvfb): one layer group, one undo step, Repeat keeps the count.

One GIMP launch per release does everything (``gimp_variants_driver.py``): a single-variant
refine (one plain layer, as before variants existed), a refine with three variants from the
``seeded`` test engine (a seed-dependent change, so each variant differs) through the dialog's
OK, Ctrl+Z pressed in
GIMP's window the way a user undoes, and Filters > Repeat. The assertions are what a user
notices: the layer tree, which variant shows, each variant's pixels, the untouched layers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BackendProcess
from editor_releases import GIMP
from gimp_harness import GimpChroot, RecordingProxy, open_gimp
from test_gimp_plugin import SELECTION, H, W, damaged, textured, to_dtype

from touchup.shared.client import Client
from touchup.shared.texts import layer_name, variant_layer_name, variants_group_name

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

DRIVER = Path(__file__).with_name("gimp_variants_driver.py")
N = 3
SEED = 5
# Seeds of their own: GIMP renames a layer whose name is taken.
CANCELLED_SEED = 20
DOOMED_SEED = 40
INSTRUCTION = "make the stripes gold"
FEATHER = 6


@pytest.fixture(scope="module", params=GIMP, ids=[r.id for r in GIMP])
def gimp(request: pytest.FixtureRequest) -> GimpChroot:
    g = open_gimp(release=request.param)
    yield g
    g.cleanup()


def _sticker() -> np.ndarray:
    """An RGBA layer above the photo: opaque on its left third, transparent elsewhere, so the
    selection (in the middle) shows the photo and the sticker is an existing layer to keep."""
    img = np.zeros((H, W, 4), np.uint8)
    img[:, : W // 3] = (200, 40, 40, 255)
    return img


def _rgba(img: np.ndarray) -> np.ndarray:
    return np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])


def _after_first_variant(client: Client, other_than: str | None = None) -> str | None:
    """Wait until the backend computes a job's second variant (the first one was sent), a job
    other than ``other_than``; returns that job's id (None: none came)."""
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        running = client.status()["queue"]["running"]
        if running and running.get("job") != other_than and int(running.get("variant") or 0) >= 1:
            return str(running["job"])
        time.sleep(0.05)
    return None


def _interrupt(gimp: GimpChroot, slow: BackendProcess, seen: dict[str, Any]) -> None:
    """First cancel the job the way GIMP's Cancel does (it kills the plug-in), then, in the
    next job, kill the backend; each once the job's first variant was sent. The next job is
    told apart by its id: the backend may still be finishing the cancelled one when it starts."""
    with slow.client() as client:
        cancelled = _after_first_variant(client)
        if cancelled is None:
            return
        seen["cancelled"] = gimp.plugin_pids()
        for pid in seen["cancelled"]:
            os.kill(pid, signal.SIGKILL)
        if _after_first_variant(client, other_than=cancelled) is not None:
            slow.proc.kill()
            seen["doomed"] = True


@pytest.fixture(scope="module")
def run(gimp: GimpChroot, backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    host, _ = gimp.case_dir("variants")
    (host / "input.raw").write_bytes(_rgba(to_dtype(damaged(textured(3)), "u8")).tobytes())
    (host / "sticker.raw").write_bytes(_sticker().tobytes())
    proxy = RecordingProxy(backend)
    common = {"endpoint": proxy.endpoint, "preset": "seeded", "seed": SEED, "feather": 4}
    spec = {
        "width": W,
        "height": H,
        "input_raw": "input.raw",
        "sticker_raw": "sticker.raw",
        "ellipse": list(SELECTION),
        "feather": FEATHER,
        "single_args": {**common, "instruction": "just one", "variants": 1},
        "args": {**common, "instruction": INSTRUCTION, "variants": N},
    }
    # Slow steps (6 x 0.3 s per variant), so that a job can be interrupted mid-way.
    slow = BackendProcess(tmp_path_factory.mktemp("slow"), engines={"seeded": {"step_s": 0.3}})
    for case, seed in (("cancelled", CANCELLED_SEED), ("doomed", DOOMED_SEED)):
        spec[f"{case}_args"] = {**common, "endpoint": slow.endpoint, "instruction": case, "variants": N,
                                "seed": seed}  # fmt: skip
    seen: dict[str, Any] = {}
    killer = threading.Thread(target=_interrupt, args=(gimp, slow, seen), daemon=True)
    killer.start()
    try:
        [r], output = gimp.run("variants", spec, driver=DRIVER, gui=True)
    finally:
        proxy.close()
        slow.stop()
    killer.join(5)
    assert "error" not in r, r["error"]
    assert "watch_error" not in r, r["watch_error"]
    assert "Traceback" not in output, output[-4000:]
    yield {"r": r, "host": host, "requests": proxy.refines(), "seen": seen}


def _raw(host: Path, name: str, size: tuple[int, int] = (W, H), channels: int = 4) -> np.ndarray:
    return np.frombuffer((host / name).read_bytes(), np.uint8).reshape(size[1], size[0], channels)


def _names(tree: list[dict[str, Any]]) -> list[str]:
    return [node["name"] for node in tree]


def _mask(host: Path) -> np.ndarray:
    return _raw(host, "selection.raw", channels=1)[..., 0]


def test_one_variant_is_one_plain_layer(run: dict[str, Any]) -> None:
    r = run["r"]
    # Each run asked for the count it was given; Repeat asked for the dialog's count again.
    assert [h["params"].get("variants") for h in run["requests"]] == [1, N, N]
    assert r["single"][0] == "success", r["single"]
    single = layer_name("just one")
    assert _names(r["after_single"]) == ["Sticker", single, "Background"]
    assert "children" not in r["after_single"][1], "one variant must not make a group"


def test_variants_are_one_group_above_the_active_layer(run: dict[str, Any]) -> None:
    r = run["r"]
    assert r["several"][0] == "success", r["several"]
    group = variants_group_name(INSTRUCTION)
    assert _names(r["after_several"]) == ["Sticker", layer_name("just one"), group, "Background"]
    node = r["after_several"][2]
    # The variants in index order, each named with the seed that makes it again; the first
    # one shows, the others wait hidden.
    assert [c["name"] for c in node["children"]] == [variant_layer_name(i, N, SEED + i) for i in range(N)]
    assert [c["visible"] for c in node["children"]] == [True] + [False] * (N - 1)
    assert r["selected_after_several"] == [node["children"][0]["name"]], "the shown variant is selected"


def test_each_variant_changes_only_the_selection(run: dict[str, Any]) -> None:
    r, host = run["r"], run["host"]
    mask = _mask(host)
    inside = []
    for i, layer in enumerate(r["several_layers"]):
        (x, y), (lw, lh) = layer["offsets"], layer["size"]
        pixels = _raw(host, f"several.variant{i}.raw", (lw, lh))
        local = mask[y : y + lh, x : x + lw]
        # Transparent wherever nothing is selected: the image there stays exactly as it was.
        assert (pixels[..., 3][local == 0] == 0).all(), f"variant {i} covers pixels outside the selection"
        assert (pixels[..., 3] == 255).any(), f"variant {i} covers nothing"
        full = np.zeros((H, W, 4), np.uint8)
        full[y : y + lh, x : x + lw] = pixels
        inside.append(full[..., :3][mask == 255])
    # Each seed gives a different candidate.
    for i in range(N):
        for j in range(i + 1, N):
            assert not np.array_equal(inside[i], inside[j]), f"variants {i} and {j} are identical"

    # The composite (first variant showing) differs only inside the selection.
    before, after = _raw(host, "before.raw"), _raw(host, "after.raw")
    assert np.array_equal(after[mask == 0], before[mask == 0])
    assert not np.array_equal(after[mask > 0], before[mask > 0])


def test_existing_layers_are_untouched(run: dict[str, Any]) -> None:
    host = run["host"]
    for name in ("Background", "Sticker"):
        assert np.array_equal(_raw(host, f"{name}.before.raw"), _raw(host, f"{name}.after.raw")), name


def test_one_undo_removes_the_group_and_every_variant(run: dict[str, Any]) -> None:
    r = run["r"]
    assert r["undo_window"], "Ctrl+Z did not change the image"
    # Exactly the state after the single refine: the group and its variants are gone, the
    # earlier layer stays.
    assert r["after_undo"] == r["after_single"]
    assert not any("children" in node for node in r["after_undo"])


def test_repeat_keeps_the_variant_count(run: dict[str, Any]) -> None:
    r, host = run["r"], run["host"]
    assert r["repeat"][0] == "success", r["repeat"]
    assert r["after_repeat"][:2] == r["after_single"][:2]
    node = r["after_repeat"][2]
    assert len(node.get("children", [])) == N, r["after_repeat"]
    # Same seeds, same pixels: the repeated variants equal the first run's.
    for i in range(N):
        assert np.array_equal(_raw(host, f"repeat.variant{i}.raw", tuple(r["repeat_layers"][i]["size"])),
                              _raw(host, f"several.variant{i}.raw", tuple(r["several_layers"][i]["size"])))  # fmt: skip
    # Each variant shown alone leaves everything outside the selection as it was, and shows
    # its own candidate inside it.
    mask = _mask(host)
    reference = _raw(host, "after_undo.raw")
    alone = [_raw(host, f"repeat.alone{i}.raw") for i in range(N)]
    for i in range(N):
        assert np.array_equal(alone[i][mask == 0], reference[mask == 0]), f"variant {i} alone"
        assert not np.array_equal(alone[i][mask == 255], reference[mask == 255]), f"variant {i} alone"
    for i in range(1, N):
        assert not np.array_equal(alone[i][mask == 255], alone[0][mask == 255])


def _kept_first_variant_as_one_undo_step(r: dict[str, Any], case: str, seed: int) -> None:
    """The first variant arrived before the job was interrupted: it stays in its group, shown,
    and one Ctrl+Z removes it, group and all."""
    assert _names(r[f"after_{case}"]) == [
        *_names(r[f"before_{case}"])[:3],
        variants_group_name(case),
        "Background",
    ]
    assert r[f"after_{case}"][3]["children"] == [{"name": variant_layer_name(0, N, seed), "visible": True}]
    assert r[f"{case}_undo_window"], "Ctrl+Z did not change the image"
    assert r[f"after_{case}_undo"] == r[f"before_{case}"]


def test_cancelling_after_the_first_variant_leaves_the_image_as_it_was(run: dict[str, Any]) -> None:
    """GIMP's Cancel ends the plug-in: the variants are inserted only when the job ends, so a
    cancelled refine adds nothing, not half a group (and never held an undo step open)."""
    r = run["r"]
    assert len(run["seen"].get("cancelled") or []) == 1, run["seen"]
    assert r["cancelled"][0] != "success", r["cancelled"]
    assert r["after_cancelled"] == r["before_cancelled"]


def test_a_backend_dying_mid_job_keeps_the_finished_variant_as_one_undo_step(run: dict[str, Any]) -> None:
    r = run["r"]
    assert run["seen"].get("doomed"), "the backend was never seen computing the second variant"
    status, message, _seconds = r["doomed"]
    assert status == "execution-error", r["doomed"]
    assert "not running" in message and message.endswith(
        "The variant that finished before that stays in the image."
    )
    _kept_first_variant_as_one_undo_step(r, "doomed", DOOMED_SEED)
