"""attack 15 #1: a JSON body holding a lone surrogate (``"\\ud800"``) is valid JSON but not text;
it reached storage and answered 500 with a traceback in the relay's log, even before sign-in.
Now it is a 400 at the body parser for every JSON route, and nothing is written."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from aiohttp import ClientSession

from tests.relay.harness import start_relay

if TYPE_CHECKING:
    from pathlib import Path

LONE = '"\\ud800x"'


async def _post(
    base: str, path: str, raw: str, token: str | None = None
) -> tuple[int, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with ClientSession() as http, http.post(base + path, data=raw, headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("path", "body", "signed_in"),
    [
        ("/v1/login", '{"username": %s, "password": "x"}', False),
        ("/v1/organisations", '{"name": %s}', True),
    ],
)
async def test_a_lone_surrogate_is_a_bad_request_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str, body: str, signed_in: bool
) -> None:
    relay = await start_relay(tmp_path)
    try:
        before = await relay.audit_actions()
        token = relay.tokens["admin"] if signed_in else None
        status, answer = await _post(relay.http, path, body.replace("%s", LONE), token)
        assert status == 400, answer
        assert answer["error"] == "BadRequest"
        assert answer["message_zh"]
        assert "Traceback" not in caplog.text
        assert await relay.audit_actions() == before  # nothing created, nothing audited as done
    finally:
        await relay.server.close()
