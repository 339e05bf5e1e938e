"""``posassist-agent configure`` (agent/discovery.py): printers that answer DLE EOT on a serial
port (a simulated printer on a pty) and on raw TCP (a loopback stand-in) are proposed and written
to settings.json; a port another process holds is not opened; the POS is detected by its process;
bad input changes nothing and asks no device."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from posassist.agent.discovery import (
    Candidate,
    propose,
    queue_candidates,
    running_profiles,
    tcp_targets,
)
from posassist.agent.errors import ConfigError
from tests.e2e.cli import ROOT
from tests.fakes.simprinter import PrinterState, SimPrinter

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _configure(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "posassist.agent", "configure", "--data", str(data), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def printers() -> Iterator[tuple[SimPrinter, str, SimPrinter, str]]:
    serial, tcp = SimPrinter(PrinterState.OK), SimPrinter(PrinterState.PAPER_OUT)
    with serial, tcp:
        pty = serial.start_pty()
        host, port = tcp.start_tcp()
        yield serial, pty, tcp, f"{host}:{port}"


def test_tcp_targets_are_hosts_ports_and_small_networks_only() -> None:
    assert tcp_targets(["10.0.0.5", "10.0.0.6:9101", "192.168.1.0/30"]) == [
        ("10.0.0.5", 9100),
        ("10.0.0.6", 9101),
        ("192.168.1.1", 9100),
        ("192.168.1.2", 9100),
    ]
    assert len(tcp_targets(["192.168.7.0/24"])) == 254
    assert tcp_targets(["[::1]:9101", "[fe80::1]"]) == [("::1", 9101), ("fe80::1", 9100)]
    for bad, said in [
        ("10.0.0.0/16", "at most 256"),
        ("10.0.0.5:0", "port must be"),
        ("10.0.0.5:http", "port must be"),
        ("300.1.2.3/30", "not an IPv4 network"),
        ("a b", "give a host"),
        ("[::1", r"give \[ipv6\]"),
        ("[nope]:9100", "not an IPv6 address"),
        ("[::1]:0", "port must be"),
    ]:
        with pytest.raises(ConfigError, match=said):
            tcp_targets([bad])


def test_proposal_keeps_what_is_configured_and_adds_what_answered() -> None:
    current = {
        "time_zone": "Asia/Shanghai",
        "printers": [{"name": "printer1", "serial": "/dev/ttyS0"}],
    }
    found = [
        Candidate("serial", "/dev/ttyS0", "held", "held by pos (pid 9)"),
        Candidate(
            "serial", "/dev/ttyUSB0", "ok", "ok", {"serial": "/dev/ttyUSB0", "baudrate": 9600}
        ),
        Candidate("tcp", "tcp://10.0.0.5:9100", "ok", "ok", {"tcp": "10.0.0.5:9100"}),
        Candidate("tcp", "tcp://10.0.0.5:9100", "ok", "ok", {"tcp": "10.0.0.5:9100"}),
    ]
    doc = propose(current, found, "demo")
    assert doc["time_zone"] == "Asia/Shanghai"
    assert doc["pos_profile"] == "demo"
    assert doc["printers"] == [
        {"name": "printer1", "serial": "/dev/ttyS0"},
        {"name": "printer2", "serial": "/dev/ttyUSB0", "baudrate": 9600},
        {"name": "printer3", "tcp": "10.0.0.5:9100"},
    ]
    assert propose(current, [], None) == current
    queue = {"system": "cups", "printers": [{"name": "TM-T20"}, {"bad": 1}, "x"]}
    (listed,) = queue_candidates(queue)
    assert listed.line() == "已列出 / listed: queue TM-T20 (cups print queue)"
    assert listed.entry is None  # named for the technician, not configured
    assert running_profiles({"demo": ["Demo-POS"], "x": ["xpos"]}, ["bash", "demo-pos"]) == ["demo"]


def test_configure_finds_serial_and_tcp_printers_writes_settings_and_diag_uses_them(
    tmp_path: Path, printers: tuple[SimPrinter, str, SimPrinter, str]
) -> None:
    _, pty, _, tcp = printers
    data = tmp_path / "till"
    data.mkdir()
    (data / "settings.json").write_text('{"time_zone": "Asia/Shanghai"}')
    done = _configure(
        data, "--serial", pty, "--tcp", tcp, "--tcp", "127.0.0.1:1", "--no-scan",
        "--pos-profile", "demo", "--write",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"printer found: {pty} (ok)" in done.stdout
    assert f"printer found: tcp://{tcp}" in done.stdout  # paper out, but a printer answered
    assert "no printer answered: tcp://127.0.0.1:1" in done.stdout
    saved = json.loads((data / "settings.json").read_text())
    assert saved == {
        "time_zone": "Asia/Shanghai",
        "printers": [
            {"name": "printer1", "serial": pty, "baudrate": 9600},
            {"name": "printer2", "tcp": tcp},
        ],
        "pos_profile": "demo",
    }
    assert json.loads((data / "settings.json.bak").read_text()) == {"time_zone": "Asia/Shanghai"}
    assert (data / "settings.json").stat().st_mode & 0o077 == 0
    diag = subprocess.run(
        [
            sys.executable,
            "-m",
            "posassist.agent",
            "diag",
            "--offline",
            "--json",
            "--data",
            str(data),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    section = json.loads(diag.stdout)["sections"]["printers"]
    rows = {row["name"]: row for row in section["data"]["printers"]}
    assert rows["printer1"]["outcome"] == "ok"
    assert rows["printer2"]["target"] == f"tcp://{tcp}"
    assert "printer.paper_out" in [f["code"] for f in section["findings"]]


def test_a_port_another_process_holds_is_named_not_opened(
    tmp_path: Path, printers: tuple[SimPrinter, str, SimPrinter, str]
) -> None:
    serial, pty, _, _ = printers
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; f = open({pty!r}, 'rb'); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(
            os.path.realpath(f"/proc/{holder.pid}/fd/{fd}") == pty for fd in _fds(holder.pid)
        ):
            assert time.monotonic() < deadline, "the holder never opened the port"
            time.sleep(0.02)
        done = _configure(tmp_path / "till", "--serial", pty, "--no-scan", "--pos-profile", "demo")
    finally:
        holder.kill()
        holder.communicate()
    assert done.returncode == 0, done.stderr
    assert f"not probed, in use: {pty} (held by" in done.stdout
    assert serial.bytes_received == 0
    assert not (tmp_path / "till" / "settings.json").exists()  # without --write nothing is saved


def _fds(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []


def test_configure_detects_the_pos_by_its_running_process(tmp_path: Path) -> None:
    pos = tmp_path / "posassist-demo-pos"  # a process named like the demo profile's POS
    shutil.copy("/bin/sleep", pos)
    proc = subprocess.Popen([str(pos), "60"])
    try:
        done = _configure(tmp_path / "till", "--no-scan", "--write")
    finally:
        proc.kill()
        proc.communicate()
    assert done.returncode == 0, done.stderr
    assert "POS detected: demo" in done.stdout
    assert json.loads((tmp_path / "till" / "settings.json").read_text()) == {"pos_profile": "demo"}


@pytest.mark.parametrize(
    ("case", "args", "said"),
    [
        ("broken settings", [], "is unreadable"),
        ("unknown profile", ["--pos-profile", "no-such-pos"], "POS profile 'no-such-pos'"),
        ("whole site", ["--tcp", "10.0.0.0/8"], "at most 256"),
        ("bad baud", ["--baudrate", "0"], "--baudrate must be"),
        ("odd baud", ["--baudrate", "12345"], "--baudrate must be"),
        ("tiny baud", ["--baudrate", "1"], "--baudrate must be"),
    ],
)
def test_bad_input_is_refused_asks_no_printer_and_writes_nothing(
    tmp_path: Path,
    printers: tuple[SimPrinter, str, SimPrinter, str],
    case: str,
    args: list[str],
    said: str,
) -> None:
    serial, pty, tcp_printer, tcp = printers
    data = tmp_path / "till"
    data.mkdir()
    before = "{not json" if case == "broken settings" else '{"pos_profile": "demo"}'
    (data / "settings.json").write_text(before)
    done = _configure(data, "--serial", pty, "--tcp", tcp, "--no-scan", "--write", *args)
    assert done.returncode == 2
    assert said in done.stderr
    assert (data / "settings.json").read_text() == before
    assert not (data / "settings.json.bak").exists()
    assert serial.bytes_received == 0
    assert tcp_printer.bytes_received == 0


def test_a_device_that_never_stops_sending_is_cut_at_the_probes_deadline(tmp_path: Path) -> None:
    """Attack F4: a "printer" that streams bytes forever; the real configure is bounded."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    stop = threading.Event()

    def stream() -> None:
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.settimeout(0.5)
            with conn:
                while not stop.is_set():
                    try:
                        conn.sendall(b"\x12" * 4096)
                    except OSError:
                        break

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        data = tmp_path / "till"
        data.mkdir()
        started = time.monotonic()
        done = _configure(data, "--no-scan", "--tcp", f"127.0.0.1:{port}")
        assert time.monotonic() - started < 30
        assert "Traceback" not in done.stderr
        assert done.returncode in (0, 1), done.stdout + done.stderr
        assert not (data / "settings.json").exists()  # no --write
    finally:
        stop.set()
        thread.join(5)
        server.close()
