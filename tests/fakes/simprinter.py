"""A simulated ESC/POS receipt printer on a pty or a loopback TCP port, for tests and demos.

A fake of a device outside the product, so it is not installed on tills; Python 3.8-compatible
(the agent's tests run it under 3.8 too).

Answers DLE EOT 1-4 like reference/pos-devices.md §1.2 (Epson; Star and clone variants §1.8-1.9).
"""

from __future__ import annotations

import argparse
import enum
import os
import select
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "STATUS_BYTES",
    "DrawerKick",
    "PrinterModel",
    "PrinterState",
    "SimPrinter",
    "Variant",
    "main",
]


class PrinterState(str, enum.Enum):
    """What the simulated printer is going through."""

    OK = "ok"
    PAPER_NEAR_END = "paper_near_end"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    OFFLINE = "offline"
    CUTTER_ERROR = "cutter_error"
    UNRECOVERABLE_ERROR = "unrecoverable_error"
    NO_REPLY = "no_reply"  # reads the request, never answers (power-off behind a live link)
    GARBAGE_REPLY = "garbage_reply"  # answers bytes that fail the 0xx1xx10 check
    HALF_REPLY = "half_reply"  # answers DLE EOT 1 and 2, then goes silent
    SLOW_REPLY = "slow_reply"  # answers like OK after ``reply_delay`` seconds
    UNPLUG = "unplug"  # answers ``unplug_after`` requests, then closes the link


class Variant(str, enum.Enum):
    """Whose firmware the simulated printer has."""

    EPSON = "epson"  # the reference tables
    STAR = "star"  # Star Line Mode: every 0x04 byte is EOT and gets Star's EOT status (§1.8)
    MOB58 = "mob58"  # Maxim MOB-58 clone: only n = 1 and 4; paper end is n = 4 bit 5 only (§1.9)


# DLE EOT 1, 2, 3, 4 replies per state (§1.2 "worked replies"): printer, offline, error, paper.
STATUS_BYTES: Dict[PrinterState, Tuple[int, int, int, int]] = {
    PrinterState.OK: (0x12, 0x12, 0x12, 0x12),
    PrinterState.PAPER_NEAR_END: (0x12, 0x12, 0x12, 0x1E),
    PrinterState.PAPER_OUT: (0x1A, 0x32, 0x12, 0x7E),  # the reference's local paper-end capture
    PrinterState.COVER_OPEN: (0x1A, 0x16, 0x12, 0x12),  # paper bits keep their last value
    PrinterState.OFFLINE: (0x1A, 0x12, 0x12, 0x12),
    PrinterState.CUTTER_ERROR: (0x1A, 0x52, 0x1A, 0x12),
    PrinterState.UNRECOVERABLE_ERROR: (0x1A, 0x52, 0x32, 0x12),
}
_GARBAGE = 0xFF  # fails (b & 0x93) == 0x12
_STAR_EOT = {  # Star EOT status: bit 4 = 1, bit 0 = 0; 3 paper end, 2 near end (§1.8)
    PrinterState.PAPER_NEAR_END: 0x14,
    PrinterState.PAPER_OUT: 0x18,
}
_MAX_PRINT_BYTES = 64 * 1024


@dataclass(frozen=True)
class DrawerKick:
    """A cash-drawer pulse the printer was asked for.

    ``fired`` is False for an ``ESC p`` received while offline: it waits behind print data (§0.4).
    """

    pin: int  # 2 or 5
    on_ms: int
    off_ms: int
    realtime: bool  # DLE DC4 (real-time) rather than ESC p (queued)
    fired: bool


@dataclass(frozen=True)
class Reply:
    """Bytes the printer sends back, after ``delay`` seconds; ``unplug`` closes the link first."""

    data: bytes = b""
    delay: float = 0.0
    unplug: bool = False


