"""Each boundary maps one error of every class of the tree, in one place, to what the class says:
the relay's API to its ``http_status``, a relay websocket to its ``close_code``, every command's
``main`` to its ``exit_code`` with one ``error:`` line (and never the internal text to a peer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from posassist.protocol import Role, Session
from posassist.protocol.errors import PosAssistError, error_line
from posassist.relay.connection import WebSocketSession
from posassist.relay.responses import errors_middleware
from tests.test_error_tree import CLASSES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

INTERNAL = "internal detail: /var/lib/secret token=abc123"
ERRORS = {
    cls.__name__: cls
    for _, _, cls, _ in CLASSES
    if cls is not None and issubclass(cls, PosAssistError)
}
assert len(ERRORS) == len({cls for cls in ERRORS.values()}), "two error classes share a name"


def _one(cls: type[PosAssistError]) -> PosAssistError:
    """An instance whatever the constructor takes: only the class decides the mapping."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, INTERNAL)
    return exc


async def _raise(request: web.Request) -> web.Response:
    raise _one(ERRORS[request.query["error"]])


async def _close(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    peer = WebSocketSession(ws, Session(Role.RELAY_FOR_CONSOLE), "test")
    await peer.close_for(_one(ERRORS[request.query["error"]]))
    return ws


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/raise", _raise)
    app.router.add_get("/close", _close)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


NAMES = sorted(ERRORS)


@pytest.mark.parametrize("name", NAMES)
async def test_the_api_answers_each_error_with_its_http_status(
    server: TestServer, name: str
) -> None:
    cls = ERRORS[name]
    async with (
        aiohttp.ClientSession() as client,
        client.get(server.make_url("/raise"), params={"error": name}) as response,
    ):
        body = await response.json()
        assert response.status == cls.http_status
        assert body == {
            "error": name,
            "message": cls.public_reason,
            "message_zh": cls.public_reason_zh,
        }
        assert "abc123" not in await response.text()


@pytest.mark.parametrize("name", NAMES)
async def test_a_websocket_is_closed_with_each_errors_close_code(
    server: TestServer, name: str
) -> None:
    cls = ERRORS[name]
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(server.make_url("/close"), params={"error": name}) as ws,
    ):
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert message.data == cls.close_code
        assert message.extra == cls.public_reason


def _relay(monkeypatch: pytest.MonkeyPatch, exc: PosAssistError) -> int:
    from posassist.relay import __main__ as relay_main

    async def audit_verify(args: object) -> int:
        raise exc

    monkeypatch.setattr(relay_main, "_audit_verify", audit_verify)
    return relay_main.main(["audit", "verify", "--data", "/nonexistent"])


def _agent(monkeypatch: pytest.MonkeyPatch, exc: PosAssistError) -> int:
    from posassist.agent import __main__ as agent_main
    from posassist.agent import enrol as enrol_module

    def enrol(token: str, data: object, root_hash: str | None = None) -> None:
        raise exc

    # the enroll command imports its pinned HTTP lazily (not at agent idle): patch at the source
    monkeypatch.setattr(enrol_module, "enrol", enrol)
    return agent_main.main(["enroll", "PA1-x", "--data", "/nonexistent"])


def _console(monkeypatch: pytest.MonkeyPatch, exc: PosAssistError) -> int:
    from posassist.console import __main__ as console_main

    def health(relay: str, pin: str | None = None, ca_file: str | None = None) -> int:
        raise exc

    monkeypatch.setattr(console_main, "health", health)
    return console_main.main(["health", "--relay", "http://127.0.0.1:9", "--tls-pin", "0" * 64])


def _scripts(monkeypatch: pytest.MonkeyPatch, exc: PosAssistError) -> int:
    from posassist.console import scripts_cli, scripts_repo

    def repository(path: object) -> None:
        raise exc

    monkeypatch.setattr(scripts_repo, "ScriptRepository", repository)
    return scripts_cli.main(["status", "/nonexistent"])


@pytest.mark.parametrize("command", [_relay, _agent, _console, _scripts])
@pytest.mark.parametrize("name", NAMES)
def test_each_command_exits_with_the_errors_exit_code_and_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command, name: str
) -> None:
    cls = ERRORS[name]
    exc = _one(cls)
    assert command(monkeypatch, exc) == cls.exit_code
    _out, err = capsys.readouterr()
    assert error_line(exc) + "\n" in err
    assert err.strip().splitlines()[-1] == error_line(exc)
    assert "Traceback" not in err
    assert cls.public_reason in err
    assert cls.public_reason_zh in err


def test_error_line_shows_the_reason_once_when_there_is_no_other_message() -> None:
    from posassist.protocol.errors import AuthenticationError

    assert error_line(AuthenticationError()) == "error: authentication failed / 认证失败"
    assert error_line(AuthenticationError("authentication failed")).count("failed") == 1
    assert error_line(AuthenticationError("no such user")) == (
        "error: authentication failed: no such user / 认证失败"
    )
