"""Installer logic: editor folders on the three OSes, wheel choice, install/uninstall round trips.

No editor is needed here: the folders are resolved for a fake HOME/APPDATA, wheels are chosen
from file names, and installs go into a temporary HOME whose tree is compared before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import skip_or_fail
from editor_releases import GIMP, KRITA, EditorRelease

from touchup.installer import inifile
from touchup.installer.autostart import autostart_entry, tray_command
from touchup.installer.install import Options, install, tree_snapshot
from touchup.installer.paths import custom_location, find_locations, gimp_locations, krita_locations
from touchup.installer.uninstall import uninstall
from touchup.installer.wheels import WheelTarget, pip_download_command, select_wheels, unpack_wheels

REPO = Path(__file__).resolve().parents[1]


# -- editor folders ---------------------------------------------------------------------------
def test_linux_locations_native_flatpak_snap(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    krita = {loc.variant: loc for loc in krita_locations("linux", env)}
    assert krita["native"].plugin_dir == tmp_path / ".local/share/krita/pykrita"
    assert krita["native"].config_file == tmp_path / ".config/kritarc"
    assert krita["flatpak"].plugin_dir == tmp_path / ".var/app/org.kde.krita/data/krita/pykrita"
    assert krita["flatpak"].config_file == tmp_path / ".var/app/org.kde.krita/config/kritarc"
    assert krita["snap"].plugin_dir == tmp_path / "snap/krita/current/.local/share/krita/pykrita"
    gimp = {loc.variant: loc for loc in gimp_locations("linux", env)}
    assert gimp["native"].plugin_dir == tmp_path / ".config/GIMP/3.0/plug-ins"
    assert gimp["flatpak"].plugin_dir == tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins"
    # XDG variables move the native folders.
    env_xdg = dict(env, XDG_DATA_HOME=str(tmp_path / "d"), XDG_CONFIG_HOME=str(tmp_path / "c"))
    assert krita_locations("linux", env_xdg)[0].plugin_dir == tmp_path / "d/krita/pykrita"
    assert krita_locations("linux", env_xdg)[0].config_file == tmp_path / "c/kritarc"
    assert gimp_locations("linux", env_xdg)[0].plugin_dir == tmp_path / "c/GIMP/3.0/plug-ins"


def test_windows_locations(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "WIN_PD_OVERRIDE_APPDATA": "C:\\Users\\u\\AppData\\Roaming",
        "WIN_PD_OVERRIDE_LOCAL_APPDATA": "C:\\Users\\u\\AppData\\Local",
    }
    roaming, local = Path(env["WIN_PD_OVERRIDE_APPDATA"]), Path(env["WIN_PD_OVERRIDE_LOCAL_APPDATA"])
    krita = krita_locations("win32", env)
    assert [loc.variant for loc in krita] == ["native"]
    assert krita[0].plugin_dir == roaming / "krita" / "pykrita"
    assert krita[0].config_file == local / "kritarc"
    assert gimp_locations("win32", env)[0].plugin_dir == roaming / "GIMP" / "3.0" / "plug-ins"


def test_macos_locations(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    krita = krita_locations("darwin", env)[0]
    assert krita.plugin_dir == tmp_path / "Library/Application Support/krita/pykrita"
    assert krita.config_file == tmp_path / "Library/Preferences/kritarc"
    assert (
        gimp_locations("darwin", env)[0].plugin_dir
        == tmp_path / "Library/Application Support/GIMP/3.0/plug-ins"
    )


def test_existing_variants_and_newest_gimp_series_are_chosen(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert [loc.variant for loc in find_locations("krita", env=env, system="linux")] == [
        "native"
    ]  # none exists
    (tmp_path / ".var/app/org.kde.krita/data/krita").mkdir(parents=True)
    (tmp_path / ".local/share/krita").mkdir(parents=True)
    assert [loc.variant for loc in find_locations("krita", env=env, system="linux")] == ["native", "flatpak"]
    for series in ("3.0", "3.2"):
        (tmp_path / ".config/GIMP" / series).mkdir(parents=True)
    assert gimp_locations("linux", env)[0].plugin_dir == tmp_path / ".config/GIMP/3.2/plug-ins"
    assert (
        gimp_locations("linux", dict(env, GIMP3_DIRECTORY=str(tmp_path / "p")))[0].resource_dir
        == tmp_path / "p"
    )


def test_override_accepts_resource_or_plugin_folder(tmp_path: Path) -> None:
    a = custom_location("krita", tmp_path / "h/.local/share/krita", "linux")
    b = custom_location("krita", tmp_path / "h/.local/share/krita/pykrita", "linux")
    assert a == b and a.config_file == tmp_path / "h/.config/kritarc"
    assert custom_location("gimp", tmp_path / "prof/plug-ins").plugin_dir == tmp_path / "prof/plug-ins"


# -- wheels -----------------------------------------------------------------------------------
WHEELS = [
    "pyzmq-27.3.0-cp310-cp310-win_amd64.whl",
    "pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
    "pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
    "pyzmq-27.3.0-cp312-abi3-macosx_10_15_universal2.whl",
    "pyzmq-26.0.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "msgpack-1.2.4-cp310-cp310-win_amd64.whl",
    "msgpack-1.2.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
    "msgpack-1.2.4-cp313-cp313-macosx_11_0_arm64.whl",
    "msgpack-1.2.4-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
]


def _names(chosen: dict[str, Path]) -> dict[str, str]:
    return {k: v.name for k, v in chosen.items()}


def test_wheels_are_picked_for_the_editor_python_not_ours() -> None:
    files = [Path(n) for n in WHEELS]
    # Debian's Krita: CPython 3.11 on glibc 2.36.
    assert _names(select_wheels(files, WheelTarget((3, 11), "linux", "x86_64", (2, 36)))) == {
        "pyzmq": WHEELS[1],
        "msgpack": WHEELS[6],
    }
    # Krita 5.2 on Windows embeds 3.10.
    assert _names(select_wheels(files, WheelTarget((3, 10), "win32", "AMD64"))) == {
        "pyzmq": WHEELS[0],
        "msgpack": WHEELS[5],
    }
    # GIMP in Debian trixie: 3.13 takes pyzmq's stable-ABI wheel.
    assert _names(select_wheels(files, WheelTarget((3, 13), "linux", "x86_64", (2, 41)))) == {
        "pyzmq": WHEELS[2],
        "msgpack": WHEELS[8],
    }
    assert _names(select_wheels(files, WheelTarget((3, 13), "darwin", "arm64"))) == {
        "pyzmq": WHEELS[3],
        "msgpack": WHEELS[7],
    }
    # An old glibc cannot load manylinux_2_26 wheels: the older pyzmq release is the only fit.
    assert _names(select_wheels(files, WheelTarget((3, 11), "linux", "x86_64", (2, 17)))) == {
        "pyzmq": WHEELS[4],
        "msgpack": WHEELS[6],
    }
    assert select_wheels(files, WheelTarget((3, 9), "win32", "AMD64")) == {}


def test_pip_download_asks_for_the_target_tags(tmp_path: Path) -> None:
    cmd = pip_download_command(WheelTarget((3, 10), "win32", "AMD64"), tmp_path)
    joined = " ".join(cmd)
    assert "--only-binary=:all:" in cmd and "--python-version 3.10" in joined
    assert "--abi cp310" in joined and "--platform win_amd64" in joined
    linux = " ".join(pip_download_command(WheelTarget((3, 11), "linux", "x86_64", (2, 36)), tmp_path))
    assert "--platform manylinux_2_36_x86_64" in linux and "--platform manylinux2014_x86_64" in linux


def test_unpack_places_wheel_contents_and_refuses_escapes(tmp_path: Path) -> None:
    good = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("demo/__init__.py", "VALUE = 42\n")
        zf.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
        zf.writestr("demo-1.0.data/scripts/tool", "#!/bin/sh\n")
    lib = tmp_path / "lib"
    written = unpack_wheels([good], lib)
    assert {p.name for p in written} == {"demo", "demo-1.0.dist-info"}
    out = subprocess.run(
        [sys.executable, "-c", "import demo; print(demo.VALUE)"], cwd=lib, capture_output=True, text=True
    )
    assert out.stdout.strip() == "42"
    bad = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../outside.py", "")
    with pytest.raises(RuntimeError, match="outside"):
        unpack_wheels([bad], tmp_path / "lib2")


def test_vendored_wheels_import_in_debian_system_python(tmp_path: Path) -> None:
    """Debian's Krita runs the plugin in the system CPython 3.11; the wheels picked for it load there."""
    python = Path("/usr/bin/python3.11")
    if not python.exists():
        pytest.skip("no system Python 3.11 (Debian 12's, which Krita links)")
    home = tmp_path / "home"
    opts = Options(
        krita=True,
        vendor="always",
        krita_python=str(python),
        wheel_cache=str(REPO / ".cache" / "wheels"),
        krita_dir=str(home / ".local/share/krita"),
    )
    assert install(opts, say=lambda _m: None, manifest_path=tmp_path / "m.json") == 0
    lib = home / ".local/share/krita/pykrita/touchup_krita/lib"
    code = "import zmq, msgpack, touchup.shared.client as c; print(zmq.__file__); print(msgpack.__file__); print(c.__file__)"
    out = subprocess.run(
        [str(python), "-I", "-c", f"import sys; sys.path.insert(0, {str(lib)!r}); {code}"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert all(line.startswith(str(lib)) for line in out.stdout.split()), out.stdout


# -- install / uninstall round trips ----------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME that platformdirs (and so the installer) resolves everything against."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "GIMP3_DIRECTORY", "TOUCHUP_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    return h


def _opts(**kw) -> Options:
    kw.setdefault("vendor", "never")
    return Options(**kw)


def test_install_writes_plugins_config_and_setting_and_uninstall_restores_tree(home: Path) -> None:
    pykrita = home / ".local/share/krita/pykrita"
    (pykrita / "mine").mkdir(parents=True)
    (pykrita / "mine.desktop").write_text("user's plugin\n")
    kritarc = home / ".config/kritarc"
    kritarc.parent.mkdir()
    kritarc.write_text("[General]\nSomeKey=1\n\n[python]\nenable_mine=true\n")
    before, rc_before = tree_snapshot(home), kritarc.read_text()

    lines: list[str] = []
    assert install(_opts(), say=lines.append) == 0
    assert (pykrita / "touchup_krita.desktop").is_file()
    assert (pykrita / "touchup_krita/lib/touchup/shared/client.py").is_file()
    assert (pykrita / "touchup_krita/touchup_krita.action").is_file()  # shortcuts, read from there
    assert not (home / ".local/share/krita/actions/touchup_krita.action").exists()  # no duplicate
    script = home / ".config/GIMP/3.0/plug-ins/touchup-refine/touchup-refine.py"
    assert script.stat().st_mode & 0o111, "GIMP ignores a plug-in that is not executable"
    assert (script.parent / "lib/touchup/shared/protocol.py").is_file()
    config = json.loads((pykrita / "touchup_krita/config.json").read_text())
    assert config["backend_command"].startswith(sys.executable) and "{endpoint}" in config["backend_command"]
    assert inifile.get_value(kritarc, "python", "enable_touchup_krita") == "true"
    assert "SomeKey=1" in kritarc.read_text()

    # A second run changes nothing and says so.
    lines.clear()
    assert install(_opts(), say=lines.append) == 0
    assert not [ln for ln in lines if "files:" in ln and "unchanged" not in ln], lines

    assert uninstall(say=lines.append) == 0
    assert tree_snapshot(home) == before
    assert kritarc.read_text() == rc_before
    assert not (home / ".local/share/touchup").exists()


def test_install_refuses_to_overwrite_foreign_files(home: Path) -> None:
    foreign = home / ".local/share/krita/pykrita/touchup_krita/__init__.py"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("hand-copied\n")
    lines: list[str] = []
    assert install(_opts(krita=True), say=lines.append) == 1
    assert foreign.read_text() == "hand-copied\n"
    assert any("refusing" in ln for ln in lines) and any(str(foreign) in ln for ln in lines)
    assert not (home / ".local/share/krita/pykrita/touchup_krita.desktop").exists()  # nothing written
    assert install(_opts(krita=True, force=True), say=lines.append) == 0
    assert foreign.read_text() != "hand-copied\n"


def test_upgrade_removes_files_the_new_version_no_longer_ships(home: Path) -> None:
    assert install(_opts(gimp=True), say=lambda _m: None) == 0
    manifest_path = home / ".local/share/touchup/install-manifest.json"
    data = json.loads(manifest_path.read_text())
    plugin = home / ".config/GIMP/3.0/plug-ins/touchup-refine"
    stale = plugin / "old_module.py"
    stale.write_text("# from an older version\n")
    data["components"]["gimp:native"]["files"][str(stale)] = hashlib.sha256(stale.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(data))
    lines: list[str] = []
    assert install(_opts(gimp=True), say=lines.append) == 0
    assert not stale.exists()
    assert any("1 removed" in ln for ln in lines)


def test_dry_run_writes_nothing(home: Path) -> None:
    lines: list[str] = []
    assert install(_opts(dry_run=True, autostart=True), say=lines.append) == 0
    assert tree_snapshot(home) == {}
    assert any("would write" in ln for ln in lines)


def test_uninstall_keeps_user_files_inside_plugin_folders(home: Path) -> None:
    assert install(_opts(krita=True), say=lambda _m: None) == 0
    note = home / ".local/share/krita/pykrita/touchup_krita/my-notes.txt"
    note.write_text("mine\n")
    cache = home / ".local/share/krita/pykrita/touchup_krita/__pycache__"
    cache.mkdir()
    (cache / "api.cpython-311.pyc").write_bytes(b"\0")  # what Krita's import leaves
    lines: list[str] = []
    assert uninstall(say=lines.append) == 0
    assert note.read_text() == "mine\n"
    assert not cache.exists()
    assert sorted(p.name for p in note.parent.iterdir()) == ["my-notes.txt"]
    assert any("kept" in ln and "touchup_krita" in ln for ln in lines)


def test_autostart_entries_for_each_os(home: Path) -> None:
    cmd = tray_command("/opt/touchup env/bin/python", system="linux")
    linux = autostart_entry(cmd, "linux", {"HOME": str(home)})
    assert linux.path == home / ".config/autostart/touchup-tray.desktop"
    assert 'Exec="/opt/touchup env/bin/python" -m touchup.backend tray' in linux.content.decode()
    mac = autostart_entry(cmd, "darwin", {"HOME": str(home)})
    assert mac.path == home / "Library/LaunchAgents/org.touchup.tray.plist"
    plist = plistlib.loads(mac.content)
    assert plist["ProgramArguments"] == cmd and plist["RunAtLoad"] is True
    win = autostart_entry(
        ["C:\\Py thon\\pythonw.exe", "-m", "touchup.backend", "tray"], "win32", {"HOME": str(home)}
    )
    assert win.path is None and win.registry is not None
    key, name, command = win.registry
    assert key.endswith("CurrentVersion\\Run") and name == "Touchup"
    assert command == '"C:\\Py thon\\pythonw.exe" -m touchup.backend tray'

    assert install(_opts(autostart=True, krita=True), say=lambda _m: None) == 0
    assert (home / ".config/autostart/touchup-tray.desktop").is_file()
    assert uninstall(say=lambda _m: None, only=["autostart"]) == 0
    assert not (home / ".config/autostart").exists()
    assert (home / ".local/share/krita/pykrita/touchup_krita.desktop").is_file()  # krita left installed


def test_ini_edit_touches_only_our_line(tmp_path: Path) -> None:
    rc = tmp_path / "kritarc"
    original = "[General]\nA=1\n\n[python]\nenable_x=true\n\n[Z]\nB=@ByteArray(\\0)\n"
    rc.write_text(original)
    inifile.set_value(rc, "python", "enable_touchup_krita", "true")
    assert rc.read_text() == original.replace("enable_x=true\n", "enable_x=true\nenable_touchup_krita=true\n")
    inifile.set_value(rc, "python", "enable_touchup_krita", None)
    assert rc.read_text() == original


def test_doctor_names_the_fix_for_what_is_missing(home: Path, backend: str) -> None:
    from touchup.installer.doctor import FAIL, OK, collect

    (home / ".local/share/krita").mkdir(parents=True)  # Krita ran once, plugin not installed
    rows = {r.check: r for r in collect(endpoint=backend)}
    assert rows["backend"].status == OK and backend in rows["backend"].detail
    assert rows["Krita (native)"].status == FAIL
    assert rows["Krita (native)"].fix == "touchup install --krita"
    assert install(_opts(krita=True), say=lambda _m: None) == 0
    rows = {r.check: r for r in collect(endpoint=backend)}
    assert rows["Krita (native)"].status == OK
    assert rows["Krita (native) version"].status == OK
    down = {r.check: r for r in collect(endpoint="tcp://127.0.0.1:9")}
    assert down["backend"].status == FAIL and "touchup tray" in down["backend"].fix


def test_doctor_reports_the_editor_release_and_whether_it_is_tested(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from touchup.installer.doctor import OK, WARN, _release_row
    from touchup.installer.editors import InstalledRelease, editor_release

    assert InstalledRelease("krita", "6.0.4").tested and InstalledRelease("gimp", "3.2.6").tested
    assert not InstalledRelease("krita", "5.0.2").tested and not InstalledRelease("gimp", "3.4.0").tested
    if shutil.which("kritarunner") is None:
        skip_or_fail("Krita is not installed (scripts/setup_krita.sh)")
    found = editor_release("krita")
    assert found.series == "5.1", found  # the host's Debian 12 Krita, asked with kritarunner --version
    row = _release_row("krita", "Krita")
    assert row.status == OK and found.version in row.detail and "tested" in row.detail

    # A Krita on PATH that reports an untested release gets a warning naming the tested ones.
    fake = home / "bin"
    fake.mkdir()
    (fake / "kritarunner").write_text("#!/bin/sh\necho kritarunner 4.4.8\n")
    (fake / "kritarunner").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    row = _release_row("krita", "Krita")
    assert row.status == WARN and "4.4.8 is not a tested release" in row.detail and "6.0" in row.detail


@pytest.mark.parametrize("release", [*KRITA, *GIMP], ids=[r.id for r in (*KRITA, *GIMP)])
def test_doctor_names_each_tested_release_as_tested(
    release: EditorRelease, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real editors answer ``--version`` (the chrooted ones through a wrapper on PATH, as a
    user's own launcher would) and doctor reports each as a tested release."""
    from touchup.installer.doctor import OK, _release_row

    reason = release.missing_reason()
    if reason:
        skip_or_fail(reason)
    if release.chroot is not None:
        names = ["kritarunner", "krita"] if release.editor == "krita" else [f"gimp-console-{release.version}"]
        bin_dir = home / "bin"
        bin_dir.mkdir()
        for name in names:
            argv = " ".join(shlex.quote(a) for a in release.command([name]))
            (bin_dir / name).write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
            (bin_dir / name).chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    label = "Krita" if release.editor == "krita" else "GIMP 3"
    row = _release_row(release.editor, label)
    assert row.status == OK, row
    assert row.detail.startswith(release.version + "."), row.detail
