"""The installer never writes or deletes through a symbolic link, never deletes what it did not
install unchanged, unpacks wheels only inside their folder, and vendors only pinned wheels.

Each test plants what an attacker or an accident would (a link, a tampered manifest, an evil
wheel, a swapped cache file) and checks the files a user would lose or find changed.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from touchup.installer import wheels
from touchup.installer.install import Options, install
from touchup.installer.uninstall import uninstall
from touchup.installer.wheels import WheelError, WheelTarget, fetch_wheels, unpack_wheels


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "GIMP3_DIRECTORY", "TOUCHUP_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    return h


def krita(**kw) -> Options:
    return Options(krita=True, vendor="never", **kw)


def test_a_symlinked_plugin_folder_is_not_written_through(home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pykrita = home / ".local/share/krita/pykrita"
    pykrita.mkdir(parents=True)
    (pykrita / "touchup_krita").symlink_to(elsewhere)
    lines: list[str] = []
    assert install(krita(force=True), say=lines.append) == 1
    assert list(elsewhere.iterdir()) == []  # nothing landed outside the plugin folder
    assert any("symbolic link" in ln for ln in lines)


def test_a_symlinked_file_is_not_overwritten_even_with_force(home: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    pykrita = home / ".local/share/krita/pykrita"
    pykrita.mkdir(parents=True)
    (pykrita / "touchup_krita.desktop").symlink_to(victim)
    assert install(krita(force=True), say=lambda _m: None) == 1
    assert victim.read_text() == "precious\n"


def _manifest(home: Path) -> tuple[Path, dict]:
    path = home / ".local/share/touchup/install-manifest.json"
    return path, json.loads(path.read_text())


def test_uninstall_deletes_nothing_outside_the_plugin_folder(home: Path) -> None:
    assert install(krita(), say=lambda _m: None) == 0
    bashrc = home / ".bashrc"
    bashrc.write_text("export PATH=...\n")
    path, data = _manifest(home)
    comp = data["components"]["krita:native"]
    comp["files"][str(bashrc)] = hashlib.sha256(bashrc.read_bytes()).hexdigest()  # a tampered manifest
    comp["root"] = str(home)  # even one that claims a wider root
    path.write_text(json.dumps(data))
    lines: list[str] = []
    assert uninstall(say=lines.append) == 0
    assert bashrc.read_text() == "export PATH=...\n"
    assert any("kept" in ln and ".bashrc" in ln for ln in lines)


def test_uninstall_keeps_files_the_user_changed(home: Path) -> None:
    assert install(krita(), say=lambda _m: None) == 0
    edited = home / ".local/share/krita/pykrita/touchup_krita/config.json"
    edited.write_text('{"endpoint": "tcp://gpu-box:57361"}\n')
    pristine = home / ".local/share/krita/pykrita/touchup_krita.desktop"
    lines: list[str] = []
    assert uninstall(say=lines.append) == 0
    assert edited.read_text() == '{"endpoint": "tcp://gpu-box:57361"}\n'
    assert not pristine.exists()
    assert any("kept" in ln and "config.json" in ln and "changed" in ln for ln in lines)


def test_uninstall_does_not_follow_a_link_that_replaced_a_file(home: Path, tmp_path: Path) -> None:
    assert install(krita(), say=lambda _m: None) == 0
    target = tmp_path / "someone-elses.py"
    target.write_text("x = 1\n")
    installed = home / ".local/share/krita/pykrita/touchup_krita/api.py"
    installed.unlink()
    installed.symlink_to(target)
    assert uninstall(say=lambda _m: None) == 0
    assert target.read_text() == "x = 1\n"


def _wheel(path: Path, names: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in names.items():
            zf.writestr(name, text)
    return path


def test_wheel_paths_are_checked_resolved_not_by_prefix(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    evil = _wheel(tmp_path / "evil-1.0-py3-none-any.whl", {"../lib-evil/x.py": "boom = 1\n"})
    with pytest.raises(WheelError, match="outside"):
        unpack_wheels([evil], lib)
    assert not (tmp_path / "lib-evil").exists()


def test_only_pinned_wheels_are_vendored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        wheels.subprocess, "run", lambda *a, **k: type("P", (), {"stderr": "", "stdout": ""})()
    )
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "msgpack-1.2.4-py3-none-any.whl"
    good = _wheel(cache / name, {"msgpack/__init__.py": "ok = 1\n"})
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    target = WheelTarget((3, 11), "linux", "x86_64", (2, 36))
    assert fetch_wheels(target, cache, ("msgpack",), pins={name: digest}) == {"msgpack": good}
    _wheel(good, {"msgpack/__init__.py": "import os; os.system('evil')\n"})  # swapped in the cache
    with pytest.raises(WheelError, match="sha256"):
        fetch_wheels(target, cache, ("msgpack",), pins={name: digest})


def test_the_pin_list_names_the_pinned_releases() -> None:
    from touchup.installer.wheel_pins import PINNED_VERSIONS, WHEEL_SHA256

    cmd = wheels.pip_download_command(WheelTarget((3, 11), "linux"), Path("/tmp/x"))
    assert f"pyzmq=={PINNED_VERSIONS['pyzmq']}" in cmd and f"msgpack=={PINNED_VERSIONS['msgpack']}" in cmd
    for file, digest in WHEEL_SHA256.items():
        project, version = file.split("-")[:2]
        assert PINNED_VERSIONS[project] == version and len(digest) == 64
