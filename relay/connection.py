"""Drives a protocol.Session over one aiohttp websocket: frames in, events out, errors closed.

The relay's handlers talk in messages; this module turns bytes and close codes into those.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from protocol.errors import MalformedMessage

if TYPE_CHECKING:
    from protocol import Message, PosAssistError, Session

log = logging.getLogger("posassist.relay")


class ConnectionClosedError(Exception):
    """The peer went away or the websocket closed; nothing more will arrive."""


class WebSocketSession:
    """One authenticated-or-not peer: its websocket and the protocol state for it."""

    def __init__(self, ws: web.WebSocketResponse, session: Session, peer: str) -> None:
        self.ws = ws
        self.session = session
        self.peer = peer

    async def flush(self) -> None:
        """Write every frame the session has queued."""
        for frame in self.session.data_to_send():
            await self.ws.send_bytes(frame)

    async def send(self, msg: Message) -> None:
        self.session.send(msg)
        await self.flush()

    async def wait_events(self, timeout: float) -> list[Message]:
        """Frames until at least one message arrives; ProtocolError or ConnectionClosedError."""
        while True:
            async with asyncio.timeout(timeout):
                frame = await self.ws.receive()
            if frame.type is WSMsgType.BINARY:
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
        """The next single message (handshake steps send exactly one at a time)."""
        events = await self.wait_events(timeout)
        if len(events) != 1:  # pragma: no cover - one frame is one message
            raise MalformedMessage("more than one message")
        return events[0]

    async def close_for(self, error: PosAssistError) -> None:
        """Close with the error's code and fixed public reason; never the internal text."""
        self.session.close()
        log.info("closing %s: %s (%s)", self.peer, error.public_reason, error)
        await self.ws.close(code=error.close_code, message=error.public_reason.encode())
