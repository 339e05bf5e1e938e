"""Found in the outside attack (F9): usernames and organisation/merchant/store names with control
characters are refused at creation (API 400 JSON, CLI exit 2) and nothing is created; a user
made before the check signs in to a console with a clear refusal (4001), not 1011."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from posassist.relay.errors import NotFound
from posassist.relay.storage import Role as UserRole
from posassist.relay.storage import Scope, ScopeKind
from tests.e2e.cli import provision, py
from tests.relay.harness import _HASH, PASSWORD, Relay, close_code, console_handshake, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    try:
        yield relay
    finally:
        await relay.server.close()


BAD_USERNAMES = ["x\nFORGED WARNING\x1b[31m", "a b", "x:user:admin", "tab\there", "é" * 3]


@pytest.mark.parametrize("username", BAD_USERNAMES)
async def test_api_refuses_a_username_a_terminal_cant_carry(relay: Relay, username: str) -> None:
    body = {
        "username": username,
        "password": "long enough pw",
        "role": "technician",
        "scope_kind": "store",
        "scope_id": relay.store,
    }
    status, answer = await relay.post("/v1/users", body, relay.tokens["admin"])
    assert status == 400, answer
    assert answer["error"] == "BadName"
    assert "username" in str(answer["message"])
    assert answer["message_zh"]
    with pytest.raises(NotFound):
        await relay.state.storage.get_user(username)
    assert not [a for a in await relay.audit_actions() if a[0] == "user.create"]


@pytest.mark.parametrize("name", ["\u0000\u001b[31m", "a\nb", "\u202eevil", "   ", "x" * 257])
@pytest.mark.parametrize("path", ["/v1/organisations", "/v1/merchants", "/v1/stores"])
async def test_api_refuses_a_name_with_control_characters(
    relay: Relay, path: str, name: str
) -> None:
    parent = {"/v1/merchants": {"organisation_id": relay.org}, "/v1/stores": {}}.get(path, {})
    if path == "/v1/stores":
        parent = {"merchant_id": relay.merchant}
    status, answer = await relay.post(path, {**parent, "name": name}, relay.tokens["admin"])
    assert status == 400, answer
    assert answer["error"] == "BadName"
    assert "control characters" in str(answer["message"])
    created = [a for a in await relay.audit_actions() if a[0].endswith(".create")]
    assert not created


async def test_good_names_are_still_created(relay: Relay) -> None:
    admin = relay.tokens["admin"]
    status, org = await relay.post("/v1/organisations", {"name": "茶餐厅 Tea & Co."}, admin)
    assert status == 201, org
    body = {
        "username": "li.wei@store-1",
        "password": "long enough pw",
        "role": "technician",
        "scope_kind": "organisation",
        "scope_id": org["id"],
    }
    status, answer = await relay.post("/v1/users", body, admin)
    assert status == 201, answer


async def test_a_stored_bad_username_is_refused_at_console_sign_in(relay: Relay) -> None:
    bad = "x\nFORGED\x1b[31m"  # made before names were checked (or straight in the database)
    storage = relay.state.storage
    await storage.create_user(
        bad, _HASH, UserRole.TECHNICIAN, Scope(ScopeKind.STORE, relay.store), now=relay.clock()
    )
    status, body = await relay.post("/v1/login", {"username": bad, "password": PASSWORD})
    assert status == 200, body
    async with connect(relay.ws + "/v1/console") as ws:
        _, answer = await console_handshake(ws, str(body["token"]))
        assert isinstance(answer, m.AuthRefused)
        assert answer.code == "bad_username"
        assert await close_code(ws) == 4001  # AuthenticationError, not 1011 "internal error"
    refused = [a for a in await relay.audit_actions() if a[:2] == ("console.connect", "refused")]
    assert refused


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (
            ["user", "create", "--username", "x\nFORGED", "--role", "viewer", "--scope", "root"],
            "--username",
        ),
        (["organisation", "create", "--name", "\x1b[31mred"], "--name"),
    ],
)
def test_cli_refuses_bad_names_with_exit_2(tmp_path: Path, args: list[str], field: str) -> None:
    data = tmp_path / "relay"
    provision(data)
    before = py("relay", "audit", "verify", "--data", str(data))
    args = [*args[:2], "--data", str(data), *args[2:]]
    result = py("relay", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert field in result.stderr
    assert "Traceback" not in result.stderr
    after = py("relay", "audit", "verify", "--data", str(data))
    assert after.stdout == before.stdout  # nothing was created, nothing audited


def test_relay_init_refuses_a_bad_admin_username_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    result = py("relay", "init", "--data", str(data), "--admin-user", "ad\x1b[31mmin")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--admin-user" in result.stderr
    assert "\x1b" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not data.exists() or not any(data.iterdir())  # no database, no key, nothing
