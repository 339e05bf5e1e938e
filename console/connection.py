"""The console's connection to the relay: the shared client driver, signed in with a bearer token.

``async with ConsoleConnection.open(url, token) as conn: async for reply in conn.request(msg)``.
The driver sends heartbeats, so the relay keeps a console that waits on a long request.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from posassist.client.connection import Connection, open_connection
from posassist.client.errors import RelayRefusedError
from posassist.protocol import Role, Welcome
from posassist.protocol.errors import AuthenticationError

from . import __version__

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from posassist.protocol import Message, Session

SOFTWARE = f"posassist-console/{__version__}"


class ConsoleConnection:
    """One signed-in console session over :class:`posassist.client.connection.Connection`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.session = connection.session

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        relay_url: str,
        token: str,
        timeout: float = 10.0,
        tls_pin: str | None = None,
        ca_file: str | None = None,
    ) -> AsyncIterator[ConsoleConnection]:
        """Connect and sign in with ``token`` (sent only after the TLS pin is checked)."""

        def sign_in(session: Session, msg: Message) -> None:
            if isinstance(msg, Welcome):
                session.send_token(token)

        url = relay_url.rstrip("/") + "/v1/console"
        try:
            async with open_connection(
                url,
                Role.CONSOLE,
                SOFTWARE,
                sign_in,
                tls_pin=tls_pin,
                ca_file=ca_file,
                handshake_timeout=timeout,
            ) as connection:
                yield cls(connection)
        except RelayRefusedError as exc:
            raise AuthenticationError(f"relay refused the token: {exc.code}") from None

    def request(self, msg: Message, timeout: float = 60.0) -> AsyncGenerator[Message, None]:
        """Send a request; yield its replies until the final one (or an ErrorReply).

        ``timeout`` bounds the wait for each reply, not the whole request.
        """
        return self.connection.request(msg, timeout)
