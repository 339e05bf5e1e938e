"""ESC/POS status: the pure decoder on reference replies, and both probes against the simulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from posassist.agent.collectors.escpos import (
    PrinterStatus,
    ProbeOutcome,
    ProbeResult,
    ReplyState,
    classify_replies,
    is_realtime_status,
    parse_status,
    probe_serial,
    probe_tcp,
)
from posassist.agent.collectors.serialports import Holder
from posassist.agent.errors import PortHeldError, PortUnpluggedError
from posassist.protocol.errors import PosAssistError
from tests.fakes.simprinter import PrinterState, SimPrinter, Variant

FAST = {"timeout": 3.0, "reply_timeout": 0.15}


def replies(*values: int) -> dict[int, bytes]:
    return {n: bytes((v,)) for n, v in zip((1, 2, 3, 4), values, strict=True)}


# --- pure decoder ---------------------------------------------------------------------------


def test_valid_reply_mask_matches_reference_examples():
    for byte in (0x12, 0x16, 0x1A, 0x32, 0x56, 0x76, 0x1E, 0x72, 0x7E):
        assert is_realtime_status(byte)
    for byte in (0x00, 0xFF, 0x10, 0x13, 0x92, 0x02):  # 0x10: an ASB first byte / Star EOT
        assert not is_realtime_status(byte)


def test_parse_status_decodes_a_healthy_printer():
    status = parse_status(replies(0x12, 0x12, 0x12, 0x12))
    assert status.all_valid
    assert status.online is True
    assert status.drawer_pin3_high is False
    assert status.cover_open is False
    assert status.paper_out is False
    assert status.problems() == ()


def test_parse_status_decodes_the_reference_paper_end_capture():
    status = parse_status(replies(0x1A, 0x32, 0x12, 0x7E))  # §4.8 local capture
    assert status.online is False
    assert status.paper_end_stop is True
    assert status.paper_out is True
    assert status.paper_near_end is True
    assert status.problems()[:2] == ("offline", "paper_out")


def test_parse_status_decodes_sweda_cover_open_and_drawer_pin():
    status = parse_status(replies(0x16, 0x56, 0x12, 0x12))
    assert status.drawer_pin3_high is True
    assert status.cover_open is True
    assert status.error_occurred is True


@pytest.mark.parametrize(
    ("byte", "field"),
    [
        (0x16, "recoverable_error"),
        (0x1A, "cutter_error"),
        (0x32, "unrecoverable_error"),
        (0x52, "auto_recoverable_error"),
    ],
)
def test_parse_status_decodes_each_error_cause_bit(byte, field):
    status = parse_status({3: bytes((byte,))})
    assert getattr(status, field) is True


def test_paper_sensor_needs_both_bits_of_a_pair():
    assert parse_status({4: b"\x1e"}).paper_near_end is True
    assert parse_status({4: b"\x16"}).paper_near_end is False  # one bit of 0x0C only
    assert parse_status({4: b"\x72"}).paper_out is True


def test_parse_status_marks_invalid_bytes_as_garbage_instead_of_crashing():
    status = parse_status({1: b"\xff", 2: b"\x12\x12", 3: b"", 4: b"\x10"})
    assert [r.state for r in status.replies] == [
        ReplyState.GARBAGE,
        ReplyState.GARBAGE,
        ReplyState.MISSING,
        ReplyState.GARBAGE,
    ]
    assert status.online is None  # unknown, never "OK"
    assert status.cover_open is None
    assert classify_replies(status) is ProbeOutcome.GARBAGE


def test_half_a_conversation_is_partial_and_keeps_what_arrived():
    status = parse_status({1: b"\x12", 2: b"\x12", 3: b"", 4: b""})
    assert classify_replies(status) is ProbeOutcome.PARTIAL
    assert status.online is True
    assert status.paper_out is None


def test_paper_end_stop_stands_in_for_a_missing_paper_sensor_reply():
    status = parse_status({1: b"\x1a", 2: b"\x32", 3: b"", 4: b""})
    assert status.paper_out is True


def test_no_reply_at_all_is_no_reply():
    assert classify_replies(parse_status({n: b"" for n in (1, 2, 3, 4)})) is ProbeOutcome.NO_REPLY
    assert classify_replies(PrinterStatus(replies=())) is ProbeOutcome.NO_REPLY


# --- probes against the simulator, on both transports --------------------------------------

EXPECTED = {
    PrinterState.OK: (ProbeOutcome.OK, ()),
    PrinterState.PAPER_NEAR_END: (ProbeOutcome.OK, ("paper_near_end",)),
    PrinterState.PAPER_OUT: (ProbeOutcome.OK, ("offline", "paper_out", "paper_near_end")),
    PrinterState.COVER_OPEN: (ProbeOutcome.OK, ("offline", "cover_open")),
    PrinterState.OFFLINE: (ProbeOutcome.OK, ("offline",)),
    PrinterState.CUTTER_ERROR: (ProbeOutcome.OK, ("offline", "cutter_error")),
    PrinterState.UNRECOVERABLE_ERROR: (ProbeOutcome.OK, ("unrecoverable_error", "offline")),
    PrinterState.NO_REPLY: (ProbeOutcome.NO_REPLY, ()),
    PrinterState.GARBAGE_REPLY: (ProbeOutcome.GARBAGE, ()),
    PrinterState.HALF_REPLY: (ProbeOutcome.PARTIAL, ()),
    PrinterState.SLOW_REPLY: (ProbeOutcome.OK, ()),  # 50 ms delay, within the reply timeout
    PrinterState.UNPLUG: (ProbeOutcome.UNPLUGGED, ()),
}


def probe(printer: SimPrinter, transport: str):
    if transport == "tcp":
        host, port = printer.start_tcp()
        return probe_tcp(host, port, **FAST)
    return probe_serial(printer.start_pty(), **FAST)


@pytest.mark.parametrize("transport", ["tcp", "pty"])
@pytest.mark.parametrize("state", list(PrinterState))
def test_probe_reports_every_simulated_state(printer, transport, state):
    printer.set_state(state)
    result = probe(printer, transport)
    outcome, problems = EXPECTED[state]
    assert result.outcome is outcome, result.detail
    if outcome is ProbeOutcome.OK:
        assert result.status is not None
        assert result.status.problems() == problems
    assert printer.model.status_requests  # it really asked the printer


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_unplug_mid_conversation_keeps_the_replies_received_before(printer, transport):
    printer.set_state(PrinterState.UNPLUG)
    result = probe(printer, transport)
    assert result.outcome is ProbeOutcome.UNPLUGGED
    assert result.status is not None
    assert result.status.reply(1).state is ReplyState.VALID  # answered once, then gone
    assert result.status.online is True


def test_pty_port_vanishes_for_good_after_unplug(printer, tmp_path):
    printer.set_state(PrinterState.UNPLUG)
    # its by-id name: the /dev/pts number itself may go to another test's pty at once
    path = printer.start_pty(link=str(tmp_path / "usb-printer-if00"))
    assert probe_serial(path, **FAST).outcome is ProbeOutcome.UNPLUGGED
    deadline = time.monotonic() + 10
    while os.path.exists(path):  # the simulator closes the pty once unplugged
        assert time.monotonic() < deadline, "the unplugged pty stayed"
        time.sleep(0.02)
    again = probe_serial(path, **FAST)
    assert again.outcome is ProbeOutcome.NOT_FOUND
    assert not os.path.exists(path)


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_reply_slower_than_the_timeout_is_no_reply_not_a_stale_answer(printer, transport):
    printer.set_state(PrinterState.SLOW_REPLY, reply_delay=2.0)
    result = probe(printer, transport)
    assert result.outcome is ProbeOutcome.NO_REPLY
    assert result.elapsed < 2.0


def test_state_changes_at_run_time_over_one_listener(printer):
    host, port = printer.start_tcp()
    before = probe_tcp(host, port, **FAST).status
    printer.set_state(PrinterState.PAPER_OUT)
    after = probe_tcp(host, port, **FAST).status
    assert before is not None
    assert after is not None
    assert (before.paper_out, after.paper_out) == (False, True)


def test_refused_tcp_connect_is_not_found():
    with SimPrinter() as sim:
        host, port = sim.start_tcp()
    result = probe_tcp(host, port, **FAST)  # listener closed
    assert result.outcome is ProbeOutcome.NOT_FOUND


def test_missing_serial_port_is_not_found(tmp_path):
    result = probe_serial(str(tmp_path / "ttyUSB9"), **FAST)
    assert result.outcome is ProbeOutcome.NOT_FOUND


def test_star_printer_answering_its_eot_status_is_rejected_as_garbage():
    with SimPrinter(variant=Variant.STAR) as sim:
        host, port = sim.start_tcp()
        result = probe_tcp(host, port, **FAST)
    assert result.outcome is ProbeOutcome.GARBAGE  # 0x10 fails 0xx1xx10; n = 4 doubles the reply
    assert result.status is not None
    assert result.status.online is None


def test_mob58_clone_answers_only_printer_and_paper_status():
    with SimPrinter(PrinterState.PAPER_OUT, variant=Variant.MOB58) as sim:
        result = probe_serial(sim.start_pty(), **FAST)
    assert result.outcome is ProbeOutcome.PARTIAL
    assert result.status is not None
    assert result.status.online is False
    assert result.status.cover_open is None  # n = 2 unsupported: unknown, not "closed"


NOBODY = 65534
SYSTEM_PYTHON = shutil.which("python3.11", path="/usr/bin")


@pytest.mark.skipif(
    os.geteuid() != 0 or SYSTEM_PYTHON is None, reason="needs root to drop to nobody"
)
def test_probe_reports_permission_denied_on_a_port_it_may_not_open():
    # Root may open a mode-000 file, so the probe runs as nobody in a child process. The
    # checkout and its venv may sit in a private home, so what nobody imports is copied into a
    # folder opened to it: the agent's packages in the installed layout and their dependencies.
    import glob

    import cryptography
    import msgpack
    import psutil  # type: ignore[import-untyped]
    import serial

    import posassist.agent
    import posassist.client
    import posassist.protocol

    workdir = tempfile.mkdtemp()
    try:
        os.chmod(workdir, 0o755)
        lib = os.path.join(workdir, "lib")
        for package, name in (
            (posassist.agent, "posassist/agent"),
            (posassist.protocol, "posassist/protocol"),
            (posassist.client, "posassist/client"),
            (serial, "serial"),
            (msgpack, "msgpack"),
            (psutil, "psutil"),
            (cryptography, "cryptography"),
        ):
            shutil.copytree(
                os.path.dirname(package.__file__ or ""),
                os.path.join(lib, name),
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        site = os.path.dirname(os.path.dirname(msgpack.__file__ or ""))
        for extension in glob.glob(os.path.join(site, "_cffi_backend*")):
            shutil.copy(extension, lib)
        for folder, _, _ in os.walk(workdir):
            os.chmod(folder, 0o755)
        port = os.path.join(workdir, "ttyS9")
        with open(port, "wb"):
            pass
        os.chmod(port, 0)
        code = (
            f"import sys; sys.path.insert(0, {lib!r}); "
            "from posassist.agent.collectors.escpos import probe_serial; "
            f"print(probe_serial({port!r}).outcome.value)"
        )
        assert SYSTEM_PYTHON is not None
        out = subprocess.run(
            [SYSTEM_PYTHON, "-I", "-c", code],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout.strip() == "permission_denied", out.stderr
    finally:
        shutil.rmtree(workdir)


def test_probe_of_a_regular_file_is_an_error_not_a_crash(tmp_path):
    port = tmp_path / "not-a-tty"
    port.write_bytes(b"")
    result = probe_serial(str(port), **FAST)
    assert result.outcome is ProbeOutcome.ERROR


def test_link_faults_raise_typed_errors_and_printer_findings_do_not(printer):
    printer.set_state(PrinterState.UNPLUG)
    host, port = printer.start_tcp()
    with pytest.raises(PortUnpluggedError) as info:
        probe_tcp(host, port, **FAST).raise_for_outcome()
    assert isinstance(info.value, PosAssistError)
    assert info.value.port == f"tcp://{host}:{port}"
    printer.set_state(PrinterState.PAPER_OUT)
    probe_tcp(host, port, **FAST).raise_for_outcome()  # a paper-out printer is a finding
    held = ProbeResult("/dev/ttyS0", ProbeOutcome.HELD, held_by=(Holder(7, "posapp"),))
    with pytest.raises(PortHeldError) as held_info:
        held.raise_for_outcome()
    assert held_info.value.holders == (Holder(7, "posapp"),)
