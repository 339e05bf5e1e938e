"""Drives a protocol.Session over the console's websocket to the relay (websockets client).

``async with ConsoleConnection.open(url, token) as conn: async for reply in conn.request(msg)``.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection, connect

from posassist.client.tlspin import check_pin, client_ssl_context_for_pin
from posassist.protocol import AuthAccepted, AuthRefused, Role, Session
from posassist.protocol.errors import AuthenticationError

from . import __version__

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from posassist.protocol import Message


class ConsoleConnection:
    """One signed-in console session."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session = Session(Role.CONSOLE)
        self._pending: list[Message] = []

    @classmethod
    @asynccontextmanager
    async def open(
        cls, relay_url: str, token: str, timeout: float = 10.0, tls_pin: str | None = None
    ) -> AsyncIterator[ConsoleConnection]:
        url = relay_url.rstrip("/") + "/v1/console"
        context = client_ssl_context_for_pin(tls_pin) if tls_pin else None
        async with connect(
            url, compression=None, max_size=1024 * 1024, open_timeout=timeout, ssl=context
        ) as ws:
            if tls_pin:  # before the token is sent
                check_pin(ws.transport.get_extra_info("ssl_object"), tls_pin)
            conn = cls(ws)
            await conn._sign_in(token, timeout)
            yield conn

    async def _flush(self) -> None:
        for frame in self.session.data_to_send():
            await self.ws.send(frame)

    async def _next(self, timeout: float) -> Message:
        while not self._pending:
            async with asyncio.timeout(timeout):
                frame = await self.ws.recv()
            self.session.receive_data(frame if isinstance(frame, bytes) else frame.encode())
            self._pending.extend(self.session.events_received())
        return self._pending.pop(0)

    async def _sign_in(self, token: str, timeout: float) -> None:
        self.session.send_hello(f"posassist-console/{__version__}")
        await self._flush()
        await self._next(timeout)  # Welcome
        self.session.send_token(token)
        await self._flush()
        answer = await self._next(timeout)
        if isinstance(answer, AuthRefused):
            raise AuthenticationError(f"relay refused the token: {answer.code}")
        assert isinstance(answer, AuthAccepted)

    async def request(self, msg: Message, timeout: float = 60.0) -> AsyncIterator[Message]:
        """Send a request; yield its replies until the final one (or an ErrorReply)."""
        self.session.send(msg)
        await self._flush()
        while True:
            reply = await self._next(timeout)
            if getattr(reply, "id", None) != getattr(msg, "id"):  # noqa: B009
                continue  # heartbeats and other traffic
            yield reply
            if reply.TERMINAL:
                return
