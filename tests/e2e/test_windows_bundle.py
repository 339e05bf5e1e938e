"""The Windows offline bundle `make package` builds, checked on Linux (docs/install-windows.md).

installer.py runs here under the real Python 3.8 (.venv38) on the real bundle: its hash check, its
data-folder check, and pip installing the agent offline from the bundle's own win32 / win_amd64
wheels all run for real. Only the Windows tools (sc.exe, icacls, net, cscript) are outside the
product and outside this machine: the driver records them instead. Never run on Windows yet.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.cli import ROOT

if TYPE_CHECKING:
    from pathlib import Path

PY38 = ROOT / ".venv38" / "bin" / "python"
#: building the bundle (pip download of two platforms) is part of the first test's time
# installer.py runs on Python 3.8
pytestmark = [pytest.mark.timeout(600), pytest.mark.py38, pytest.mark.slow]

#: Runs installer.py's install or uninstall with the Windows tools recorded, on Python 3.8.
DRIVER = r"""
import json, sys
from pathlib import Path
bundle, command, install_dir, data, programdata, exists, platform, locked = sys.argv[1:9]
sys.path.insert(0, bundle)
import installer
if locked == "1":  # Windows refuses to move a folder with an open file in it (the help window)
    real_replace = installer.os.replace
    def replace(src, dst):
        if src.endswith("lib") and dst.endswith("lib.old"):
            raise PermissionError(13, "The process cannot access the file")
        real_replace(src, dst)
    installer.os.replace = replace
record = []
def run(argv):
    if len(argv) > 1 and argv[1].endswith("pip"):
        installer.run_command(argv)  # pip from the bundle, for real
        return
    record.append(argv)
    if argv[:2] == ["sc.exe", "query"] and exists != "1":
        raise installer.InstallError("没有这个服务", "no such service")
env = {"PROGRAMDATA": programdata}
try:
    if command == "install":
        installer.install(
            Path(bundle), Path(install_dir), Path(data), "cashier", env, run, platform=platform
        )
    else:
        installer.uninstall(Path(install_dir), Path(data), env, command == "purge", run)
    error = None
except installer.InstallError as exc:
    error = str(exc)
