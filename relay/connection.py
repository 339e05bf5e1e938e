"""Drives a protocol.Session over one aiohttp websocket: frames in, events out, errors closed.

After authentication writes go through a bounded outbox (emptied at the end of the loop's turn, or
by a writer task that waits for drain): frames stay in order, a peer that can't keep up is shed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSMsgType, web

from posassist.protocol.errors import MalformedMessage, PosAssistError

if TYPE_CHECKING:
    from posassist.protocol import Message, Session

log = logging.getLogger("posassist.relay")

#: Close code for a peer whose outbox overflowed (docs/protocol.md#close-codes).
SLOW_CONSUMER = 4008
DEFAULT_OUTBOX = 1024
#: Bytes a peer's outbox may hold (frames are up to 1 MiB: 1,024 of them would be a gigabyte).
#: Past it the peer is too slow and is closed (4008); one frame alone is always let through.
DEFAULT_OUTBOX_BYTES = 16 * 1024 * 1024
#: Frames queued together are written in one go (see _write_loop) while the socket's send
#: buffer holds less than this; past it, frame by frame through aiohttp, which waits for drain.
COALESCE_BELOW = 256 * 1024
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def binary_frame_header(length: int) -> bytes:
    """RFC 6455 §5.2 header of one unmasked, uncompressed, final binary frame (a server's)."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return _HEADER_16(0x82, 126, length)
    return _HEADER_64(0x82, 127, length)


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _NoCount:
    def inc(self, amount: float = 1) -> None:
        pass


_NO_COUNT = _NoCount()


class ConnectionClosedError(PosAssistError):
    """The peer went away or the websocket closed; nothing more will arrive."""

    public_reason = "connection closed"
    public_reason_zh = "连接已断开"


class SlowConsumerError(PosAssistError):
    """The peer's outbox is full: it is not reading fast enough, so it is disconnected."""

    close_code = SLOW_CONSUMER
    public_reason = "too slow: outbox full"
    public_reason_zh = "对方接收过慢, 连接已断开"


class WebSocketSession:
    """One peer: its websocket, its protocol state and (once started) its bounded outbox."""

    __slots__ = (  # one per connected till: no dict each
        "_fixed",
        "_flush_soon",
        "_frames_in",
        "_frames_out",
        "_loop",
        "_max_outbox",
        "_max_outbox_bytes",
        "_outbox",
        "_outbox_bytes",
        "_parked",
        "_timed_out",
        "_timer",
        "_timer_at",
        "_transport",
        "_until",
        "_waiter",
        "_wakeup",
        "_writer",
        "batched_writes",
        "peer",
        "session",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        session: Session,
        peer: str,
        *,
        max_outbox: int = DEFAULT_OUTBOX,
        max_outbox_bytes: int = DEFAULT_OUTBOX_BYTES,
        frames_in: Counter | None = None,
        frames_out: Counter | None = None,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        # The connection's transport, for writing queued frames together; None: one by one.
        self._transport = transport
        #: How many times queued frames went out together in one write.
        self.batched_writes = 0
        self.session = session
        self.peer = peer
        self._frames_in = frames_in or _NO_COUNT
        self._frames_out = frames_out or _NO_COUNT
        # Frames wait here for the writer task, which empties it at each wake-up; a frame stays
        # in it (and counts against max_outbox) until written.
        # A list, not a deque: an idle till's empty list is 56 bytes, an empty deque 760.
        self._outbox: list[bytes] = []
        self._max_outbox = max_outbox
        self._max_outbox_bytes = max_outbox_bytes
        self._outbox_bytes = 0  # what the frames in the outbox add up to
        self._wakeup: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        # The writer waits for its wake-up (not inside a write): frames may go out without it.
        self._parked = False
        # A write of the outbox is scheduled for the end of this turn of the loop.
        self._flush_soon = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # The idle timer (see wait_events): one per connection, moved lazily, not one per frame.
        self._fixed: float | None = None
        self._until: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._waiter: asyncio.Task[object] | None = None
        self._timed_out = False

    # --- before the writer starts (handshake): direct, awaited writes --------------------------

    async def flush(self) -> None:
        """Write every frame the session has queued, directly (handshake only)."""
        for frame in self.session.data_to_send():
            await self.ws.send_bytes(frame)
            self._frames_out.inc()

    # --- after authentication: the outbox --------------------------------------------------------

    def start_writer(self) -> None:
        """From now on frames go through the outbox; call once, after the handshake."""
        self._loop = asyncio.get_running_loop()
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer {self.peer}")

    def send_nowait(self, msg: Message, request_id: int | None = None) -> None:
        """Queue ``msg`` (under ``request_id`` if given) without waiting.

        SlowConsumerError if the outbox is full; a refused message (LocalProtocolError) leaves
        the session and the outbox as they were.
        """
        session = self.session
        if request_id is None:
            session.send(msg)
        else:
            session.send_with_id(msg, request_id)
        outbox = self._outbox
        for frame in session.data_to_send():
            if len(outbox) >= self._max_outbox:
                raise SlowConsumerError(f"{self.peer}: {len(outbox)} frames queued")
            if outbox and self._outbox_bytes + len(frame) > self._max_outbox_bytes:
                raise SlowConsumerError(f"{self.peer}: {self._outbox_bytes} bytes queued")
            outbox.append(frame)
            self._outbox_bytes += len(frame)
        if self._parked and not self._flush_soon:
            # The writer waits for work: what is queued in this turn of the loop (a batch of a
            # script's output read from its agent at one wake-up) goes out at its end, in one
            # write, without a switch to the writer task and back (bench_relay.py throughput).
            self._flush_soon = True
            assert self._loop is not None  # set by start_writer, before the writer parks
            self._loop.call_soon(self._flush_queued)

    def _flush_queued(self) -> None:
        self._flush_soon = False
        if not self._parked or not self._outbox:
            return  # the writer is at work and takes them, or stopped; or they went out already
        if self._writable():
            self._write_outbox()
            return
        # The socket's buffer is full (or closing): the writer sends them, waiting for drain.
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    def flush_nowait(self) -> None:
        """Write the queued frames now, without waiting for the writer task to be scheduled:
        before a write to the database on the event loop (a job's end), so that the reply ahead
        of it is not held up by it (docs/notes/16perf-status.md). Does nothing while the writer
        is inside a write (waiting for the socket to drain), before it starts, or when the
        socket's buffer is full: the writer sends them, in order, as before."""
        if self._parked and self._outbox and self._writable():
            self._write_outbox()

    def _writable(self) -> bool:
        transport = self._transport
        return (
            transport is not None
            and not self.ws.closed
            and not transport.is_closing()
            and transport.get_write_buffer_size() < COALESCE_BELOW
        )

    def _write_outbox(self) -> None:
        """Every queued frame in one write to the transport (each with its header)."""
        outbox = self._outbox
        assert self._transport is not None
        if len(outbox) == 1:
            frame = outbox[0]
            self._transport.write(binary_frame_header(len(frame)) + frame)
        else:
            parts: list[bytes] = []
            for frame in outbox:
                parts += (binary_frame_header(len(frame)), frame)
            self._transport.write(b"".join(parts))
            self.batched_writes += 1
        self._frames_out.inc(len(outbox))
        outbox.clear()
        self._outbox_bytes = 0

    async def _write_loop(self) -> None:
        outbox = self._outbox
        send = self.ws.send_bytes
        frames_out = self._frames_out
        loop = asyncio.get_running_loop()
        try:
            while True:
                # One wake-up writes every frame queued since the last. Several queued at once
                # (a script's output streaming to a console) go to the socket in one write, not
                # one system call each; the relay never compresses (WebSocketResponse
                # compress=False), so a frame is its header and its bytes.
                while outbox:
                    if len(outbox) > 1 and self._writable():
                        self._write_outbox()
                        continue
                    await send(outbox[0])  # waits only when the socket's buffer is full
                    self._outbox_bytes -= len(outbox[0])
                    del outbox[0]  # (bounded by max_outbox; usually the only one)
                    frames_out.inc()
                wakeup = self._wakeup = loop.create_future()
                self._parked = True
                try:
                    await wakeup
                finally:
                    self._parked = False
        except (ConnectionResetError, RuntimeError) as exc:  # closing transport
            log.debug("writer for %s stopped: %s", self.peer, exc)

    @property
    def queued_bytes(self) -> int:
        """Bytes of the frames waiting in the outbox (bounded by ``max_outbox_bytes``)."""
        return self._outbox_bytes

    async def stop_writer(self) -> None:
        """Stop the writer; frames not yet written are dropped (the peer is gone or being closed).

        Every handler calls this when its connection ends, so the idle timer stops here too.
        """
        self._disarm()
        if self._writer is None:
            return
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    # --- reading ----------------------------------------------------------------------------------

    async def wait_events(
        self, timeout: float | None = None, *, until: float | None = None
    ) -> list[Message]:
        """Frames until at least one message arrives; ProtocolError or ConnectionClosedError.

        TimeoutError when nothing arrives within ``timeout`` seconds (the handshake) or, with no
        ``timeout``, when the session's silence deadline passes (docs/protocol.md#liveness): any
        frame, ping or pong moves it. ``until`` (loop time) ends the wait early all the same.
        Pings are answered here (the websocket has ``autoping=False`` so that they count).

        Like ``asyncio.timeout()`` around each ``ws.receive()``, but without arming and
        cancelling a timer for every frame (about a tenth of the relay's CPU when forwarding,
        benchmarks/bench_relay.py): a frame only notes its arrival on the session, which moves
        the silence deadline; the one timer re-arms itself for the newest deadline when it
        fires early, and cancels the waiting task (as ``asyncio.timeout`` does) only when the
        deadline has really passed. No coroutine of its own per frame: a busy agent's frames
        each pass through here.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        # A handshake step's ``timeout`` is one fixed deadline: pings must not move it, or a
        # stranger who never signs in could hold the socket open by pinging.
        fixed = None if timeout is None else loop.time() + timeout
        session = self.session
        while True:
            rearm = self._timer is None or self._fixed is not None or until != self._until
            self._fixed = fixed
            self._until = until
            if rearm or fixed is not None:
                # A silence deadline only moves later, so a timer armed for it stays good.
                deadline = self._current_deadline()
                if self._timer is None or self._timer_at > deadline:
                    self._arm(loop, deadline)
            self._waiter, self._timed_out = task, False
            cancelling = task.cancelling()
            try:
                frame = await self.ws.receive()
            except asyncio.CancelledError:
                if self._timed_out and task.uncancel() <= cancelling:
                    self._disarm()
                    raise TimeoutError from None
                raise
            except BaseException:
                self._disarm()
                raise
            finally:
                self._waiter = None
            session.data_received(loop.time())
            kind = frame.type
            if kind is WSMsgType.BINARY:
                self._frames_in.inc()
                session.receive_data(frame.data)
                events = session.events_received()
                if events:
                    return events
            elif kind is WSMsgType.PING:
                await self.ws.pong(frame.data)
            elif kind is WSMsgType.PONG:
                pass  # traffic: it moved the deadline, nothing else to do
            elif kind is WSMsgType.TEXT:
                # docs/protocol.md#framing: binary frames only
                raise MalformedMessage("text frame")
            else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp already closed with 1009 if too big)
                raise ConnectionClosedError(str(kind))

    def _current_deadline(self) -> float:
        deadline = self._fixed
        if deadline is None:
            deadline = self.session.silence_deadline()
            assert deadline is not None, "no silence deadline before the session is open"
        until = self._until
        return deadline if until is None or deadline < until else until

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_at(deadline, self._on_deadline, loop)

    def _on_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._waiter is None:
            return  # between frames; the next wait for one arms a fresh timer
        deadline = self._current_deadline()
        if loop.time() < deadline:
            self._arm(loop, deadline)  # traffic came since this timer was armed
            return
        self._timed_out = True
        self._waiter.cancel()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait_one(self, timeout: float) -> Message:
        """The next message (handshake steps send exactly one at a time)."""
        return (await self.wait_events(timeout))[0]

    async def close(self, code: int, reason: str) -> None:
        """Close the websocket with ``code``; the reason is a fixed public sentence."""
        self.session.close()
        await self.stop_writer()
        await self.ws.close(code=code, message=reason.encode(), drain=False)

    async def close_for(self, error: PosAssistError) -> None:
        """Close with the error's code and fixed public reason; never the internal text."""
        log.info("closing %s: %s (%s)", self.peer, error.public_reason, error)
        await self.close(error.close_code, error.public_reason)
