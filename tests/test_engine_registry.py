"""Which engines a backend offers: the product's, never a test engine unless configured so; and
presets are read from an engine instance, so every engine refuses an unknown preset alike."""

from __future__ import annotations

import pytest
from test_server import request

from touchup.backend.engines import ENGINES, create_engine, engine_class, register_engine
from touchup.backend.tools.bench_engines import IDENTITY, IdentityEngine
from touchup.shared.client import BackendError, Client
from touchup.shared.protocol import ErrorCode

PRODUCT = ["classic", "qwen-edit", "flux-kontext", "flux-fill", "sdxl-inpaint"]


def _offered(endpoint: str) -> list[str]:
    with Client(endpoint) as c:
        return [e["name"] for e in c.hello()["capabilities"]["engines"]]


def test_a_plain_backend_offers_no_test_engine(backend_factory):
    proc = backend_factory(extra_engines={})
    assert _offered(proc.endpoint) == PRODUCT
    header, frames = request(engine="identity")
    with Client(proc.endpoint) as c, pytest.raises(BackendError) as err:
        c.refine(header, frames, timeout=30)
    assert err.value.code == ErrorCode.UNKNOWN_ENGINE


def test_a_backend_configured_with_a_test_engine_offers_and_runs_it(backend_factory):
    proc = backend_factory(extra_engines={"identity": IDENTITY})
    assert _offered(proc.endpoint) == [*PRODUCT, "identity"]
    header, frames = request(engine="identity")
    with Client(proc.endpoint) as c:
        assert c.refine(header, frames, timeout=60).header["meta"]["engine"] == "identity"


def test_serve_refuses_an_extra_engine_that_is_not_an_engine(tmp_path):
    import subprocess
    import sys

    (tmp_path / "none.toml").write_text("")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "touchup.backend",
            "serve",
            "--config",
            str(tmp_path / "none.toml"),
            "--extra-engine",
            "x=touchup.shared.protocol:Kind",
            "--endpoint",
            "tcp://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "not an Engine class" in out.stderr


@pytest.mark.parametrize("engine", ["classic", "qwen-edit", "flux-fill", "sdxl-inpaint"])
def test_unknown_preset_is_refused_as_such_by_every_engine(backend, engine):
    """A diffusion engine's presets are made per instance: validation must ask an instance, or
    an unknown preset slips through to fail later as ``engine_failed``."""
    header, frames = request(engine=engine, preset="no-such-preset")
    with Client(backend) as c, pytest.raises(BackendError) as err:
        c.refine(header, frames, timeout=30)
    assert err.value.code == ErrorCode.UNKNOWN_PRESET
    assert "no-such-preset" in err.value.message


def test_presets_belong_to_the_instance():
    """An engine's options may change its presets, so two instances can differ."""
    classic = create_engine("classic")
    assert list(classic.presets) == ["default"]
    assert "presets" not in vars(engine_class("classic"))
    assert create_engine("qwen-edit").presets is not create_engine("qwen-edit").presets


def test_register_engine_checks_the_class_at_once():
    with pytest.raises(TypeError):
        register_engine("bogus", "touchup.shared.protocol:Kind")
    assert "bogus" not in ENGINES
    register_engine("identity", IDENTITY)
    assert engine_class("identity") is IdentityEngine
    assert IdentityEngine().presets["default"].capabilities.regenerate
