"""Drives a protocol.Session over one aiohttp websocket: frames in, events out, errors closed.

After authentication every write goes through a bounded outbox drained by one writer task, so
frames stay in order and a peer that can't keep up is disconnected, not buffered without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSMsgType, web

from protocol.errors import MalformedMessage, PosAssistError

if TYPE_CHECKING:
    from protocol import Message, Session

log = logging.getLogger("posassist.relay")

#: Close code for a peer whose outbox overflowed (docs/protocol.md#close-codes).
SLOW_CONSUMER = 4008
DEFAULT_OUTBOX = 1024


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _NoCount:
    def inc(self, amount: float = 1) -> None:
        pass


_NO_COUNT = _NoCount()


class ConnectionClosedError(Exception):
    """The peer went away or the websocket closed; nothing more will arrive."""


class SlowConsumerError(PosAssistError):
    """The peer's outbox is full: it is not reading fast enough, so it is disconnected."""

    close_code = SLOW_CONSUMER
    public_reason = "too slow: outbox full"


class WebSocketSession:
    """One peer: its websocket, its protocol state and (once started) its bounded outbox."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        session: Session,
        peer: str,
        *,
        max_outbox: int = DEFAULT_OUTBOX,
        frames_in: Counter | None = None,
        frames_out: Counter | None = None,
    ) -> None:
        self.ws = ws
        self.session = session
        self.peer = peer
        self._frames_in = frames_in or _NO_COUNT
        self._frames_out = frames_out or _NO_COUNT
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(max_outbox)
        self._writer: asyncio.Task[None] | None = None

    # --- before the writer starts (handshake): direct, awaited writes --------------------------

    async def flush(self) -> None:
        """Write every frame the session has queued, directly (handshake only)."""
        for frame in self.session.data_to_send():
            await self.ws.send_bytes(frame)
            self._frames_out.inc()

    # --- after authentication: the outbox --------------------------------------------------------

    def start_writer(self) -> None:
        """From now on frames go through the outbox; call once, after the handshake."""
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer {self.peer}")

    def send_nowait(self, msg: Message) -> None:
        """Queue ``msg`` without waiting; SlowConsumerError if the outbox is full."""
        self.session.send(msg)
        for frame in self.session.data_to_send():
            try:
                self._outbox.put_nowait(frame)
            except asyncio.QueueFull:
                raise SlowConsumerError(
                    f"{self.peer}: {self._outbox.qsize()} frames queued"
                ) from None

    async def _write_loop(self) -> None:
        try:
            while True:
                frame = await self._outbox.get()
                await self.ws.send_bytes(frame)
                self._outbox.task_done()
                self._frames_out.inc()
        except (ConnectionResetError, RuntimeError) as exc:  # closing transport
            log.debug("writer for %s stopped: %s", self.peer, exc)

    async def stop_writer(self, drain_timeout: float = 0.0) -> None:
        """Stop the writer, first letting it drain the outbox for up to ``drain_timeout``."""
        if self._writer is None:
            return
        if drain_timeout > 0 and not self._writer.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout):
                    await self._outbox.join()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    # --- reading ----------------------------------------------------------------------------------

    async def wait_events(self, timeout: float) -> list[Message]:
        """Frames until at least one message arrives; ProtocolError or ConnectionClosedError."""
        while True:
            async with asyncio.timeout(timeout):
                frame = await self.ws.receive()
            if frame.type is WSMsgType.BINARY:
                self._frames_in.inc()
                self.session.receive_data(frame.data)
                events = self.session.events_received()
                if events:
                    return events
            elif frame.type is WSMsgType.TEXT:
                # docs/protocol.md#framing: binary frames only
                raise MalformedMessage("text frame")
            else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp already closed with 1009 if too big)
                raise ConnectionClosedError(str(frame.type))

    async def wait_one(self, timeout: float) -> Message:
        """The next message (handshake steps send exactly one at a time)."""
        return (await self.wait_events(timeout))[0]

    async def close(self, code: int, reason: str) -> None:
        """Close the websocket with ``code``; the reason is a fixed public sentence."""
        self.session.close()
        await self.stop_writer()
        await self.ws.close(code=code, message=reason.encode())

    async def close_for(self, error: PosAssistError) -> None:
        """Close with the error's code and fixed public reason; never the internal text."""
        log.info("closing %s: %s (%s)", self.peer, error.public_reason, error)
        await self.close(error.close_code, error.public_reason)
