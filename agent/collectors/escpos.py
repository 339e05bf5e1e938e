"""ESC/POS receipt-printer status: decode DLE EOT 1-4 replies; probe a printer over TCP or serial.

The pure part (:func:`parse_status`) follows reference/pos-devices.md §1.2; probes are thin I/O.
"""

from __future__ import annotations

import enum
import os
import select
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Sequence, Tuple

from posassist.agent.collectors.serialports import (
    Holder,
    PortFault,
    classify_serial_error,
    find_holders,
)
from posassist.agent.errors import (
    CollectorTimeout,
    PortError,
    PortHeldError,
    PortNotFoundError,
    PortPermissionError,
    PortUnpluggedError,
)

if TYPE_CHECKING:
    import serial

__all__ = [
    "STATUS_REQUESTS",
    "PrinterStatus",
    "ProbeOutcome",
    "ProbeResult",
    "ReplyState",
    "StatusReply",
    "classify_replies",
    "is_realtime_status",
    "parse_status",
    "probe_serial",
    "probe_tcp",
]

#: DLE EOT n for n = 1..4: printer, offline-cause, error-cause and roll-paper status (§1.2).
STATUS_REQUESTS: Dict[int, bytes] = {n: bytes((0x10, 0x04, n)) for n in (1, 2, 3, 4)}


def is_realtime_status(byte: int) -> bool:
    """Tell whether ``byte`` has the fixed bits of every DLE EOT reply, ``0xx1xx10`` (§0.3).

    Args:
        byte: one received byte.

    Returns:
        True when bits 0 and 7 are 0 and bits 1 and 4 are 1.
    """
    return (byte & 0x93) == 0x12


class ReplyState(str, enum.Enum):
    """What came back for one DLE EOT request."""

    VALID = "valid"  # exactly one byte matching 0xx1xx10
    MISSING = "missing"  # nothing within the reply timeout (or never asked)
    GARBAGE = "garbage"  # bytes that are not one DLE EOT reply (ASB, echo, Star EOT, wrong baud)


@dataclass(frozen=True)
class StatusReply:
    """The raw reply to ``DLE EOT n`` and whether it is a valid real-time status byte."""

    n: int
    raw: bytes
    state: ReplyState

    @property
    def byte(self) -> Optional[int]:
        """The status byte when the reply is valid, else None."""
        return self.raw[0] if self.state is ReplyState.VALID else None


@dataclass(frozen=True)
class PrinterStatus:
    """Decoded DLE EOT 1-4 status. A field is None when the reply it comes from was not valid.

    "No reply" is unknown, never OK (§1.9 rule 3).
    """

    replies: Tuple[StatusReply, ...]
    # n = 1
    online: Optional[bool] = None
    drawer_pin3_high: Optional[bool] = None  # open/closed polarity is per site (§1.6)
    waiting_online_recovery: Optional[bool] = None
    feed_button_pressed: Optional[bool] = None
    # n = 2
    cover_open: Optional[bool] = None
    paper_feeding: Optional[bool] = None
    paper_end_stop: Optional[bool] = None
    error_occurred: Optional[bool] = None
    # n = 3
    recoverable_error: Optional[bool] = None
    cutter_error: Optional[bool] = None
    unrecoverable_error: Optional[bool] = None
    auto_recoverable_error: Optional[bool] = None
    # n = 4 (paper out also from n = 2's paper-end stop when n = 4 did not answer)
    paper_near_end: Optional[bool] = None
    paper_out: Optional[bool] = None

    def reply(self, n: int) -> Optional[StatusReply]:
        """The reply to ``DLE EOT n``, if it was asked."""
        for reply in self.replies:
            if reply.n == n:
                return reply
        return None

    @property
    def all_valid(self) -> bool:
        """True when every asked request got a valid reply."""
        return bool(self.replies) and all(r.state is ReplyState.VALID for r in self.replies)

    def problems(self) -> Tuple[str, ...]:
        """Short, stable names of what is wrong, most severe first (empty when all is well)."""
        checks = (
            ("unrecoverable_error", self.unrecoverable_error),
            ("offline", None if self.online is None else not self.online),
            ("cover_open", self.cover_open),
            ("paper_out", self.paper_out),
            ("cutter_error", self.cutter_error),
            ("recoverable_error", self.recoverable_error),
            ("auto_recoverable_error", self.auto_recoverable_error),
            ("waiting_online_recovery", self.waiting_online_recovery),
            ("paper_near_end", self.paper_near_end),
        )
        return tuple(name for name, flag in checks if flag)