class PrinterModel:
    """The printer's brain, without I/O: feed it received bytes, get the replies to send.

    Thread-safe: the state can be changed from another thread while a transport feeds it.
    """

    def __init__(
        self,
        state: PrinterState = PrinterState.OK,
        variant: Variant = Variant.EPSON,
        reply_delay: float = 2.0,
        unplug_after: int = 1,
        drawer_pin3_high: bool = False,
    ) -> None:
        self._lock = threading.Lock()
        self._state = PrinterState(state)
        self.variant = Variant(variant)
        self.reply_delay = reply_delay
        self.unplug_after = unplug_after
        self.drawer_pin3_high = drawer_pin3_high
        self._buf = b""
        self.bytes_received = 0
        self.status_requests: List[int] = []
        self.drawer_kicks: List[DrawerKick] = []
        self.cuts = 0
        self.inits = 0
        self.print_data = bytearray()  # kept up to 64 KiB, then discarded
        self._answered = 0

    @property
    def state(self) -> PrinterState:
        """The current state."""
        with self._lock:
            return self._state

    def set_state(self, state: PrinterState, reply_delay: Optional[float] = None) -> None:
        """Switch state now; the next request is answered accordingly."""
        with self._lock:
            self._state = PrinterState(state)
            if reply_delay is not None:
                self.reply_delay = reply_delay
            self._answered = 0

    def reset_link(self) -> None:
        """Forget a half-received command (a new connection starts clean)."""
        with self._lock:
            self._buf = b""
            self._answered = 0

    @property
    def online(self) -> bool:
        """Whether queued commands (print data, ESC p) are being executed."""
        return STATUS_BYTES.get(self.state, (0x12,))[0] & 0x08 == 0

    def feed(self, data: bytes) -> List[Reply]:
        """Take received bytes; return what to send back, in order.

        Args:
            data: bytes from the host, in any chunking.

        Returns:
            The replies (possibly none).
        """
        with self._lock:
            self.bytes_received += len(data)
            self._buf += data
            replies: List[Reply] = []
            while self._buf:
                used = self._step(replies)
                if used == 0:  # an incomplete command: wait for more bytes
                    break
                self._buf = self._buf[used:]
            return replies

    # -- command parser: returns bytes consumed, 0 if the command is incomplete -------------------

    def _step(self, out: List[Reply]) -> int:
        buf = self._buf
        first = buf[0]
        if self.variant is Variant.STAR:
            if first in (0x04, 0x05):  # Star Line Mode has no DLE EOT: 0x04 alone is EOT
                out.extend(self._star_reply(first))
                return 1
            if first == 0x10:
                return self._print(1)
        if first == 0x10:  # DLE
            if len(buf) < 3:
                return 0
            if buf[1] == 0x04:  # DLE EOT n [a]
                n = buf[2]
                if n in (7, 8, 18):
                    return 4 if len(buf) >= 4 else 0
                if 1 <= n <= 4:
                    self.status_requests.append(n)
                    out.extend(self._status_reply(n))
                return 3
            if buf[1] == 0x05:  # DLE ENQ n: recover, no reply
                return 3
            if buf[1] == 0x14:  # DLE DC4 fn m t
                if len(buf) < 5:
                    return 0
                if buf[2] == 1:
                    t = buf[4] * 100
                    pin = 5 if buf[3] in (1, 49) else 2
                    self.drawer_kicks.append(DrawerKick(pin, t, t, realtime=True, fired=True))
                return 5
            return self._print(1)
        if first == 0x1B:  # ESC
            if len(buf) < 2:
                return 0
            if buf[1] == 0x40:  # ESC @
                self.inits += 1
                return 2
            if buf[1] == 0x70:  # ESC p m t1 t2
                if len(buf) < 5:
                    return 0
                pin = 5 if buf[2] in (1, 49) else 2
                on_ms, off_ms = buf[3] * 2, buf[4] * 2
                off_ms = on_ms if off_ms < on_ms else off_ms  # "if t2 < t1, OFF = ON"
                fired = STATUS_BYTES.get(self._state, (0x12,))[0] & 0x08 == 0
                self.drawer_kicks.append(DrawerKick(pin, on_ms, off_ms, False, fired))
                return 5
            return self._print(1)
        if first == 0x1D and len(buf) >= 2 and buf[1] == 0x56:  # GS V m [n]
            if len(buf) < 3:
                return 0
            size = 4 if buf[2] in (65, 66) else 3
            if len(buf) < size:
                return 0
            self.cuts += 1
            return size
        if first == 0x1D and len(buf) < 2:
            return 0
        return self._print(1)

    def _print(self, count: int) -> int:
        room = _MAX_PRINT_BYTES - len(self.print_data)
        if room > 0:
            self.print_data += self._buf[: min(count, room)]
        return count

    def _status_reply(self, n: int) -> List[Reply]:
        state = self._state
        if state is PrinterState.NO_REPLY:
            return []
        if state is PrinterState.GARBAGE_REPLY:
            return [Reply(bytes((_GARBAGE,)))]
        if state is PrinterState.HALF_REPLY and n > 2:
            return []
        if state is PrinterState.UNPLUG:
            if self._answered >= self.unplug_after:
                return [Reply(unplug=True)]
            self._answered += 1
        if self.variant is Variant.MOB58:
            if n not in (1, 4):
                return []
            if n == 4:
                return [Reply(bytes((0x32 if state is PrinterState.PAPER_OUT else 0x12,)))]
        base = STATUS_BYTES.get(state, STATUS_BYTES[PrinterState.OK])
        byte = base[n - 1]
        if n == 1 and self.drawer_pin3_high:
            byte |= 0x04
        delay = self.reply_delay if state is PrinterState.SLOW_REPLY else 0.0
        return [Reply(bytes((byte,)), delay)]

    def _star_reply(self, command: int) -> List[Reply]:
        if self._state in (PrinterState.NO_REPLY,):
            return []
        if command == 0x04:  # EOT
            return [Reply(bytes((_STAR_EOT.get(self._state, 0x10),)))]
        enq = 0x08 if self._state is PrinterState.PAPER_OUT else 0x00  # ENQ: bit 3 paper end
        if self._state is PrinterState.COVER_OPEN:
            enq |= 0x04
        return [Reply(bytes((enq,)))]


