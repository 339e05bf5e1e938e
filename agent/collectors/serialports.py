"""Serial ports on the till: who holds a port (Linux /proc), what a USB VID:PID is, error mapping.

Pure parsers and matchers, each with a thin I/O twin (the /proc walk, pyserial's port list).
"""

from __future__ import annotations

import enum
import errno
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "KNOWN_USB_DEVICES",
    "DeviceKind",
    "Holder",
    "KnownDevice",
    "PortFault",
    "SerialPort",
    "classify_serial_error",
    "describe_port",
    "find_by_usb_identity",
    "find_holders",
    "iter_fd_links",
    "list_serial_ports",
    "match_usb_device",
    "parse_holders",
    "parse_hwid",
    "parse_prober_lines",
    "prober_activity",
]


# --- who holds a port --------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """A process that has a port open."""

    pid: int
    name: Optional[str]  # None when psutil was refused the name (AccessDenied)


FdLink = Tuple[int, Optional[str], str]  # (pid, process name, where /proc/<pid>/fd/<n> points)


def parse_holders(
    fd_links: Iterable[FdLink], device: str, exclude_pids: Iterable[int] = ()
) -> List[Holder]:
    """Pick the processes whose open file descriptors point at ``device``.

    Args:
        fd_links: ``(pid, name, link_target)`` for every open descriptor seen.
        device: the port's canonical path (resolve symlinks such as /dev/serial/by-id first).
        exclude_pids: processes that don't count (the agent itself).

    Returns:
        One holder per process, ordered by pid.
    """
    wanted = os.path.normpath(device)
    skip = set(exclude_pids)
    found = {}
    for pid, name, target in fd_links:
        if pid in skip or pid in found:
            continue
        if os.path.normpath(target) == wanted:
            found[pid] = Holder(pid, name)
    return [found[pid] for pid in sorted(found)]


def _process_table() -> Iterator[Tuple[int, Optional[str]]]:
    import psutil  # type: ignore[import-untyped]  # loaded when a scan runs

    # attrs + ad_value: one pass, AccessDenied becomes None; vanished processes are skipped (§6.2).
    for proc in psutil.process_iter(["pid", "name"], ad_value=None):
        yield proc.info["pid"], proc.info["name"]


