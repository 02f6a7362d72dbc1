"""The Krita plugin inside real Krita (kritarunner, offscreen) against real backends.

One Krita launch per release runs every check in ``krita_checks.py`` (Krita's start-up
dominates the time); each check becomes its own test here, its id naming the release and the
check (``[krita-6.0-rect_u8_visible]``), so a failure names what broke and where. The releases
between the oldest and newest run the smoke subset ``SMOKE``. Backends: the
shared classic-engine backend, a slow ``identity`` backend for cancel, a second one that a
check kills mid-job, and an endpoint where nothing listens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TESTS, BackendProcess, curve_backend, free_endpoint, skip_or_fail
from editor_releases import FULL, KRITA, EditorRelease

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kritatest import krita_env, krita_missing_reason, read_results, run_kritarunner, stage

pytestmark = [pytest.mark.krita, pytest.mark.slow]

CHECKS = [
    "rect_u8_visible",
    "feathered_u16_visible",
    "float_depths",
    "with_reference_layer",
    "active_layer_source",
    "queued_jobs_land_in_order",
    "result_goes_to_its_document",
    "clear_messages_for_bad_documents",
    "docker_widgets",
    "linear_scrgb_float_round_trip",
    "cancel_running_job",
    "ui_never_blocks_during_a_job",
    "backend_vanishes_mid_job",
    "backend_not_running",
    "start_backend_button",
    "bundled_example_end_to_end",
    "result_outside_the_tile_is_refused",
    "unreadable_reply_fails_the_job",
    "connection_file_reaches_a_curve_backend",
    "endpoint_changed_at_runtime",
]
#: What the releases between the oldest and newest run: pixels in, the docker, and the errors.
SMOKE = ["rect_u8_visible", "float_depths", "docker_widgets", "cancel_running_job", "backend_not_running"]
SLOW_IDENTITY = {"engine": "classic", "engines": {"identity": {"delay": 0.2}}}


def spare_command(root: Path, release: EditorRelease) -> str:
    """The command the docker's Start backend button runs in the check (own config and log);
    a chrooted Krita starts it back on the host, where the backend's Python lives."""
    config = root / "spare.toml"
    config.write_text(f'engine = "classic"\nlog_file = "{root / "spare.log"}"\n')
    argv = release.host_command([sys.executable, "-m", "touchup.backend", "serve"])
    return " ".join(argv) + f" --endpoint {{endpoint}} --config {config}"


CASES = [
    pytest.param(release, name, id=f"{release.id}-{name}")
    for release in KRITA
    for name in (CHECKS if release.id in FULL else SMOKE)
]


@pytest.fixture(scope="module")
def krita_results(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[EditorRelease], dict]:
    """One Krita launch per release, on the first test that asks for it."""
    done: dict[str, dict] = {}

    def results(release: EditorRelease) -> dict:
        if release.id not in done:
            done[release.id] = run_checks(release, backend, tmp_path_factory)
        return done[release.id]

    return results


def run_checks(release: EditorRelease, backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = krita_missing_reason(release)
    if reason:
        skip_or_fail(reason)
    root = tmp_path_factory.mktemp(release.id)
    slow = BackendProcess(root / "slow", **SLOW_IDENTITY)
    doomed = BackendProcess(root / "doomed", **SLOW_IDENTITY)
    # The identity engine appends what it received to this file: what the linear check inspects.
    record = root / "received.jsonl"
    recording = BackendProcess(
        root / "recording", engine="identity", engines={"identity": {"record": str(record)}}
    )
    lying_endpoint = free_endpoint()
    lying = subprocess.Popen([sys.executable, str(TESTS / "fake_backend.py"), lying_endpoint, "outside"])
    garbled_endpoint = free_endpoint()
    garbled = subprocess.Popen(
        [sys.executable, str(TESTS / "fake_backend.py"), garbled_endpoint, "badprogress"]
    )
    curve, connection_file = curve_backend(root)
    # A backend offering only the product engines: where the runtime endpoint change goes
    # (a check the smoke subset leaves out).
    plain = BackendProcess(root / "plain", extra_engines={}) if release.id in FULL else None
    try:
        example = root / "example"
        subprocess.run(
            [sys.executable, "-m", "touchup.backend", "example", "make", "--out", str(example)],
            check=True,
            capture_output=True,
        )
        config = {
            "endpoint": backend,
            "slow_endpoint": slow.endpoint,
            "plain_endpoint": plain.endpoint if plain else free_endpoint(),
            "doomed_endpoint": doomed.endpoint,
            "doomed_pid": doomed.proc.pid,
            "dead_endpoint": free_endpoint(),
            "spare_endpoint": free_endpoint(),
            "backend_command": spare_command(root, release),
            "example_dir": str(example),
            "recording_endpoint": recording.endpoint,
            "record_file": str(record),
            "lying_endpoint": lying_endpoint,
            "garbled_endpoint": garbled_endpoint,
            "connection_file": str(connection_file),
            "connection_copy_dir": str(root / "imported"),
        }
        (root / "config.json").write_text(json.dumps(config))
        results, log = root / "results.json", root / "krita.log"
        env = krita_env(
            root / "home",
            stage(root),
            TOUCHUP_KRITA_CONFIG=str(root / "config.json"),
            TOUCHUP_KRITA_RESULTS=str(results),
            TOUCHUP_ENDPOINT=backend,
            TOUCHUP_KRITA_ONLY="" if release.id in FULL else ",".join(SMOKE),
        )
        run_kritarunner("krita_checks", "run", env, log, release=release, binds=(root,))
        data = read_results(results, log)

        data["_log"] = log.read_text(errors="replace")[-3000:]
        return data
    finally:
        slow.stop()
        doomed.stop()
        recording.stop()
        curve.stop()
        if plain:
            plain.stop()
        for fake in (lying, garbled):
            fake.terminate()
            fake.wait(10)


@pytest.mark.parametrize(("release", "name"), CASES)
def test_in_krita(krita_results: Callable[[EditorRelease], dict], release: EditorRelease, name: str) -> None:
    results = krita_results(release)
    result = results.get(name)
    assert result is not None, (
        f"check {name} did not run in {release.id}; Krita's log ends with:\n{results['_log']}"
    )
    assert result["ok"], result["detail"]