def _reply(n: int, raw: bytes) -> StatusReply:
    if not raw:
        return StatusReply(n, b"", ReplyState.MISSING)
    # Exactly one byte: a stale ASB byte or a doubled reply in front makes the reply untrustworthy.
    if len(raw) == 1 and is_realtime_status(raw[0]):
        return StatusReply(n, bytes(raw), ReplyState.VALID)
    return StatusReply(n, bytes(raw), ReplyState.GARBAGE)


def parse_status(replies: Mapping[int, bytes]) -> PrinterStatus:
    """Decode the replies to DLE EOT 1-4 (reference/pos-devices.md §1.2).

    Never raises on bad input: a reply that is empty is MISSING, one that is not exactly one byte
    matching ``0xx1xx10`` is GARBAGE, and the fields it would have set stay None.

    Args:
        replies: the bytes read after each ``DLE EOT n``, keyed by n (1-4); b"" for no reply.
            Requests that were never sent may be left out.

    Returns:
        The decoded status.
    """
    parsed = tuple(_reply(n, bytes(replies[n])) for n in sorted(replies) if n in STATUS_REQUESTS)
    by_n = {r.n: r.byte for r in parsed}
    fields: Dict[str, Optional[bool]] = {}
    b = by_n.get(1)
    if b is not None:
        fields.update(
            online=not b & 0x08,
            drawer_pin3_high=bool(b & 0x04),
            waiting_online_recovery=bool(b & 0x20),
            feed_button_pressed=bool(b & 0x40),
        )
    b = by_n.get(2)
    if b is not None:
        fields.update(
            cover_open=bool(b & 0x04),
            paper_feeding=bool(b & 0x08),
            paper_end_stop=bool(b & 0x20),
            error_occurred=bool(b & 0x40),
        )
    b = by_n.get(3)
    if b is not None:
        fields.update(
            recoverable_error=bool(b & 0x04),
            cutter_error=bool(b & 0x08),
            unrecoverable_error=bool(b & 0x20),
            auto_recoverable_error=bool(b & 0x40),
        )
    b = by_n.get(4)
    if b is not None:
        # Both sensor bits of a pair are set together (0x0C, 0x60); one alone is read as "not".
        fields.update(paper_near_end=(b & 0x0C) == 0x0C, paper_out=(b & 0x60) == 0x60)
    elif fields.get("paper_end_stop"):
        fields["paper_out"] = True
    return PrinterStatus(replies=parsed, **fields)


class ProbeOutcome(str, enum.Enum):
    """The one-word result of a printer probe."""

    OK = "ok"
    NO_REPLY = "no_reply"
    GARBAGE = "garbage"
    PARTIAL = "partial"
    UNPLUGGED = "unplugged"
    PERMISSION_DENIED = "permission_denied"
    HELD = "held"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    ERROR = "error"


_FAULT_OUTCOME = {
    PortFault.NOT_FOUND: ProbeOutcome.NOT_FOUND,
    PortFault.PERMISSION_DENIED: ProbeOutcome.PERMISSION_DENIED,
    PortFault.HELD: ProbeOutcome.HELD,
    PortFault.UNPLUGGED: ProbeOutcome.UNPLUGGED,
    PortFault.TIMEOUT: ProbeOutcome.TIMEOUT,
    PortFault.ERROR: ProbeOutcome.ERROR,
}


def classify_replies(status: PrinterStatus) -> ProbeOutcome:
    """Sum up a conversation that ended normally: OK, NO_REPLY, GARBAGE or PARTIAL.

    Args:
        status: the parsed replies.

    Returns:
        GARBAGE if any reply was garbage, NO_REPLY if none came, PARTIAL if only some came.
    """
    states = [r.state for r in status.replies]
    if ReplyState.GARBAGE in states:
        return ProbeOutcome.GARBAGE
    if not states or all(s is ReplyState.MISSING for s in states):
        return ProbeOutcome.NO_REPLY
    if all(s is ReplyState.VALID for s in states):
        return ProbeOutcome.OK
    return ProbeOutcome.PARTIAL


