"""A hostile relay writes escape sequences into every string it answers; the real command lines
(``posassist``, ``posassist-agent``) print none of them raw (attack 2026-12).

The relay is not trusted (docs/scripts.md#threat-model): the console used to print the relay's
``relay_id``, a signed-in role, the script list's titles (metadata the console does not verify)
and the relay's refusal messages as they came, and the agent the device id the relay handed it.
The relay here is a small aiohttp app on 127.0.0.1 playing the attacker, not ours.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from posassist.protocol.enrolment import PREFIX, EnrolmentInvite
from tests.e2e.cli import ROOT, Technician

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(120)

#: Clear screen, set the window title (OSC), hyperlink, 8-bit CSI, DCS, cursor up, CR overwrite,
#: bidi override, bell, backspace, NUL, DEL, reset.
EVIL = (
    "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://x\x1b\\\x9b31m\x1bP1$r\x1b\\\x1b[10A"
    "\rFAKE\u202eevil\x07\x08\x00\x7f\x1bc"
)
#: What a terminal must never receive.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
RELAY_ID = "relay-hostile"


def _manifest() -> dict[str, Any]:
    return {
        "id": f"evil{EVIL}",
        "version": f"1.0.0{EVIL}",
        "risk": f"A{EVIL}",
        "platforms": [f"linux{EVIL}"],
        "title": {"en": f"harmless{EVIL}", "zh": f"无害{EVIL}"},
    }


def _hostile_app(enrol_answer: dict[str, Any], enrol_status: int) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"relay_id": f"r{EVIL}", "status": f"ok{EVIL}", "agents": EVIL})

    async def login(_: web.Request) -> web.Response:
        return web.json_response(
            {"token": "t" * 32, "role": f"admin{EVIL}", "expires_at": 0, "scope": {}}
        )

    async def refuse(_: web.Request) -> web.Response:
        return web.json_response({"error": f"Scope{EVIL}", "message": f"no{EVIL}"}, status=403)

    async def metadata(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        signed: dict[str, Any]
        if name == "timestamp.json":
            signed = {"meta": {"snapshot.json": {"version": 1}}}
        elif name == "1.snapshot.json":
            signed = {"meta": {"low-risk.json": {"version": 1}, "high-risk.json": {"version": 1}}}
        else:
            signed = {"targets": {"x": {"custom": {"posassist-manifest": _manifest()}}}}
        return web.json_response({"signed": signed})

    async def enrol(_: web.Request) -> web.Response:
        return web.json_response(enrol_answer, status=enrol_status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/login", login)
    app.router.add_get("/v1/devices", refuse)
    app.router.add_get("/v1/scripts/metadata/{name}", metadata)
    app.router.add_post("/v1/enrol", enrol)
    return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"ws://127.0.0.1:{port}"


def _clean(result: subprocess.CompletedProcess[str]) -> str:
    text = result.stdout + result.stderr
    assert not FORBIDDEN.search(text), repr(text)
    assert "owned" not in text  # the window title went with its escape
    return text


async def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
async def hostile() -> AsyncIterator[str]:
    runner, url = await _serve(
        _hostile_app({"device_id": f"dev_1{EVIL}", "relay_id": RELAY_ID}, 200)
    )
    try:
        yield url
    finally:
        await runner.cleanup()


async def test_the_console_prints_nothing_raw_from_a_hostile_relay(
    hostile: str, tmp_path: Path
) -> None:
    tech = Technician(tmp_path / "tech")
    result = await _run("posassist.console", "health", "--relay", hostile, env=tech.env)
    text = _clean(result)
    assert result.returncode == 0, text
    assert "relay r" in text

    result = await _run("posassist.console", *tech.login_args(hostile), env=tech.env)
    text = _clean(result)
    assert result.returncode == 0, text
    assert "signed in as admin (admin" in text

    result = await _run("posassist.console", "devices", env=tech.env)
    text = _clean(result)
    assert result.returncode == 3, text  # refused: the relay's words, made printable
    assert "HTTP 403 Scope" in text

    result = await _run("posassist.console", "scripts", "list", env=tech.env)
    text = _clean(result)
    assert result.returncode == 0, text
    assert "harmless" in text
    assert "无害" in text


def _token(url: str, relay_id: str = RELAY_ID) -> str:
    return EnrolmentInvite(relay_url=url, relay_id=relay_id, secret="s" * 24).encode()


async def test_the_agent_refuses_a_device_id_with_escapes_and_prints_none(
    hostile: str, tmp_path: Path
) -> None:
    till = tmp_path / "till"
    result = await _run("posassist.agent", "enroll", _token(hostile), "--data", str(till))
    text = _clean(result)
    assert result.returncode == 2, text
    assert "device id that is not one" in text
    assert not (till / "agent.json").exists()  # nothing kept from that answer


async def test_the_agent_prints_a_hostile_refusal_made_printable(tmp_path: Path) -> None:
    app = _hostile_app({"error": f"TokenUsed{EVIL}", "message": f"used{EVIL}"}, 403)
    runner, url = await _serve(app)
    try:
        result = await _run("posassist.agent", "enroll", _token(url), "--data", str(tmp_path / "t"))
    finally:
        await runner.cleanup()
    text = _clean(result)
    assert result.returncode == 3, text
    assert "TokenUsed" in text


@pytest.mark.parametrize(
    ("field", "value"), [("u", f"ws://127.0.0.1:1/{EVIL}"), ("r", f"relay{EVIL}")]
)
async def test_a_token_with_escapes_in_the_relay_url_or_id_is_refused(
    field: str, value: str, tmp_path: Path
) -> None:
    """The token comes from whoever runs the relay; the till prints and keeps its URL and id."""
    import msgpack

    fields = {"u": "ws://127.0.0.1:1", "r": RELAY_ID, "s": "s" * 24, "p": None, "h": None}
    fields[field] = value
    text = PREFIX + base64.urlsafe_b64encode(msgpack.packb(fields)).decode().rstrip("=")
    till = tmp_path / "till"
    result = await _run("posassist.agent", "enroll", text, "--data", str(till))
    out = _clean(result)
    assert result.returncode == 2, out
    assert "token" in out.lower()
    assert not till.exists() or not any(till.iterdir())