class SimPrinter:
    """The simulated printer with its transports, each served by a daemon thread.

    Use as a context manager, or call :meth:`stop`. Transports: :meth:`start_pty` and
    :meth:`start_tcp` (both can run at once; they share one :class:`PrinterModel`).
    """

    def __init__(
        self,
        state: PrinterState = PrinterState.OK,
        variant: Variant = Variant.EPSON,
        reply_delay: float = 2.0,
        unplug_after: int = 1,
        drawer_pin3_high: bool = False,
    ) -> None:
        self.model = PrinterModel(state, variant, reply_delay, unplug_after, drawer_pin3_high)
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._master: Optional[int] = None
        self._listener: Optional[socket.socket] = None
        self.pty_path: Optional[str] = None
        self._link: Optional[str] = None
        self.tcp_address: Optional[Tuple[str, int]] = None

    # -- convenience passthroughs --

    def set_state(self, state: PrinterState, reply_delay: Optional[float] = None) -> None:
        """Change the printer's state at run time."""
        self.model.set_state(state, reply_delay)

    @property
    def bytes_received(self) -> int:
        """Every byte the printer has received, over all transports."""
        return self.model.bytes_received

    # -- PTY --

    def start_pty(self, link: Optional[str] = None) -> str:
        """Open a pseudo-terminal in raw mode and serve it; return the slave path to open.

        The printer does not keep the slave open itself, so a holder scan sees only real clients.
        ``link``: also a symbolic link to it there, returned instead, and taken away when the
        printer is unplugged, as udev does with /dev/serial/by-id (a /dev/pts number is given to
        the next pty anyone opens, so "gone" is only certain for a name of one's own).
        """
        import pty  # POSIX only
        import tty

        master, slave = pty.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        os.close(slave)
        self._master = master
        self.pty_path = path
        if link is not None:
            os.symlink(path, link)
            self._link = link
            path = link
        self._spawn(self._serve_pty, master)
        return path

    def _serve_pty(self, master: int) -> None:
        while not self._stop.is_set():
            try:
                ready = select.select([master], [], [], 0.05)[0]
                if not ready:
                    continue
                data = os.read(master, 256)
            except OSError:  # EIO while no client has the slave open; EBADF after unplug
                if self._master is None:
                    return
                self._stop.wait(0.02)
                continue
            if not self._send(data, lambda out: os.write(master, out)):
                self._unplug_pty()
                return

    def _unplug_pty(self) -> None:
        master, self._master = self._master, None
        link, self._link = self._link, None
        if link is not None:
            os.unlink(link)
        if master is not None:
            os.close(master)

    # -- TCP --

    def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> Tuple[str, int]:
        """Listen like a raw-TCP ("9100") printer; return the real (host, port).

        Serves one client at a time, as many printer network interfaces do (§2.3).
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(4)
        listener.settimeout(0.05)
        self._listener = listener
        address = listener.getsockname()
        self.tcp_address = (str(address[0]), int(address[1]))
        self._spawn(self._serve_tcp, listener)
        return self.tcp_address

    def _serve_tcp(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                self.model.reset_link()
                self._serve_conn(conn)

    def _serve_conn(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not self._stop.is_set():
            if not select.select([conn], [], [], 0.05)[0]:
                continue
            try:
                data = conn.recv(256)
            except OSError:
                return
            if not data:
                return
            if not self._send(data, conn.sendall):
                return  # unplug: closing the connection is the TCP version of pulling the cable

    # -- shared --

    def _send(self, data: bytes, write: Callable[[bytes], object]) -> bool:
        """Feed the model and write its replies; False when the link must be closed."""
        for reply in self.model.feed(data):
            if reply.unplug:
                return False
            if reply.delay and self._stop.wait(reply.delay):
                return True
            try:
                write(reply.data)
            except OSError:
                return False
        return True

    def _spawn(self, target: Callable[..., None], arg: object) -> None:
        thread = threading.Thread(target=target, args=(arg,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop serving and close every transport."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._unplug_pty()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> SimPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the simulated printer until interrupted: ``python -m tests.fakes.simprinter --tcp``.

    Prints where it listens; a line on stdin naming a state switches to it (e.g. ``paper_out``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.simprinter",
        description=__doc__,
        epilog="While it runs, a line on stdin naming a state switches to it (e.g. paper_out); "
        "with stdin closed it keeps its state until interrupted.",
    )
    link = parser.add_mutually_exclusive_group(required=True)
    link.add_argument("--tcp", action="store_true", help="listen on 127.0.0.1 (see --port)")
    link.add_argument("--pty", action="store_true", help="serve a pseudo-terminal")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    parser.add_argument("--state", default="ok", choices=[s.value for s in PrinterState])
    parser.add_argument("--variant", default="epson", choices=[v.value for v in Variant])
    parser.add_argument("--delay", type=float, default=2.0, help="slow_reply delay in seconds")
    args = parser.parse_args(argv)
    printer = SimPrinter(PrinterState(args.state), Variant(args.variant), args.delay)
    try:
        if args.tcp:
            host, port = printer.start_tcp(port=args.port)
            sys.stdout.write(f"tcp {host}:{port}\n")
        else:
            sys.stdout.write(f"pty {printer.start_pty()}\n")
        sys.stdout.flush()
        for line in sys.stdin:
            word = line.strip()
            if word in PrinterState._value2member_map_:
                printer.set_state(PrinterState(word))
                sys.stdout.write(f"state {word}\n")
            elif word:
                sys.stdout.write(f"unknown state {word!r}\n")
            sys.stdout.flush()
        # stdin closed: keep serving until interrupted
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        printer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
