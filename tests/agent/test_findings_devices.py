"""Printer findings against a device that answers as reference/pos-devices.md §1.2 says: a raw-TCP
"printer" on 127.0.0.1 that replies to DLE EOT n with the bytes the reference's tables give for a
state. Independent of tests/fakes/simprinter.py and its state names."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from posassist.agent.diagnostics import Collector, DiagContext, collect_report
from posassist.agent.findings import Severity, annotate, evaluate
from posassist.agent.settings import PrinterConfig, Settings
from tests.fakes.refprinter import OK, RefPrinter

if TYPE_CHECKING:
    from collections.abc import Iterator

#: DLE EOT 1..4 replies from the reference's tables and worked replies (§1.2)
STATES = {
    # paper end: offline (0x1A), stopped by paper end (0x32), sensor end (0x72)
    "paper_out": ({1: 0x1A, 2: 0x32, 3: 0x12, 4: 0x72}, "printer.paper_out", Severity.FAULT),
    # near end only: online, 0x1E on the roll sensor
    "near_end": ({**OK, 4: 0x1E}, "printer.paper_near_end", Severity.WARNING),
    # cover open with paper (Sweda 0x56 = cover open + error)
    "cover_open": ({1: 0x1A, 2: 0x56, 3: 0x12, 4: 0x12}, "printer.cover_open", Severity.FAULT),
    # autocutter error: n=3 0x1A (bit 3)
    "cutter": ({1: 0x1A, 2: 0x52, 3: 0x1A, 4: 0x12}, "printer.cutter_error", Severity.FAULT),
    # recoverable error: n=3 bit 2
    "recoverable": ({1: 0x1A, 2: 0x52, 3: 0x16, 4: 0x12}, "printer.recoverable_error",
                    Severity.FAULT),
    # unrecoverable error: n=3 bit 5
    "unrecoverable": ({1: 0x1A, 2: 0x52, 3: 0x32, 4: 0x12}, "printer.unrecoverable_error",
                      Severity.CRITICAL),
    # waiting for online recovery: n=1 bit 5 with offline
    "waiting": ({1: 0x3A, 2: 0x12, 3: 0x12, 4: 0x12}, "printer.waiting_recovery",
                Severity.WARNING),
    # offline with no cause reported in n=2/3 (e.g. a clone that only fills n=1)
    "offline": ({1: 0x1A, 2: 0x12, 3: 0x12, 4: 0x12}, "printer.offline", Severity.FAULT),
    # bytes that fail 0xx1xx10 (a Star printer, a wrong baud rate)
    "garbage": ({1: 0xFF, 2: 0x00, 3: 0xFF, 4: 0x00}, "printer.unreadable", Severity.WARNING),
    # truncated: answers DLE EOT 1 and 2, then goes silent
    "half": ({1: 0x12, 2: 0x12}, "printer.unreadable", Severity.WARNING),
    # silent: powered off behind a live link (no reply to anything)
    "silent": ({}, "printer.unreachable", Severity.FAULT),
}  # fmt: skip


@pytest.fixture
def ref_printer() -> Iterator[type[RefPrinter]]:
    made: list[RefPrinter] = []

    def make(replies: dict[int, int]) -> RefPrinter:
        printer = RefPrinter(replies)
        made.append(printer)
        return printer

    yield make  # type: ignore[misc]
    for printer in made:
        printer.close()


def _printers(ctx: DiagContext) -> object:
    from posassist.agent.collectors import printers

    return printers.collect(ctx)


async def _report(port: int) -> dict[str, object]:
    printer = PrinterConfig("receipt", host="127.0.0.1", port=port)
    ctx = DiagContext(Settings(printers=(printer,), printer_min_interval=0.0))
    sections = await collect_report(
        ctx, [Collector("printers", _printers, 10.0)], time.monotonic() + 10
    )
    return {"sections": sections}


@pytest.mark.parametrize("state", sorted(STATES))
async def test_printer_states_from_the_reference_give_their_finding(ref_printer, state) -> None:
    replies, code, severity = STATES[state]
    device = ref_printer(replies)
    report = await _report(device.port)
    found = [f for f in evaluate(report, None, time.time()) if f.section == "printers"]
    assert code in [f.code for f in found], found
    finding = next(f for f in found if f.code == code)
    assert finding.severity is severity
    assert finding.subject == "receipt"
    if replies:
        assert finding.evidence["replies"]["1"] == f"{replies[1]:02x}"  # the bytes it read
    assert device.asked[:1] == [1]


async def test_a_healthy_printer_has_no_finding_and_its_section_is_ok(ref_printer) -> None:
    device = ref_printer(OK)
    report = await _report(device.port)
    annotate(report, None, time.time())
    section = report["sections"]["printers"]  # type: ignore[index]
    assert section["findings"] == []
    assert section["status"] == "ok"


async def test_a_jam_offers_dle_enq_recovery_as_a_class_b_script(ref_printer) -> None:
    device = ref_printer(STATES["cutter"][0])
    report = await _report(device.port)
    annotate(report, None, time.time())
    (finding,) = report["sections"]["printers"]["findings"]  # type: ignore[index]
    assert finding["script"] == {"id": "printer-recover", "risk": "B"}
    assert "DLE ENQ" in finding["technician"]["en"]
    assert report["sections"]["printers"]["status"] == "fault"  # type: ignore[index]


async def test_a_printer_port_nobody_listens_on_is_unreachable(unused_port) -> None:
    report = await _report(unused_port)
    (finding,) = evaluate(report, None, time.time())
    assert finding.code == "printer.unreachable"
    assert "connect failed" in finding.detail["en"]


async def test_settings_naming_a_serial_device_that_does_not_exist(tmp_path) -> None:
    printer = PrinterConfig("receipt", serial=str(tmp_path / "ttyUSB9"))
    ctx = DiagContext(Settings(printers=(printer,), printer_min_interval=0.0))
    deadline = time.monotonic() + 10
    sections = await collect_report(ctx, [Collector("printers", _printers, 10.0)], deadline)
    (finding,) = evaluate({"sections": sections}, None, time.time())
    assert finding.code == "printer.unreachable"
    assert finding.evidence["outcome"] == "not_found"


# --- a printer named by USB identity (§0.9, §5 #10) ---------------------------------------------

HWID = "USB VID:PID=0416:5011 SER=PRN0042 LOCATION=1-1.4"


def _usb_report(ctx: DiagContext, ports: list[Any]) -> dict[str, Any]:
    from posassist.agent.collectors import printers

    return {"sections": {"printers": {"ok": True, "data": printers.collect(ctx, lambda: ports)}}}


def test_a_renumbered_port_is_found_by_usb_identity_and_probed_there(printer) -> None:
    from posassist.agent.collectors.serialports import describe_port

    pty = printer.start_pty()  # the re-plugged adapter now lives here
    ports = [
        describe_port("/dev/ttyS0", "n/a", "n/a"),
        describe_port(pty, "USB Thermal Printer", HWID),
    ]
    configured = PrinterConfig("receipt", serial="/dev/ttyUSB0", usb="0416:5011:PRN0042")
    ctx = DiagContext(Settings(printers=(configured,), printer_min_interval=0.0))
    report = _usb_report(ctx, ports)
    (row,) = report["sections"]["printers"]["data"]["printers"]  # type: ignore[index]
    assert row["outcome"] == "ok"  # probed on the port it has now
    assert row["target"] == pty
    assert printer.bytes_received > 0
    (finding,) = evaluate(report, None, time.time())
    assert finding.code == "printer.port_renumbered"
    assert finding.evidence["configured"] == "/dev/ttyUSB0"
    assert f"now on {pty}" in finding.detail["en"]
    assert "0416:5011:PRN0042" in finding.detail["en"]
    assert finding.to_dict()["script"] == {"id": "fix-printer-port", "risk": "C"}


def test_a_usb_printer_that_is_not_plugged_in_or_ambiguous(printer) -> None:
    from posassist.agent.collectors.serialports import describe_port

    pty = printer.start_pty()
    two = [
        describe_port(pty, "USB Thermal Printer", HWID),
        describe_port("/dev/ttyUSB7", "USB Thermal Printer", HWID.replace("PRN0042", "PRN0099")),
    ]
    by_model = PrinterConfig("receipt", usb="0416:5011")
    ctx = DiagContext(Settings(printers=(by_model,), printer_min_interval=0.0))
    (finding,) = evaluate(_usb_report(ctx, two), None, time.time())
    assert finding.code == "printer.usb_ambiguous"
    assert "add its serial" in finding.detail["en"]
    gone = PrinterConfig("receipt", usb="0416:5011:PRN0042")
    ctx = DiagContext(Settings(printers=(gone,), printer_min_interval=0.0))
    (finding,) = evaluate(_usb_report(ctx, two[1:]), None, time.time())
    assert finding.code == "printer.unreachable"
    assert "no serial port with USB id 0416:5011:PRN0042" in finding.detail["en"]
    assert printer.bytes_received == 0  # nothing was sent to a device it could not name


def test_a_usb_printer_that_is_present_but_silent_offers_a_software_replug(printer) -> None:
    from posassist.agent.collectors.serialports import describe_port
    from tests.fakes.simprinter import PrinterState

    pty = printer.start_pty()
    printer.set_state(PrinterState.NO_REPLY)  # reads the request, never answers
    ports = [describe_port(pty, "USB Thermal Printer", HWID)]
    configured = PrinterConfig("receipt", usb="0416:5011:PRN0042")
    ctx = DiagContext(Settings(printers=(configured,), printer_min_interval=0.0))
    (finding,) = evaluate(_usb_report(ctx, ports), None, time.time())
    assert finding.code == "printer.usb_wedged"
    assert f"present on {pty} (USB 0416:5011)" in finding.detail["en"]
    assert finding.to_dict()["script"] == {"id": "reset-usb-serial", "risk": "B"}
    assert printer.bytes_received > 0  # it was asked, and said nothing
