"""Serial ports: holder detection (and never opening a held port), error mapping, VID:PID table."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import termios

import pytest
import serial

from posassist.agent.collectors.escpos import ProbeOutcome, probe_serial
from posassist.agent.collectors.serialports import (
    DeviceKind,
    Holder,
    PortFault,
    classify_serial_error,
    describe_port,
    find_holders,
    iter_fd_links,
    match_usb_device,
    parse_holders,
    parse_hwid,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc scan")


# --- holders: pure ----------------------------------------------------------------------------


def test_parse_holders_finds_each_process_once_and_skips_excluded():
    links = [
        (10, "bash", "/dev/pts/1"),
        (42, "posapp", "/dev/ttyUSB0"),
        (42, "posapp", "/dev/ttyUSB0"),  # two fds, one holder
        (7, None, "/dev/ttyUSB0"),  # name refused by psutil (AccessDenied)
        (99, "agent", "/dev/ttyUSB0"),
        (43, "logger", "/var/log/pos.log"),
    ]
    assert parse_holders(links, "/dev/ttyUSB0", exclude_pids=[99]) == [
        Holder(7, None),
        Holder(42, "posapp"),
    ]


def test_parse_holders_compares_normalised_paths():
    assert parse_holders([(1, "x", "/dev//ttyS0")], "/dev/ttyS0") == [Holder(1, "x")]
    assert parse_holders([(1, "x", "/dev/ttyS01")], "/dev/ttyS0") == []


# --- holders: the real /proc walk, and the probe that must not open a held port ----------------


@pytest.fixture
def held_pty(printer):
    """A child process that holds the simulator's pty slave open, like a POS application."""
    path = printer.start_pty()
    code = (
        "import os, sys, time\n"
        f"fd = os.open({path!r}, os.O_RDWR | os.O_NOCTTY)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        try:
            yield path, child
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=5)


@linux_only
def test_find_holders_names_the_process_holding_a_port(held_pty):
    path, child = held_pty
    holders = find_holders(path)
    assert [h.pid for h in holders] == [child.pid]
    assert holders[0].name is not None
    assert holders[0].name.startswith("python")


@linux_only
def test_agent_refuses_to_open_a_held_port(printer, held_pty):
    path, child = held_pty
    result = probe_serial(path, timeout=2.0, reply_timeout=0.2)
    assert result.outcome is ProbeOutcome.HELD
    assert [h.pid for h in result.held_by] == [child.pid]
    assert f"pid {child.pid}" in result.detail
    assert result.status is None
    # Proof it never opened the port: not one byte reached the printer, no request was decoded.
    assert printer.bytes_received == 0
    assert printer.model.status_requests == []
    # ...and this process has no descriptor on the port.
    own = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
    assert path not in own


@linux_only
def test_probe_works_again_once_the_holder_lets_go(printer):
    path = printer.start_pty()
    assert probe_serial(path, reply_timeout=0.2).outcome is ProbeOutcome.OK


@linux_only
def test_holder_scan_skips_processes_that_vanished_or_hide_their_fds(tmp_path):
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait()
    # a reaped pid (NoSuchProcess) and a fake procfs entry without an fd dir: both skipped quietly
    (tmp_path / "12345").mkdir()
    links = list(iter_fd_links([(gone.pid, "python"), (12345, None)]))
    assert links == []
    links = list(iter_fd_links([(os.getpid(), "pytest")]))
    assert links  # our own fds are readable


# --- error mapping (reference §4.6 texts) -------------------------------------------------------


def se(*args: object) -> serial.SerialException:
    return serial.SerialException(*args)


