"""The window's end of the local link (docs/helpwindow.md): connect, say hello, send and receive.

Python 3.8, stdlib only. Imported by ``posassist-agent help`` alone, never by the agent service.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from posassist.protocol import ErrorReply

from .link import (
    MAX_LINE,
    TO_WINDOW,
    WINDOW_LINK_ONLY,
    LinkEndpoint,
    LinkError,
    LinkMessage,
    LinkRefusedError,
    decode_line,
    encode_line,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["LinkClient"]

#: Link-only messages a window sends and the agent never does: its hello, and what it may send
#: once welcomed.
WINDOW_ONLY = WINDOW_LINK_ONLY | {"link.hello"}

#: The most messages a welcome may say follow it (the open tickets a till keeps, a few
#: consent questions): a bound on what a window reads before it draws.
MAX_FOLLOWS = 1000


class LinkClient:
    """The window's end: connect, say hello, then send and receive lines.

    Blocking-free: asyncio streams; the Tk window runs it in a thread with its own loop.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.welcome: Dict[str, Any] = {}
        #: what the agent sent right behind its welcome (open tickets, an open consent
        #: question): a window applies these before it first draws, so it opens on them
        self.backlog: List[LinkMessage] = []

    @classmethod
    async def connect(cls, data_dir: Path, timeout: float = 5.0) -> LinkClient:
        endpoint = LinkEndpoint.find(data_dir)
        secret = ""
        try:
            if endpoint.transport == "unix":
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(endpoint.socket_path), limit=MAX_LINE + 1),
                    timeout,
                )
            else:
                port = int(endpoint.port_file.read_text(encoding="ascii").strip())
                secret = endpoint.secret_file.read_text(encoding="ascii").strip()
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, limit=MAX_LINE + 1), timeout
                )
        except PermissionError:
            raise LinkRefusedError(f"no access to the agent link in {endpoint.folder}") from None
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            raise LinkError(
                f"cannot reach the agent ({type(exc).__name__}): is it running? "
                "/ 收银助手服务没有运行"
            ) from None
        client = cls(reader, writer)
        try:
            await client.send({"t": "link.hello", "secret": secret})
            first = await client.receive(timeout)
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            # an agent going away (or not yet ready) as the window knocks: not there yet
            writer.close()
            raise LinkError(
                f"the agent did not answer ({type(exc).__name__}) / 收银助手服务无应答"
            ) from None
        if isinstance(first, ErrorReply):
            writer.close()
            raise LinkRefusedError(first.code)
        if not isinstance(first, dict) or first["t"] != "link.welcome":
            writer.close()
            raise LinkError("the agent did not welcome this window")
        client.welcome = first
        follows = first["follows"]
        if not 0 <= follows <= MAX_FOLLOWS:
            writer.close()
            raise LinkError(f"the agent's welcome names {follows} messages behind it")
        try:  # all of them within one ``timeout``, not each: nothing holds a window back
            client.backlog = await asyncio.wait_for(client._read(follows), timeout)
        except asyncio.TimeoutError:
            writer.close()
            raise LinkError("the agent did not answer / 收银助手服务无应答") from None
        except LinkError:
            writer.close()
            raise
        return client

    async def send(self, msg: LinkMessage) -> None:
        self.writer.write(encode_line(msg))
        await self.writer.drain()

    async def _read(self, count: int) -> List[LinkMessage]:
        return [await self.receive() for _ in range(count)]

    async def receive(self, timeout: Optional[float] = None) -> LinkMessage:
        """The next message from the agent; LinkError when the link ends, asyncio.TimeoutError
        when nothing came within ``timeout`` seconds."""
        try:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
        except asyncio.TimeoutError:
            raise  # nothing in time; on 3.11 it is an OSError too, yet not a closed link
        except (ValueError, asyncio.LimitOverrunError):
            raise LinkError(f"a line over {MAX_LINE} bytes from the agent") from None
        except (ConnectionError, OSError):
            line = b""
        if not line:
            raise LinkError("与收银助手服务的连接已断开 / the agent closed the link")
        msg = decode_line(line, TO_WINDOW)
        if isinstance(msg, dict) and msg["t"] in WINDOW_ONLY:
            raise LinkError(f"the agent sent {msg['t']}, a window's message")
        return msg

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
