"""The Linux agent package, installed for real on this machine: ``dpkg -i`` into /opt/posassist,
its systemd unit verified, the agent run from there as its own user, enrolled against a real relay
on 127.0.0.1, reinstalled keeping its identity, removed and purged (docs/install-linux.md).

It changes the machine (a package, a system user, /opt/posassist, /var/lib/posassist-agent), so it
runs as root only, one test process at a time (a lock file), and purges the package at the end.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from scripts.build_packages import debian_version, version
from tests.e2e.cli import ROOT, invite, ok, provision, py, start_relay, stop

if TYPE_CHECKING:
    from collections.abc import Iterator

OPT = Path("/opt/posassist")
DATA = Path("/var/lib/posassist-agent")
UNIT = Path("/lib/systemd/system/posassist-agent.service")
AGENT = OPT / "venv" / "bin" / "posassist-agent"
LOCK = Path("/run/lock/posassist-deb-test.lock")

pytestmark = [
    pytest.mark.slow,
    # a second test process waits on the lock while the first installs and removes (minutes)
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("dpkg") is None,
        reason="installs a .deb: needs root and dpkg (not done here)",
    ),
]


def _dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=300)


def _installed() -> bool:
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "posassist-agent"], capture_output=True, text=True
    )
    return status.returncode == 0 and status.stdout.endswith(" installed")


def _known() -> bool:
    return _dpkg("-s", "posassist-agent").returncode == 0


def _purge() -> None:
    if _known():
        ok(_dpkg("--purge", "posassist-agent"))


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The .deb `make package` builds, with the machine to ourselves: a lock keeps a second test
    process out, and whatever a crashed run left (only this test installs the package) goes."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = tmp_path_factory.mktemp("dist")
        for revision in ("1", "2"):  # the second: an upgrade of the first
            built = subprocess.run(
                [
                    *(sys.executable, "scripts/build_packages.py", "--out", str(out)),
                    *("--skip-windows", "--deb-revision", revision),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert built.returncode == 0, built.stderr[-3000:]
        _purge()
        try:
            yield next(out.glob("posassist-agent_*-1_amd64.deb"))
        finally:
            _purge()


def _as_agent_user(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A command as the unit runs it: user posassist, its groups, no HOME of root's, cwd /."""
    return subprocess.run(
        list(argv),
        user="posassist",
        group="posassist",
        extra_groups=["dialout", "lp"],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _exec_start() -> list[str]:
    """The unit's ExecStart command line, as written."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            return line.removeprefix("ExecStart=").split()
    raise AssertionError("the unit has no ExecStart")


def _version() -> str:
    return ok(
        subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "posassist-agent"], capture_output=True, text=True
        )
    )


def _identity() -> tuple[str, dict[str, bytes]]:
    device = json.loads((DATA / "agent.json").read_text())["device_id"]
    files = {p.name: p.read_bytes() for p in DATA.iterdir() if p.is_file() and "key" in p.name}
    assert files, "no key file in the data folder"
    return device, files


def test_deb_installs_runs_enrols_keeps_its_identity_and_removes(deb: Path, tmp_path: Path) -> None:
    installed = _dpkg("-i", str(deb))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert _installed()

    # the files, the environment and the user
    assert AGENT.is_file()
    assert os.access(AGENT, os.X_OK)
    assert Path("/usr/bin/posassist-agent").resolve() == AGENT.resolve()
    assert UNIT.is_file()
    info = DATA.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert (info.st_uid, info.st_gid) == (
        int(ok(subprocess.run(["id", "-u", "posassist"], capture_output=True, text=True))),
        int(ok(subprocess.run(["id", "-g", "posassist"], capture_output=True, text=True))),
    )
    groups = ok(subprocess.run(["id", "-nG", "posassist"], capture_output=True, text=True))
    assert {"dialout", "lp"} <= set(groups.split())
    where = ok(
        subprocess.run(
            [
                str(OPT / "venv" / "bin" / "python"),
                "-c",
                "import posassist.agent as a; print(a.__file__)",
            ],
            capture_output=True,
            text=True,
            cwd="/",
        )
    )
    assert where.startswith(str(OPT / "venv") + "/"), where
    # exactly the wheels the package carries (not the machine's pip configuration)
    carried = {
        w.name.split("-")[0].lower() + "-" + w.name.split("-")[1]
        for w in (OPT / "wheels").glob("*.whl")
    }
    site = next((OPT / "venv" / "lib").glob("python3*/site-packages"))
    dists = {d.name.removesuffix(".dist-info").lower() for d in site.glob("*.dist-info")}
    assert any(d.startswith("posassist_agent-") for d in dists)
    assert dists <= carried, dists - carried
    # no relay or console came with it
    assert not list((OPT / "venv").rglob("relay/__init__.py"))

    # the unit, checked by systemd's own parser (systemd is not PID 1 here: it can't be started)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert "posassist-agent.service" not in verify.stderr, verify.stderr
    unit = UNIT.read_text()
    for setting in (
        "User=posassist",
        "SupplementaryGroups=dialout lp",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "NoNewPrivileges=true",
    ):
        assert setting in unit

    # enrol against a real relay, then run the unit's own command line as its user
    relay_data = tmp_path / "relay"
    store = provision(relay_data)
    relay, url = start_relay(relay_data)
    try:
        token = invite(relay_data, store, url)
        enrolled = _as_agent_user(str(AGENT), "enroll", token, "--data", str(DATA))
        assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
        device, keys = _identity()
        ran = _as_agent_user(*_exec_start(), "--once")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "connected to relay" in ran.stdout
        assert device in ok(py("relay", "device", "list", "--data", str(relay_data)))

        # upgrade to the next revision, then reinstall it: the same device, the same key
        newer = next(deb.parent.glob("posassist-agent_*-2_amd64.deb"))
        outputs = []
        for package in (newer, newer):
            again = _dpkg("-i", str(package))
            assert again.returncode == 0, again.stdout + again.stderr
            outputs.append(again.stdout)
            assert _identity() == (device, keys)
            assert _as_agent_user(*_exec_start(), "--once").returncode == 0
        base = debian_version(version())
        assert f"over ({base}-1)" in outputs[0]  # dpkg's upgrade path
        assert f"over ({base}-2)" in outputs[1]  # and its reinstall
        assert _version().endswith("-2")
        assert not (OPT / "venv.old").exists()
        assert not (OPT / "venv.new").exists()

        # remove: the program goes, the identity stays; installed again it is the same till
        removed = _dpkg("-r", "posassist-agent")
        assert removed.returncode == 0, removed.stderr
        assert not _installed()
        assert not OPT.exists()
        assert not UNIT.exists()
        assert not Path("/usr/bin/posassist-agent").is_symlink()
        assert _identity() == (device, keys)
        assert _dpkg("-i", str(newer)).returncode == 0
        ran = _as_agent_user(*_exec_start(), "--once")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert device in ran.stdout
    finally:
        stop(relay)

    # purge: the data folder and the user go too
    assert _dpkg("--purge", "posassist-agent").returncode == 0
    assert not DATA.exists()
    assert not OPT.exists()
    assert subprocess.run(["id", "posassist"], capture_output=True).returncode != 0


@contextmanager
def _mounted_data(options: str, fill: bool) -> Iterator[None]:
    """The data folder on its own small tmpfs: read-only, or full."""
    DATA.mkdir(mode=0o700)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size=256k,{options}", "posassist-test", str(DATA)],
            check=True,
            timeout=30,
        )
        try:
            if fill:
                subprocess.run(
                    ["dd", "if=/dev/zero", f"of={DATA}/fill", "bs=4k"], capture_output=True
                )
            yield
        finally:
            subprocess.run(["umount", str(DATA)], check=True, timeout=30)
    finally:
        DATA.rmdir()


@pytest.mark.parametrize(("options", "fill"), [("ro", False), ("rw", True)], ids=["ro", "full"])
def test_deb_refuses_a_data_folder_it_can_not_write_and_installs_nothing(
    deb: Path, options: str, fill: bool
) -> None:
    with _mounted_data(options, fill):
        refused = _dpkg("-i", str(deb))
        assert refused.returncode != 0
        assert "can not write the data folder /var/lib/posassist-agent" in refused.stderr
        assert "无法写入数据文件夹" in refused.stderr
        assert not _installed()
        assert not OPT.exists()
        assert not UNIT.exists()
        assert subprocess.run(["id", "posassist"], capture_output=True).returncode != 0
    _purge()  # dpkg may keep a "not-installed" record; nothing of it is on disk