@dataclass(frozen=True)
class ProbeResult:
    """What a printer probe found.

    Attributes:
        target: ``tcp://host:port`` or the serial device path.
        outcome: the one-word result.
        status: the decoded replies received so far (also after an unplug), if any request was sent.
        held_by: processes holding the port when ``outcome`` is HELD (empty if the OS only said so).
        detail: a short English explanation for the technician.
        elapsed: seconds the probe took.
    """

    target: str
    outcome: ProbeOutcome
    status: Optional[PrinterStatus] = None
    held_by: Tuple[Holder, ...] = ()
    detail: str = ""
    elapsed: float = field(default=0.0, compare=False)

    def raise_for_outcome(self) -> None:
        """Raise the typed error for a link fault; return quietly when the printer answered.

        OK, NO_REPLY, GARBAGE and PARTIAL are findings about the printer, not link faults.

        Raises:
            PortHeldError, PortPermissionError, PortNotFoundError, PortUnpluggedError,
            CollectorTimeout, PortError: per :attr:`outcome`.
        """
        if self.outcome is ProbeOutcome.HELD:
            raise PortHeldError(self.target, self.held_by, self.detail)
        error = {
            ProbeOutcome.PERMISSION_DENIED: PortPermissionError,
            ProbeOutcome.NOT_FOUND: PortNotFoundError,
            ProbeOutcome.UNPLUGGED: PortUnpluggedError,
            ProbeOutcome.ERROR: PortError,
        }.get(self.outcome)
        if error is not None:
            raise error(self.target, self.detail)
        if self.outcome is ProbeOutcome.TIMEOUT:
            raise CollectorTimeout(f"{self.target}: {self.detail}")


#: The most bytes a probe throws away before it asks (stale replies; a chatty device is cut).
MAX_DRAIN = 64 * 1024


class _Link:
    """The minimum a probe needs from a transport; implemented for sockets and pyserial ports."""

    def drain(self) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def recv1(self, timeout: float) -> bytes:
        """Return up to a few bytes, b"" on timeout; raise ConnectionError when the peer is gone."""
        raise NotImplementedError


def _converse(
    link: _Link, target: str, reply_timeout: float, deadline: float, started: float
) -> ProbeResult:
    """Send DLE EOT 1..4 one at a time, waiting for each reply (§1.2: one outstanding at a time)."""
    got: Dict[int, bytes] = {}
    for n, request in STATUS_REQUESTS.items():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = parse_status(got) if got else None
            return ProbeResult(
                target,
                ProbeOutcome.TIMEOUT,
                status,
                detail="probe deadline passed",
                elapsed=time.monotonic() - started,
            )
        wait = min(reply_timeout, remaining)
        try:
            link.drain()  # a stale byte would make the reply invalid (§1.2, python-escpos note)
            link.send(request)
            reply = link.recv1(wait)
            if reply:
                # One byte is a reply; let a doubled or garbage reply show itself whole.
                reply += link.recv1(min(0.02, wait))
            else:
                # A late reply would pass for the next one's answer: let it land, then drop it.
                time.sleep(min(reply_timeout, max(0.0, deadline - time.monotonic())))
        except Exception as exc:  # mapped below; anything unmapped is reported as ERROR
            got[n] = b""
            fault, why = classify_serial_error(exc, opening=False)
            return ProbeResult(
                target,
                _FAULT_OUTCOME[fault],
                parse_status(got),
                detail=why,
                elapsed=time.monotonic() - started,
            )
        got[n] = reply
    status = parse_status(got)
    outcome = classify_replies(status)
    detail = ", ".join(status.problems()) if outcome is ProbeOutcome.OK else outcome.value
    return ProbeResult(
        target, outcome, status, detail=detail or "ok", elapsed=time.monotonic() - started
    )


class _SocketLink(_Link):
    def __init__(self, sock: socket.socket, deadline: float = float("inf")) -> None:
        self._sock = sock
        self._deadline = deadline

    def drain(self) -> None:
        # bounded: a device that never stops sending is cut at the probe's deadline
        drained = 0
        while drained < MAX_DRAIN and time.monotonic() < self._deadline:
            if not select.select([self._sock], [], [], 0)[0]:
                return
            data = self._sock.recv(4096)
            if not data:
                raise ConnectionResetError("printer closed the connection")
            drained += len(data)

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv1(self, timeout: float) -> bytes:
        if not select.select([self._sock], [], [], timeout)[0]:
            return b""
        data = self._sock.recv(16)
        if not data:
            raise ConnectionResetError("printer closed the connection")
        return data