@pytest.mark.parametrize(
    ("exc", "opening", "fault"),
    [
        # Linux
        (
            se(2, "could not open port /dev/ttyUSB9: [Errno 2] No such file or directory"),
            True,
            PortFault.NOT_FOUND,
        ),
        (
            se(13, "could not open port /dev/ttyS0: [Errno 13] Permission denied: '/dev/ttyS0'"),
            True,
            PortFault.PERMISSION_DENIED,
        ),
        (
            se(
                11,
                "Could not exclusively lock port /dev/pts/3: [Errno 11] Resource temporarily "
                "unavailable",
            ),
            True,
            PortFault.HELD,
        ),
        (
            se(
                "device reports readiness to read but returned no data (device disconnected or "
                "multiple access on port?)"
            ),
            False,
            PortFault.UNPLUGGED,
        ),
        (se("write failed: [Errno 5] Input/output error"), False, PortFault.UNPLUGGED),
        (OSError(5, "Input/output error"), False, PortFault.UNPLUGGED),  # in_waiting: raw OSError
        (termios.error(5, "Input/output error"), False, PortFault.UNPLUGGED),  # reset_input_buffer
        (se("Could not configure port: (5, 'Input/output error')"), False, PortFault.UNPLUGGED),
        # Windows
        (
            se(
                "could not open port 'COM4': FileNotFoundError(2, 'The system cannot find the file "
                "specified.', None, 2)"
            ),
            True,
            PortFault.NOT_FOUND,
        ),
        (
            se("could not open port 'COM3': PermissionError(13, 'Access is denied.', None, 5)"),
            True,
            PortFault.HELD,
        ),
        (
            se(
                "could not open port 'COM5': OSError(22, 'The semaphore timeout period has "
                "expired.', None, 121)"
            ),
            True,
            PortFault.UNPLUGGED,
        ),
        (
            se("ClearCommError failed (PermissionError(13, 'Access is denied.', None, 5))"),
            False,
            PortFault.UNPLUGGED,
        ),
        (
            se("WriteFile failed (PermissionError(13, 'Access is denied.', None, 5))"),
            False,
            PortFault.UNPLUGGED,
        ),
        (serial.SerialTimeoutException("Write timeout"), False, PortFault.TIMEOUT),
        # sockets
        (ConnectionResetError(errno.ECONNRESET, "reset"), False, PortFault.UNPLUGGED),
        (ValueError("something else"), False, PortFault.ERROR),
        (se(25, "Inappropriate ioctl for device"), True, PortFault.ERROR),
    ],
)
def test_serial_errors_map_to_typed_faults(exc, opening, fault):
    assert classify_serial_error(exc, opening=opening)[0] is fault


def test_linux_permission_denied_is_not_mistaken_for_a_held_port():
    exc = se(13, "could not open port /dev/ttyUSB0: [Errno 13] Permission denied: '/dev/ttyUSB0'")
    fault, why = classify_serial_error(exc, opening=True)
    assert fault is PortFault.PERMISSION_DENIED
    assert "dialout" in why


# --- USB ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hwid", "expected"),
    [
        ("USB VID:PID=0403:6001 SER=A1B2C3 LOCATION=1-1.2", (0x0403, 0x6001, "A1B2C3", "1-1.2")),
        ("USB VID:PID=067B:2303 LOCATION=1-1:1.0", (0x067B, 0x2303, None, "1-1:1.0")),
        ("USB\\VID_1A86&PID_7523\\5&2A3B4C5D&0&2", (0x1A86, 0x7523, None, None)),
        ("FTDIBUS\\VID_0403+PID_6001+A1B2C3A\\0000", (0x0403, 0x6001, "A1B2C3A", None)),
        ("PNP0501", (None, None, None, None)),
        ("n/a", (None, None, None, None)),
    ],
)
def test_parse_hwid_reads_linux_and_windows_forms(hwid, expected):
    assert parse_hwid(hwid) == expected


def test_match_usb_device_prefers_exact_pid_then_vendor():
    exact = match_usb_device(0x04B8, 0x0E28)
    assert exact is not None
    assert exact.product.startswith("TM-T20III")
    vendor = match_usb_device(0x04B8, 0x9999)
    assert vendor is not None
    assert vendor.pid is None
    assert vendor.kind is DeviceKind.RECEIPT_PRINTER
    assert match_usb_device(0x1234, 0x5678) is None
    assert match_usb_device(None, None) is None


def test_usb_serial_bridges_carry_the_counterfeit_and_driver_notes():
    pl2303 = match_usb_device(0x067B, 0x2303)
    ch340 = match_usb_device(0x1A86, 0x7523)
    assert pl2303 is not None
    assert ch340 is not None
    assert pl2303.kind is ch340.kind is DeviceKind.USB_SERIAL_BRIDGE
    assert "Code 10" in pl2303.note
    assert "Windows 7" in ch340.note
    assert not pl2303.verified  # the reference gives this id with ⚠


def test_describe_port_matches_a_pos_printer_and_a_plain_uart():
    usb = describe_port("/dev/ttyUSB0", "POS-5890", "USB VID:PID=0416:5011 SER=X LOCATION=1-2")
    assert usb.usb_id == "0416:5011"
    assert usb.known is not None
    assert usb.known.kind is DeviceKind.RECEIPT_PRINTER
    uart = describe_port("/dev/ttyS0", "ttyS0", "PNP0501")
    assert uart.usb_id is None
    assert uart.known is None