print(json.dumps({"error": error, "commands": record}))
"""


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make venv` builds it from Python 3.8 (docs/windows7.md)")
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [
            sys.executable,
            "scripts/build_packages.py",
            "--out",
            str(out),
            "--skip-deb",
            "--python38",
            str(PY38),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return next(out.glob("posassist-agent-*-win-offline.zip"))


@pytest.fixture
def bundle(bundle_zip: Path, tmp_path: Path) -> Path:
    with zipfile.ZipFile(bundle_zip) as z:
        z.extractall(tmp_path / "unzipped")
    (root,) = (tmp_path / "unzipped").iterdir()
    return root


def _drive(
    bundle: Path,
    command: str,
    install_dir: Path,
    data: Path,
    programdata: Path,
    *,
    exists: bool = False,
    platform: str = "win_amd64",
    locked: bool = False,
) -> dict[str, Any]:
    done = subprocess.run(
        [
            *(str(PY38), "-c", DRIVER, str(bundle), command, str(install_dir), str(data)),
            *(str(programdata), "1" if exists else "0", platform, "1" if locked else "0"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _verify(bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PY38), "-I", str(bundle / "installer.py"), "verify"],  # -I as install.cmd
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bundle_holds_wheels_for_both_windows_and_a_manifest_of_every_file(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = set(manifest["files"])
    for platform in ("win32", "win_amd64"):
        wheels = {n.split("/")[-1] for n in names if n.startswith(f"wheels/{platform}/")}
        for dist in ("posassist_agent-", "cryptography-42.0.7-", "psutil-7.1.1-", "pip-"):
            assert any(w.startswith(dist) for w in wheels), (platform, dist)
        assert not [w for w in wheels if "linux" in w or "macos" in w]
    for name in ("installer.py", "launch.py", "posassist_service.py", "install.cmd"):
        assert name in names
    assert (bundle / "install.cmd").read_bytes().count(b"\r\n") > 5  # cmd.exe line ends
    for script in ("install.cmd", "uninstall.cmd"):  # -I: the bundle folder is not on sys.path
        assert b'"%PY%" -I "%~dp0installer.py"' in (bundle / script).read_bytes()
    verified = _verify(bundle)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "the bundle is intact" in verified.stdout


@pytest.mark.parametrize(
    "damage",
    [
        "flipped byte",
        "unlisted wheel",
        "missing wheel",
        "unlisted top-level file",
        "symlinked platform folder",
        "symlinked wheel",
    ],
)
def test_a_corrupted_bundle_is_refused_and_nothing_is_installed(
    bundle: Path, tmp_path: Path, damage: str
) -> None:
    wheel = next((bundle / "wheels" / "win_amd64").glob("cryptography-*.whl"))
    if damage == "flipped byte":
        raw = bytearray(wheel.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        wheel.write_bytes(bytes(raw))
        said = "does not match its SHA-256"
    elif damage == "unlisted wheel":
        (wheel.parent / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
        said = "which its manifest does not list"
    elif damage == "unlisted top-level file":  # would shadow the standard library (attack F5)
        (bundle / "json.py").write_text("print('ATTACKER CODE')\n")
        said = "json.py, which its manifest does not list"
    elif damage == "symlinked platform folder":
        elsewhere = tmp_path / "elsewhere"
        shutil.copytree(wheel.parent, elsewhere)
        shutil.rmtree(wheel.parent)
        wheel.parent.symlink_to(elsewhere, target_is_directory=True)
        said = "symbolic link"
    elif damage == "symlinked wheel":
        outside = tmp_path / wheel.name
        shutil.copyfile(wheel, outside)
        wheel.unlink()
        wheel.symlink_to(outside)
        said = "symbolic link"
    else:
        wheel.unlink()
        said = "is missing"
    verified = _verify(bundle)
    assert verified.returncode == 2
    assert said in verified.stdout
    install_dir, data = tmp_path / "Program Files" / "posassist", tmp_path / "ProgramData" / "pa"
    result = _drive(bundle, "install", install_dir, data, tmp_path / "ProgramData")
    assert said in result["error"]
    assert result["commands"] == []  # no service, no ACL, no shortcut
    assert not install_dir.exists()
    assert not data.exists()


@pytest.mark.parametrize("platform", ["win32", "win_amd64"])
def test_install_upgrade_and_uninstall_keep_the_tills_identity(
    bundle: Path, tmp_path: Path, platform: str
) -> None:
    programdata = tmp_path / "ProgramData"
    install_dir, data = tmp_path / "Program Files" / "posassist", programdata / "posassist"
    first = _drive(bundle, "install", install_dir, data, programdata, platform=platform)
    assert first["error"] is None
    lib = install_dir / "lib"
    assert (lib / "posassist" / "agent" / "__main__.py").is_file()
    assert not list(lib.glob("posassist/relay"))
    assert list(lib.rglob("*.pyd"))  # Windows extension modules
    tags = {
        line.split()[1].rsplit("-", 1)[1]
        for wheel in lib.glob("*.dist-info/WHEEL")
        for line in wheel.read_text().splitlines()
        if line.startswith("Tag:")
    }
    assert tags == {platform, "any"}, tags
    assert any(d.name.startswith("cryptography-42.0.7") for d in lib.glob("*.dist-info"))
    commands = first["commands"]
    assert [
        "icacls",
        str(data),
        "/inheritance:r",
        "/grant:r",
        "*S-1-5-18:(OI)(CI)F",
        "*S-1-5-32-544:(OI)(CI)F",
    ] in commands
    assert ["icacls", str(data / "link"), "/grant", "cashier:(OI)(CI)RX"] in commands
    create = next(c for c in commands if c[:2] == ["sc.exe", "create"])
    assert create[create.index("start=") + 1] == "auto"
    assert "posassist_service.py" in create[create.index("binPath=") + 1]
    failure = next(c for c in commands if c[:2] == ["sc.exe", "failure"])
    assert failure[failure.index("actions=") + 1].startswith("restart/")
    assert ["sc.exe", "failureflag", "posassist-agent", "1"] in commands
    links = [c[3] for c in commands if c[0] == "cscript.exe"]
    assert any("Start Menu" in link and "StartUp" not in link for link in links)
    assert any("StartUp" in link for link in links)
    assert "help --data" in (install_dir / "get-help.cmd").read_text()
    assert ["net", "start", "posassist-agent"] not in commands  # not enrolled yet

    # the till enrols (its identity), then an upgrade over the running service keeps it
    identity = {"agent.json": b'{"device_id": "dev_1"}', "agent.key": b"PRIVATE KEY"}
    for name, raw in identity.items():
        (data / name).write_bytes(raw)
    second = _drive(bundle, "install", install_dir, data, programdata, exists=True)
    assert second["error"] is None
    commands = second["commands"]
    assert commands.index(["net", "stop", "posassist-agent"]) < commands.index(
        ["net", "start", "posassist-agent"]
    )
    assert any(c[:2] == ["sc.exe", "config"] for c in commands)
    assert not any(c[:2] == ["sc.exe", "create"] for c in commands)
    # the upgrade waits for a running script (wait-idle, 300 s) before it stops the service
    waits = [i for i, c in enumerate(commands) if "wait-idle" in c]
    assert len(waits) == 1
    assert commands[waits[0]][-4:] == ["--timeout", "300", "--for", "upgrade"]
    assert waits[0] < commands.index(["net", "stop", "posassist-agent"])
    assert {n: (data / n).read_bytes() for n in identity} == identity
    assert not (install_dir / "lib.new").exists()
    assert not (install_dir / "lib.old").exists()

    # an upgrade while the help window holds the program files open: the old version serves on
    before = sorted(p.relative_to(install_dir) for p in (install_dir / "lib").rglob("*"))
    locked = _drive(bundle, "install", install_dir, data, programdata, exists=True, locked=True)
    assert "close the Get help window and install again" in locked["error"]
    assert locked["commands"][-1] == ["net", "start", "posassist-agent"]
    assert sorted(p.relative_to(install_dir) for p in (install_dir / "lib").rglob("*")) == before
    assert not (install_dir / "lib.new").exists()
    assert {n: (data / n).read_bytes() for n in identity} == identity

    # uninstall keeps the identity (a reinstall is the same till); --purge removes it
    removed = _drive(bundle, "uninstall", install_dir, data, programdata, exists=True)
    assert removed["error"] is None
    assert ["sc.exe", "delete", "posassist-agent"] in removed["commands"]
    assert not install_dir.exists()
    assert {n: (data / n).read_bytes() for n in identity} == identity
    purged = _drive(bundle, "purge", install_dir, data, programdata)
    assert purged["error"] is None
    assert not data.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs: needs root")
@pytest.mark.parametrize(
    ("options", "said"),
    [("ro", "can not write the data folder"), ("rw", "are needed; nothing was installed")],
    ids=["read-only", "too small"],
)
def test_install_with_a_data_folder_it_can_not_use_says_so_and_installs_nothing(
    bundle: Path, tmp_path: Path, options: str, said: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"{options},size=256k", "pa-data", str(data)], check=True
    )
    try:
        install_dir = tmp_path / "Program Files" / "posassist"
        result = _drive(bundle, "install", install_dir, data, tmp_path / "ProgramData")
        assert list(data.iterdir()) == []  # no probe left behind
    finally:
        subprocess.run(["umount", str(data)], check=True)
    assert said in result["error"]
    assert "未安装任何东西" in result["error"]
    assert result["commands"] == []
    assert not install_dir.exists()


def test_install_where_the_data_folder_can_not_be_made_removes_what_it_made(
    bundle: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    install_dir = tmp_path / "Program Files" / "posassist"
    result = _drive(bundle, "install", install_dir, blocker / "data", tmp_path / "ProgramData")
    assert "can not write the data folder" in result["error"]
    assert result["commands"] == []
    assert not install_dir.exists()
    assert blocker.read_text() == "not a folder"


def test_service_host_reports_an_agent_that_ended_by_itself_as_a_failure(bundle: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "posassist_service", bundle / "posassist_service.py"
    )
    assert spec is not None
    assert spec.loader is not None
    host = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(host)
    assert host.exit_codes(0, stop_requested=True) == (host.NO_ERROR, 0)
    assert host.exit_codes(1, stop_requested=False) == (host.ERROR_SERVICE_SPECIFIC_ERROR, 1)
    assert host.exit_codes(0, stop_requested=False) == (host.ERROR_SERVICE_SPECIFIC_ERROR, 1)
    assert host.exit_codes(None, stop_requested=False) == (host.ERROR_SERVICE_SPECIFIC_ERROR, 1)