def probe_tcp(
    host: str, port: int = 9100, timeout: float = 3.0, reply_timeout: float = 0.3
) -> ProbeResult:
    """Ask a network receipt printer (raw TCP, "port 9100") for DLE EOT 1-4 status.

    Connects, asks, and closes at once: many printers serve one client at a time (§2.3).

    Args:
        host: printer address.
        port: raw printing port.
        timeout: the whole probe's deadline in seconds, connect included.
        reply_timeout: how long to wait for each one-byte reply.

    Returns:
        The probe result; never raises for printer or network faults.
    """
    started = time.monotonic()
    deadline = started + timeout
    target = f"tcp://{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=min(timeout, 3.0))
    except socket.timeout:
        return ProbeResult(
            target,
            ProbeOutcome.NOT_FOUND,
            detail="connect timed out",
            elapsed=time.monotonic() - started,
        )
    except OSError as exc:
        return ProbeResult(
            target,
            ProbeOutcome.NOT_FOUND,
            detail=f"connect failed: {exc.strerror}",
            elapsed=time.monotonic() - started,
        )
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _converse(_SocketLink(sock, deadline), target, reply_timeout, deadline, started)
    finally:
        sock.close()


class _SerialLink(_Link):
    def __init__(self, port: serial.Serial) -> None:
        self._port = port

    def drain(self) -> None:
        self._port.reset_input_buffer()

    def send(self, data: bytes) -> None:
        self._port.write(data)

    def recv1(self, timeout: float) -> bytes:
        if self._port.timeout != timeout:  # each change is a tcsetattr / SetCommTimeouts call
            self._port.timeout = timeout
        data: bytes = self._port.read(1)
        if data and self._port.in_waiting:
            data += self._port.read(self._port.in_waiting)
        return data


HolderFinder = Callable[[str], Sequence[Holder]]


def probe_serial(
    port: str,
    baudrate: int = 9600,
    timeout: float = 3.0,
    reply_timeout: float = 0.3,
    find_holders_fn: Optional[HolderFinder] = None,
) -> ProbeResult:
    """Ask a serial (or USB-serial) receipt printer for DLE EOT 1-4 status, unless someone holds it.

    The port is never opened when another process holds it (§0.1): on Linux a second open succeeds
    silently and both processes would then steal each other's bytes. On Windows the open itself
    fails with "Access is denied", which is reported as HELD too.

    Args:
        port: device path (``/dev/ttyUSB0``) or name (``COM3``).
        baudrate: the printer's configured speed; never scanned (§2.1).
        timeout: the whole probe's deadline in seconds.
        reply_timeout: how long to wait for each one-byte reply.
        find_holders_fn: who holds ``port``; defaults to the /proc scan of
            :func:`agent.collectors.serialports.find_holders`.

    Returns:
        The probe result; never raises for printer or port faults.
    """
    import serial  # imported when a probe runs, not at agent idle

    started = time.monotonic()
    deadline = started + timeout
    holders = tuple((find_holders_fn or find_holders)(port))
    if holders:
        names = ", ".join(f"{h.name or '?'} (pid {h.pid})" for h in holders)
        return ProbeResult(
            port,
            ProbeOutcome.HELD,
            held_by=holders,
            detail=f"held by {names}",
            elapsed=time.monotonic() - started,
        )
    ser = serial.Serial()  # configure before open: no DTR/RTS glitch on some drivers (§2.1)
    ser.port = port
    ser.baudrate = baudrate
    ser.timeout = reply_timeout
    ser.write_timeout = reply_timeout  # never None (§0.8)
    ser.dsrdtr = ser.rtscts = ser.xonxoff = False  # a BUSY printer must not block the 3 bytes
    if os.name == "posix":
        ser.exclusive = True  # flock: at least refuses a holder that also locks
    try:
        ser.open()
    except Exception as exc:  # mapped below
        fault, why = classify_serial_error(exc, opening=True)
        return ProbeResult(
            port, _FAULT_OUTCOME[fault], detail=why, elapsed=time.monotonic() - started
        )
    try:
        return _converse(_SerialLink(ser), port, reply_timeout, deadline, started)
    finally:
        _close_quietly(ser)


def _close_quietly(ser: object) -> None:
    try:
        ser.close()  # type: ignore[attr-defined]
    except Exception:  # closing a dead port fails in driver-specific ways (§4.6)
        pass
