"""Found in the outside attack (F4): a websocket that does not sign in within the handshake timeout
is closed 4009 "no sign-in within the handshake timeout" (SignInTimeout), not 1000 "OK"."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from posassist.protocol import Role, Session
from posassist.protocol.errors import SignInTimeout
from tests.relay.harness import Relay, drain, recv, send, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path, handshake_timeout=0.5)
    try:
        yield relay
    finally:
        await relay.server.close()


@pytest.mark.parametrize(
    ("path", "role"), [("/v1/agent", Role.AGENT), ("/v1/console", Role.CONSOLE)]
)
async def test_hello_then_silence_is_closed_with_the_sign_in_timeout_code(
    relay: Relay, path: str, role: Role
) -> None:
    async with connect(relay.ws + path) as ws:
        session = Session(role)
        session.send_hello("silent")
        await send(ws, session)
        await recv(ws, session)  # welcome (and an agent's challenge); then nothing from us
        async with asyncio.timeout(10):  # the relay's 0.5 s handshake timeout closes it first
            with pytest.raises(ConnectionClosed) as info:
                await drain(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == SignInTimeout.close_code == 4009
    assert info.value.rcvd.reason == SignInTimeout.public_reason