def iter_fd_links(
    processes: Optional[Iterable[Tuple[int, Optional[str]]]] = None, proc_root: str = "/proc"
) -> Iterator[FdLink]:
    """Walk ``/proc/<pid>/fd`` of each process (Linux). psutil's ``open_files()`` hides ttys (§6.4).

    Processes that exit during the walk, and those we may not inspect, are skipped silently.

    Args:
        processes: ``(pid, name)`` pairs to look at; defaults to every process psutil lists.
        proc_root: where procfs is mounted.

    Yields:
        ``(pid, name, link_target)`` for each readable descriptor.
    """
    for pid, name in processes if processes is not None else _process_table():
        fd_dir = os.path.join(proc_root, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone (NoSuchProcess) or another user's (AccessDenied without root)
            continue
        for fd in fds:
            try:
                yield pid, name, os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue


def find_holders(device: str, exclude_pids: Optional[Iterable[int]] = None) -> List[Holder]:
    """Find the other processes that hold ``device`` open.

    On Linux this scans /proc (root, or CAP_DAC_READ_SEARCH, sees every process). Elsewhere it
    returns an empty list: Windows opens are exclusive, so the open itself fails with "Access is
    denied" and :func:`classify_serial_error` reports that as HELD.

    Args:
        device: port path; symlinks are resolved.
        exclude_pids: processes that don't count; defaults to this process.

    Returns:
        The holders, ordered by pid.
    """
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        return []
    skip = [os.getpid()] if exclude_pids is None else list(exclude_pids)
    return parse_holders(iter_fd_links(), os.path.realpath(device), skip)


# --- error mapping (reference §4.6) ------------------------------------------------------------


class PortFault(str, enum.Enum):
    """What went wrong with a port, whatever the platform said."""

    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    HELD = "held"
    UNPLUGGED = "unplugged"
    TIMEOUT = "timeout"
    ERROR = "error"


# "[Errno 5] ...", "PermissionError(13, ...", and pyserial's "Could not configure port: (5, '...')"
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]|\b[A-Za-z]*Error\((\d+),|: \((\d+), '")


def _errno_of(exc: BaseException) -> Optional[int]:
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    # termios.error is not an OSError: args are (errno, text). pyserial often stringifies the cause.
    if exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    match = _ERRNO_IN_TEXT.search(str(exc))
    if match:
        return int(match.group(1) or match.group(2) or match.group(3))
    return None


_GONE = (errno.EIO, errno.ENXIO, errno.ENODEV, errno.EPIPE, errno.ECONNRESET, errno.EBADF)


def classify_serial_error(exc: BaseException, opening: bool) -> Tuple[PortFault, str]:
    """Map a pyserial / OS / socket exception to a :class:`PortFault` (reference §4.6 matrix).

    Works from the exception type, errno and the texts pyserial produces on Windows and Linux, so it
    can be tested on captured messages without the hardware.

    Args:
        exc: what the open, read or write raised.
        opening: True if it was raised by ``open()``, False during the conversation.

    Returns:
        The fault and a short explanation for the technician.
    """
    text = str(exc)
    number = _errno_of(exc)
    if type(exc).__name__ == "SerialTimeoutException" or isinstance(exc, TimeoutError):
        return PortFault.TIMEOUT, "write timed out (printer busy, or link stuck)"
    if "Access is denied" in text:
        # Windows opens are exclusive (dwShareMode=0): this is "someone else has it" (§0.1).
        if opening:
            return PortFault.HELD, "in use by another process (Windows: access denied)"
        return PortFault.UNPLUGGED, "device gone (WriteFile: access denied)"
    if opening:
        if "semaphore timeout" in text or number in (121, errno.EIO):
            return PortFault.UNPLUGGED, "driver stuck or device gone at open"
        if number in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "FileNotFoundError" in text:
            return PortFault.NOT_FOUND, "no such port"
        if number in (errno.EACCES, errno.EPERM):
            return PortFault.PERMISSION_DENIED, "permission denied (Linux: add the dialout group)"
        if number in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text:
            return PortFault.HELD, "locked by another process"
        if number == errno.ENOTTY:
            return PortFault.ERROR, "not a serial device"
        if number == errno.ECONNREFUSED:
            return PortFault.NOT_FOUND, "connection refused"
        return PortFault.ERROR, f"could not open port ({type(exc).__name__})"
    if (
        "returned no data" in text
        or "ClearCommError failed" in text
        or "ReadFile failed" in text
        or "WriteFile failed" in text
        or number in _GONE
        or isinstance(exc, (ConnectionError, EOFError))
    ):
        return PortFault.UNPLUGGED, "device disconnected mid-conversation"
    return PortFault.ERROR, f"port error ({type(exc).__name__})"


# --- USB VID:PID of common POS devices ---------------------------------------------------------


class DeviceKind(str, enum.Enum):
    """What a USB device on a till usually is."""

    RECEIPT_PRINTER = "receipt_printer"
    SCANNER = "scanner"
    SCALE = "scale"
    CUSTOMER_DISPLAY = "customer_display"
    USB_SERIAL_BRIDGE = "usb_serial_bridge"  # the device behind it is unknown: check the POS config
    USB_CDC = "usb_cdc"


@dataclass(frozen=True)
class KnownDevice:
    """One row of the POS device table. ``pid`` None matches any product of the vendor.

    ``verified`` is True when reference/pos-devices.md cites a source for the id; False rows are
    general knowledge (⚠ in the reference's terms) and should be confirmed in the field.
    """

    vid: int
    pid: Optional[int]
    vendor: str
    product: str
    kind: DeviceKind
    note: str = ""
    verified: bool = False


_P = DeviceKind.RECEIPT_PRINTER
_B = DeviceKind.USB_SERIAL_BRIDGE
_PL2303_NOTE = (
    "Prolific Windows drivers refuse old and counterfeit PL2303 (HXA/XA) chips with Code 10; "
    "replace the adapter (FTDI or genuine PL2303TA) or pin an older driver (reference §5.2 #12)"
)
_CH34X_NOTE = (
    "Windows 7 has no in-box driver (install WCH CH341SER); some CH340 drivers stay broken until "
    "re-plug or reboot after a disconnect (reference §4.6); Linux driver ch341"
)

#: Common POS devices by USB id. Exact (vid, pid) rows win over vendor-wide (pid None) rows.
KNOWN_USB_DEVICES: Tuple[KnownDevice, ...] = (
    # receipt printers
    KnownDevice(
        0x04B8,
        0x0202,
        "Epson",
        "TM receipt printer (vendor class)",
        _P,
        "Epson driver / TM Virtual Port; python-escpos Usb() resets it: never use as a probe",
        verified=True,
    ),
    KnownDevice(0x04B8, 0x0E21, "Epson", "TM-T88VI (printer class)", _P, verified=True),
    KnownDevice(
        0x04B8,
        0x0E28,
        "Epson",
        "TM-T20III (printer class)",
        _P,
        "DLE EOT n=1-4 only; n=1 bits 5-6 and n=3 bit 2 unsupported",
        verified=True,
    ),
    KnownDevice(0x04B8, 0x0E27, "Epson", "TM-T20IIIL (printer class)", _P, verified=True),
    KnownDevice(0x04B8, 0x0E2A, "Epson", "TM-L100 (printer class)", _P, verified=True),
    KnownDevice(0x04B8, None, "Epson", "Epson device", _P),
    KnownDevice(
        0x0416,
        0x5011,
        "generic (Winbond id)",
        "POS-5890 58 mm printer",
        _P,
        "USB endpoints vary by unit; no barcode support",
        verified=True,
    ),
    KnownDevice(
        0x0519,
        None,
        "Star Micronics",
        "Star printer",
        _P,
        "Star Line Mode is not ESC/POS: a DLE EOT reply may be Star EOT status (§1.8)",
    ),
    KnownDevice(0x1504, None, "Bixolon", "receipt printer", _P),
    KnownDevice(
        0x0DD4,
        None,
        "Custom",
        "receipt printer",
        _P,
        "TG series uses non-Epson status commands (§1.9)",
    ),
    KnownDevice(
        0x0FE6,
        0x811E,
        "generic Chinese (Xprinter-style)",
        "58/80 mm printer",
        _P,
        "clone: validate every status reply; some send none",
    ),
    # scanners
    KnownDevice(
        0x0C2E,
        None,
        "Honeywell (Metrologic)",
        "barcode scanner",
        DeviceKind.SCANNER,
        "query-only commands; never write non-volatile config (§3.2)",
    ),
    KnownDevice(0x05E0, None, "Zebra (Symbol)", "barcode scanner", DeviceKind.SCANNER),
    KnownDevice(0x05F9, None, "Datalogic", "barcode scanner / scanner-scale", DeviceKind.SCANNER),
    KnownDevice(0x1EAB, None, "Newland", "barcode scanner", DeviceKind.SCANNER),
    # scales
    KnownDevice(
        0x0EB8,
        None,
        "Mettler Toledo",
        "scale",
        DeviceKind.SCALE,
        "listen or poll only; never zero or tare remotely (§3.3)",
    ),
    # USB-serial bridges and CDC
    KnownDevice(0x0403, 0x6001, "FTDI", "FT232R USB-serial", _B),
    KnownDevice(0x0403, 0x6015, "FTDI", "FT-X USB-serial", _B),
    KnownDevice(
        0x0403,
        0x0000,
        "FTDI (counterfeit)",
        "FT232R clone with PID zeroed",
        _B,
        "a 2014 FTDI driver rewrote counterfeit chips' PID to 0000: replace the adapter",
    ),
    KnownDevice(0x067B, 0x2303, "Prolific", "PL2303 USB-serial", _B, _PL2303_NOTE),
    KnownDevice(0x067B, 0x23A3, "Prolific", "PL2303GC/GS USB-serial", _B),
    KnownDevice(0x1A86, 0x7523, "WCH", "CH340 USB-serial", _B, _CH34X_NOTE),
    KnownDevice(0x1A86, 0x5523, "WCH", "CH341 USB-serial", _B, _CH34X_NOTE),
    KnownDevice(0x1A86, 0x55D4, "WCH", "CH9102 USB-serial", _B),
    KnownDevice(0x10C4, 0xEA60, "Silicon Labs", "CP210x USB-serial", _B),
    KnownDevice(
        0x0483,
        0x5740,
        "STMicroelectronics",
        "STM32 virtual COM port",
        DeviceKind.USB_CDC,
        "cdc_acm: ModemManager may probe ttyACM* for seconds after plug-in (§2.2)",
        verified=True,
    ),
)


def match_usb_device(
    vid: Optional[int], pid: Optional[int], table: Sequence[KnownDevice] = KNOWN_USB_DEVICES
) -> Optional[KnownDevice]:
    """Find the table row for a USB id: the exact VID:PID first, then a vendor-wide row.

    Args:
        vid: USB vendor id, None for a non-USB port.
        pid: USB product id.
        table: the device table.

    Returns:
        The matching row, or None.
    """
    if vid is None:
        return None
    vendor_row = None
    for row in table:
        if row.vid != vid:
            continue
        if row.pid is not None and row.pid == pid:
            return row
        if row.pid is None and vendor_row is None:
            vendor_row = row
    return vendor_row


_HWID_PYSERIAL = re.compile(r"VID:PID=([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})")
_HWID_WINDOWS = re.compile(
    r"VID_([0-9A-Fa-f]{4})[&+]PID_([0-9A-Fa-f]{4})(?:&MI_[0-9A-Fa-f]{2})?(?:[+\\]([^\\\s]*))?"
)
_HWID_SERIAL = re.compile(r"\bSER=(\S+)")
_HWID_LOCATION = re.compile(r"\bLOCATION=(\S+)")


def parse_hwid(hwid: str) -> Tuple[Optional[int], Optional[int], Optional[str], Optional[str]]:
    """Read VID, PID, serial number and location from a pyserial ``hwid`` or a Windows instance id.

    Args:
        hwid: e.g. ``USB VID:PID=0403:6001 SER=A1B2C3 LOCATION=1-1.2`` or
            ``FTDIBUS\\VID_0403+PID_6001+A1B2C3A\\0000``.

    Returns:
        ``(vid, pid, serial_number, location)``, None for what is absent.
    """
    serial_number = location = None
    match = _HWID_PYSERIAL.search(hwid)
    if match:
        found = _HWID_SERIAL.search(hwid)
        serial_number = found.group(1) if found else None
        found = _HWID_LOCATION.search(hwid)
        location = found.group(1) if found else None
        return int(match.group(1), 16), int(match.group(2), 16), serial_number, location
    match = _HWID_WINDOWS.search(hwid)
    if match:
        tail = match.group(3) or None
        # Windows keeps a serial only if alphanumeric; "5&2a3..." is an instance id (§4.2).
        serial_number = tail if tail and tail.isalnum() else None
        return int(match.group(1), 16), int(match.group(2), 16), serial_number, None
    return None, None, None, None


@dataclass(frozen=True)
class SerialPort:
    """A serial port seen on the till, identified by VID:PID:serial rather than its name (§0.9)."""

    device: str
    description: str
    vid: Optional[int]
    pid: Optional[int]
    serial_number: Optional[str]
    location: Optional[str]
    known: Optional[KnownDevice]

    @property
    def usb_id(self) -> Optional[str]:
        """``vvvv:pppp`` in lower-case hex, for USB ports."""
        if self.vid is None or self.pid is None:
            return None
        return f"{self.vid:04x}:{self.pid:04x}"


def describe_port(device: str, description: str, hwid: str) -> SerialPort:
    """Build a :class:`SerialPort` from what ``serial.tools.list_ports`` reports.

    Args:
        device: ``COM3`` or ``/dev/ttyUSB0``.
        description: the port's description (FriendlyName on Windows), ``n/a`` if unknown.
        hwid: the hardware id string.

    Returns:
        The port with its device-table match.
    """
    vid, pid, serial_number, location = parse_hwid(hwid)
    return SerialPort(
        device, description, vid, pid, serial_number, location, match_usb_device(vid, pid)
    )


def list_serial_ports() -> List[SerialPort]:
    """List the till's serial ports with pyserial (Linux does not list /dev/pts/*, §4.2).

    Returns:
        The ports, in the order pyserial reports them.
    """
    from serial.tools import list_ports

    return [describe_port(p.device, p.description, p.hwid) for p in list_ports.comports()]


def find_by_usb_identity(ports: Sequence[SerialPort], usb: str) -> List[SerialPort]:
    """The ports whose USB identity matches ``usb`` (``vvvv:pppp`` or ``vvvv:pppp:serial``).

    Windows renumbers a COM port when the adapter moves to another USB socket (§0.9, §5 #10); the
    identity stays. Without a serial number in ``usb`` every adapter of that model matches.
    """
    parts = usb.split(":", 2)
    vid_pid = f"{parts[0]}:{parts[1]}".lower() if len(parts) >= 2 else ""
    serial_number = parts[2] if len(parts) == 3 else None
    return [
        p
        for p in ports
        if p.usb_id == vid_pid and (serial_number is None or p.serial_number == serial_number)
    ]


# --- probers that open serial ports behind the POS's back (§5 #15) -----------------------------

#: Services known to open and probe new serial ports on Linux.
PROBERS = ("ModemManager", "brltty")
JOURNALCTL_PATHS = ("/usr/bin/journalctl", "/bin/journalctl")
_PROBER_LINE = re.compile(r"\b(?P<who>ModemManager|brltty)\[\d+\]:(?P<msg>.*)$")
_TTY = re.compile(r"\btty(?:ACM|USB|S)\d{1,3}\b")


def parse_prober_lines(text: str, limit: int = 5) -> Dict[str, Dict[str, Any]]:
    """Journal or syslog lines where a prober touches a serial port, by port name.

    Returns:
        ``{"ttyACM0": {"probers": ["ModemManager"], "count": n, "lines": [newest few]}}``.
    """
    found: Dict[str, Dict[str, Any]] = {}
    for line in text.splitlines():
        match = _PROBER_LINE.search(line)
        if not match:
            continue
        for tty in set(_TTY.findall(match.group("msg"))):
            row = found.setdefault(tty, {"probers": [], "count": 0, "lines": []})
            if match.group("who") not in row["probers"]:
                row["probers"].append(match.group("who"))
            row["count"] += 1
            row["lines"] = (row["lines"] + [line.strip()[:300]])[-limit:]
    return found


def prober_activity(journalctl: Optional[str] = None, timeout: float = 3.0) -> Dict[str, Any]:
    """What ModemManager and brltty did to serial ports in the last day (journal, Linux)."""
    import subprocess

    tool = journalctl or next((p for p in JOURNALCTL_PATHS if os.path.exists(p)), None)
    if tool is None or not sys.platform.startswith("linux"):
        return {"source": None, "ports": {}}
    argv = [tool, "--no-pager", "-q", "-o", "short", "--since", "-24h", "-n", "2000"]
    for unit in PROBERS:
        argv += ["-u", unit]
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"source": "journal", "ports": {}, "error": type(exc).__name__}
    text = done.stdout.decode("utf-8", "replace")
    return {"source": "journal", "ports": parse_prober_lines(text)}


# --- the collector -----------------------------------------------------------------------------


def port_summary(port: SerialPort, holders: Sequence[Holder]) -> dict:  # type: ignore[type-arg]
    """One port as a report row: names, USB id, the device-table match and who holds it."""
    known = port.known
    return {
        "device": port.device,
        "description": port.description,
        "usb_id": port.usb_id,
        "serial_number": port.serial_number,
        "location": port.location,
        "known": None
        if known is None
        else {
            "vendor": known.vendor,
            "product": known.product,
            "kind": known.kind.value,
            "note": known.note,
            "verified": known.verified,
        },
        "held_by": [{"pid": h.pid, "name": h.name} for h in holders],
    }


def collect(ctx: object = None, journalctl: Optional[str] = None) -> dict:  # type: ignore[type-arg]
    """Serial ports with VID:PID, their device-table match and their holders (never opened), and
    what port probers (ModemManager, brltty) did to them lately."""
    ports = list_serial_ports()
    return {
        "ports": [port_summary(p, find_holders(p.device)) for p in ports],
        "count": len(ports),
        "probers": prober_activity(journalctl),
    }
