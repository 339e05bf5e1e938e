"""The relay's systemd unit and OCI Containerfile (packaging/relay/): the unit passes systemd's own
checker, and the command lines both files give really start, reload and stop a relay here, with
their install paths pointed at this checkout. systemd is not PID 1 on the build machine and no
container engine runs here: neither file has been used by systemd or a container engine."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from tests.e2e.cli import ROOT, provision
from tests.relay.certs import make_certificate

if TYPE_CHECKING:
    from pathlib import Path

UNIT = ROOT / "packaging" / "relay" / "posassist-relay.service"
CONTAINERFILE = ROOT / "packaging" / "relay" / "Containerfile"
VENV = str(ROOT / ".venv")


def _here(line: str, data: Path, tls: Path) -> list[str]:
    """A command line of the unit or image, with its paths in this checkout and free ports."""
    line = (
        line.replace("/opt/posassist-relay/venv", VENV)
        .replace("/var/lib/posassist-relay", str(data))
        .replace("/etc/posassist-relay", str(tls))
        .replace("--port 8765", "--port 0")
        .replace("--metrics-port 9108", "--metrics-port 0")
        .replace("--host 0.0.0.0", "--host 127.0.0.1")
        .replace("--metrics-host 0.0.0.0", "--metrics-host 127.0.0.1")
    )
    return shlex.split(line)


def _setting(name: str) -> str:
    for line in UNIT.read_text().splitlines():
        if line.startswith(name + "="):
            return line.split("=", 1)[1]
    raise AssertionError(f"the unit has no {name}")


def _serve_reload_stop(argv: list[str], data: Path) -> str:
    """Start ``argv`` (a serve command), wait until it listens, SIGHUP it, SIGTERM it: its log."""
    (data / "relay.url").unlink(missing_ok=True)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (data / "relay.url").exists() or not (data / "metrics.url").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the relay did not start"
            time.sleep(0.05)
        assert (data / "relay.url").read_text().startswith("wss://127.0.0.1:")
        proc.send_signal(signal.SIGHUP)  # ExecReload
        proc.send_signal(signal.SIGTERM)  # systemctl stop, podman stop
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    return out


@pytest.fixture
def relay(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "relay"
    provision(data)
    data.chmod(0o700)
    (data / "admin.pw").unlink()
    make_certificate().write(tmp_path / "tls")
    return data, tmp_path / "tls"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_relay_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "posassist-relay.service"
    unit.write_text(UNIT.read_text().replace("/opt/posassist-relay/venv", VENV))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert "posassist-relay.service" not in verify.stderr, verify.stderr
    for setting in ("Restart=on-failure", "ProtectSystem=strict", "User=posassist-relay"):
        assert setting in UNIT.read_text()


def test_relay_unit_command_lines_check_serve_reload_and_stop(relay: tuple[Path, Path]) -> None:
    data, tls = relay
    pre = subprocess.run(
        _here(_setting("ExecStartPre"), data, tls), capture_output=True, text=True, timeout=60
    )
    assert pre.returncode == 0, pre.stdout + pre.stderr
    assert "error:" not in pre.stdout
    log = _serve_reload_stop(_here(_setting("ExecStart"), data, tls), data)
    assert "TLS certificate reloaded" in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any("reloaded" in json.dumps(r) for r in records)  # --log-json: JSON log lines


def test_relay_unit_refuses_to_start_on_a_broken_configuration(
    relay: tuple[Path, Path],
) -> None:
    data, tls = relay
    (tls / "relay.key").write_bytes(make_certificate().key_pem)  # not the certificate's key
    pre = subprocess.run(
        _here(_setting("ExecStartPre"), data, tls), capture_output=True, text=True, timeout=60
    )
    assert pre.returncode == 1
    assert "key values mismatch" in pre.stdout


def _containerfile() -> tuple[list[tuple[str, str]], list[str]]:
    """The final stage's COPY lines (source, destination) from the build context, and the
    command the image runs (ENTRYPOINT + CMD)."""
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    copies, entry, cmd = [], [], []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            copies += [(s, _dest) for s in sources]
        elif word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
    return copies, entry + cmd


def test_containerfile_copies_what_exists_and_its_command_serves(
    relay: tuple[Path, Path],
) -> None:
    copies, command = _containerfile()
    assert copies
    for source, _dest in copies:
        assert (ROOT / source).exists(), source
    assert command[:2] == ["/opt/posassist-relay/venv/bin/posassist-relay", "serve"]
    data, tls = relay
    log = _serve_reload_stop(_here(shlex.join(command), data, tls), data)
    assert "posassist relay shutting down" in log
