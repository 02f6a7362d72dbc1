"""What the editors read from ``hello``: which presets can run, and why not."""

from touchup.shared.capabilities import engines_of, preset_missing


def test_default_engine_comes_first():
    hello = {"capabilities": {"default_engine": "b", "engines": [{"name": "a"}, {"name": "b"}]}}
    assert [e["name"] for e in engines_of(hello)] == ["b", "a"]


def test_missing_weights_name_the_download_command():
    engine = {"name": "qwen-edit", "available": {"ok": True}}
    preset = {
        "name": "refine-anything",
        "present": False,
        "download": "touchup models download refine-anything",
    }
    assert (
        preset_missing(engine, preset)
        == "models not downloaded; run `touchup models download refine-anything`"
    )
    assert preset_missing(engine, {"name": "x", "present": True}) == ""


def test_an_engine_without_its_libraries_says_why():
    engine = {"name": "flux-fill", "available": {"ok": False, "reason": "torch is not installed"}}
    assert preset_missing(engine, {"name": "flux-fill"}) == "torch is not installed"
