"""Variants: one request, N results with consecutive seeds, each sent as soon as it is done.

The backend tests run a real ``touchup serve`` with the ``seeded`` test engine (a seed-dependent
colour shift of the selection, with progress steps and previews), so what they check is what an
editor receives: the messages in order, their pixels, the seeds, and what a cancel leaves.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_server import make_mask, make_tile, request

from touchup.backend.engines import create_engine
from touchup.backend.engines.base import RefineParams
from touchup.backend.pipeline.imaging import frame_to_array
from touchup.backend.pipeline.refine import RefineJob, run_refine, run_variants
from touchup.shared.client import BackendError
from touchup.shared.protocol import ErrorCode, Kind, Message
from touchup.shared.request import variant_seed
from touchup.shared.result import SentTile, checked_result

SEEDED = {"engine": "seeded"}


def layer_of(msg: Message) -> np.ndarray:
    frame = msg.frame("result")
    assert frame is not None
    return frame_to_array(frame)


def test_variant_seeds_are_consecutive_and_wrap():
    assert [variant_seed(10, i) for i in range(3)] == [10, 11, 12]
    assert variant_seed(2**63 - 1, 1) == 0


# -- in process: the pipeline ------------------------------------------------------------------


def test_every_variant_keeps_outside_pixels_and_equals_its_seed_alone():
    source, mask = make_tile(seed=4), make_mask()
    engine = create_engine("seeded", {"step_s": 0})
    job = RefineJob(source, mask.astype(np.float32) / 255, params=RefineParams(seed=40, variants=3))
    delivered: list[int] = []
    outcomes = run_variants(job, engine, on_variant=lambda o: delivered.append(o.variant))
    assert delivered == [0, 1, 2] and [o.seed for o in outcomes] == [40, 41, 42]
    outside = mask == 0
    for outcome in outcomes:
        np.testing.assert_array_equal(outcome.composite[outside], source[outside])
        assert not outcome.layer[:, :, 3][outside].any()
        alone = run_refine(RefineJob(source, job.mask, params=RefineParams(seed=outcome.seed)), engine)
        np.testing.assert_array_equal(outcome.layer, alone.layer)
    # Different seeds: visibly different pixels inside the selection.
    inside = mask > 0
    assert np.abs(outcomes[0].layer[inside].astype(int) - outcomes[1].layer[inside].astype(int)).max() > 20


def test_the_preset_decides_when_the_request_names_no_count():
    source, mask = make_tile(seed=5), make_mask().astype(np.float32) / 255
    assert len(run_variants(RefineJob(source, mask), create_engine("seeded", {"step_s": 0}))) == 1
    from touchup.backend.engines.diffusion.presets import PRESETS

    assert {p.variants for p in PRESETS.values()} == {4}
    assert create_engine("classic").preset(None).variants == 1


# -- over the wire --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_backend(tmp_path_factory):
    from conftest import BackendProcess

    proc = BackendProcess(tmp_path_factory.mktemp("seeded"), engines={"seeded": {"step_s": 0.02}})
    yield proc
    proc.stop()


def test_variants_arrive_one_by_one_then_the_result(seeded_backend):
    header, frames = request(**SEEDED, params={"seed": 7, "variants": 3})
    events: list[Message] = []
    with seeded_backend.client() as c:
        messages = c.refine_variants(header, frames, on_event=events.append, timeout=60)
        alone = c.refine(*request(**SEEDED, params={"seed": 8}), timeout=60)
    assert [m.kind for m in messages] == [Kind.VARIANT, Kind.VARIANT, Kind.RESULT]
    assert [(m.header["variant"], m.header["variants"], m.header["seed"]) for m in messages] == [
        (0, 3, 7),
        (1, 3, 8),
        (2, 3, 9),
    ]
    sent = SentTile.of_request(header, frames)
    for msg in messages:
        checked_result(msg, sent)  # each variant fits the tile as a result does
    # Variant 1 (seed 8) has the pixels of a one-variant job with seed 8; the others differ.
    np.testing.assert_array_equal(layer_of(messages[1]), layer_of(alone))
    assert not np.array_equal(layer_of(messages[0]), layer_of(messages[1]))
    assert alone.header["variant"] == 0 and alone.header["variants"] == 1 and alone.header["seed"] == 8
    # Outside the selection every variant is transparent: the document keeps its pixels there.
    for msg in messages:
        x, y = msg.header["origin"][0] - 100, msg.header["origin"][1] - 50
        alpha = layer_of(msg)[:, :, 3]
        outside = make_mask()[y : y + alpha.shape[0], x : x + alpha.shape[1]] == 0
        assert not alpha[outside].any()
    # Streaming: each variant message arrives before the next variant's progress, and every
    # progress message names its variant (with previews, as a diffusion engine sends them).
    kinds = [(m.kind, m.header.get("variant")) for m in events if m.kind in (Kind.PROGRESS, Kind.VARIANT)]
    running = [m for m in events if m.kind == Kind.PROGRESS and m.header.get("stage") != "queued"]
    assert all(m.header["variants"] == 3 for m in running)
    assert kinds.index((Kind.VARIANT, 0)) < kinds.index((Kind.PROGRESS, 1))
    assert kinds.index((Kind.VARIANT, 1)) < kinds.index((Kind.PROGRESS, 2))
    assert sum(1 for m in running if m.frame("preview") is not None) >= 3 * 6


def test_variants_out_of_range_are_bad_params(seeded_backend):
    with seeded_backend.client() as c:
        for bad in (0, 9, 2.5, "4"):
            with pytest.raises(BackendError) as info:
                c.refine(*request(**SEEDED, params={"variants": bad}), timeout=30)
            assert info.value.code == ErrorCode.BAD_PARAMS
            assert info.value.message.startswith("variants must be")


def test_cancel_mid_job_keeps_the_variants_already_sent(seeded_backend):
    received: list[Message] = []
    with seeded_backend.client() as c:
        req_id = c.submit(*request(**SEEDED, params={"seed": 3, "variants": 4, "steps": 25, "feather": 0}))
        job = None

        def on_event(msg: Message) -> None:
            nonlocal job
            job = msg.header.get("job", job)
            if msg.kind == Kind.VARIANT:
                received.append(msg)
                c.cancel(job)

        with pytest.raises(BackendError) as info:
            c.wait(req_id, on_event=on_event, timeout=60)
    assert info.value.code == ErrorCode.CANCELLED
    assert [m.header["variant"] for m in received] == [0]
    # What was sent stays a whole, valid variant: exactly seed 3's result alone.
    with seeded_backend.client() as c:
        alone = c.refine(*request(**SEEDED, params={"seed": 3, "steps": 2, "feather": 0}), timeout=60)
    assert received[0].header["seed"] == 3
    np.testing.assert_array_equal(layer_of(received[0]), layer_of(alone))
