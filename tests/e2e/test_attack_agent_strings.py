"""A hostile till puts escape sequences in every string it gives a real relay process: its
version at enrolment, its hello, every device fact (hostname, OS, software, printers, serial
ports, keys the console has no label for). ``posassist devices`` (with and without ``--facts``)
prints none of them raw, and the relay's audit keeps the agent's words out of its own fields
(attack 2026-12). Diagnostics, script output, progress detail and errors are attacked in
tests/console/test_escapes.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from aiohttp import ClientSession
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from posassist.protocol import signing
from posassist.protocol.enrolment import EnrolmentInvite
from tests.e2e.cli import Technician, admin_token, invite, ok, provision, py, start_relay, stop
from tests.relay.harness import agent_handshake, close_code, send

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(180)

EVIL = (
    "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://x\x1b\\\x9b31m\x1bP1$r\x1b\\\x1b[10A"
    "\rFAKE\u202eevil\x07\x08\x00\x7f\x1bc"
)
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _facts() -> dict[str, Any]:
    return {
        "hostname": f"till-1{EVIL}",
        "os": f"Linux{EVIL}",
        "os_release": f"6.1{EVIL}",
        "distribution": f"Debian{EVIL}",
        "machine": f"x86_64{EVIL}",
        "python": f"3.8{EVIL}",
        "agent_version": f"9.9{EVIL}",
        "pos_profile": f"demo{EVIL}",
        "pos_name": f"DemoPOS{EVIL}",
        "software": [f"pos-suite{EVIL}", {"name": f"driver{EVIL}", "version": EVIL}],
        "printers": [{"name": f"TM-T20{EVIL}", "target": f"tcp{EVIL}", "model": EVIL}, EVIL],
        "serial_ports": [{"device": f"/dev/ttyUSB0{EVIL}", "usb_id": EVIL, "product": EVIL}],
        f"extra{EVIL}": f"value{EVIL}",
    }


async def _enrol_evil(http: str, token: str) -> tuple[str, signing.Ed25519PrivateKey]:
    key = signing.generate_private_key()
    raw = base64.b64encode(signing.public_key_to_raw(key.public_key())).decode()
    body = {
        "secret": EnrolmentInvite.decode(token).secret,
        "public_key": raw,
        "agent_version": f"posassist-agent/1{EVIL}",
    }
    async with ClientSession() as session, session.post(http + "/v1/enrol", json=body) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["device_id"]), key


async def _facts_stored(http: str, token: str, device_id: str) -> dict[str, Any]:
    """The facts the relay lists for ``device_id``, once it lists them (bounded wait)."""
    deadline = time.monotonic() + 20
    async with ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        while True:
            async with session.get(http + "/v1/devices") as r:
                devices = (await r.json())["devices"]
            facts = next(d.get("facts") for d in devices if d["id"] == device_id)
            if facts:
                return dict(facts)
            assert time.monotonic() < deadline, "the relay never listed the facts"
            await _tick()


async def _tick() -> None:
    await asyncio.sleep(0.1)  # polling pace for a bounded wait, not a synchronisation


#: What the protocol lets through in a fact (controls are refused at decode): bidi overrides
#: and isolates, which make text read in another order than it is stored.
BIDI = "\u202eevil\u2066x\u2069\u202a"


def _bidi(facts: Any) -> Any:
    """``facts`` with :data:`BIDI` in place of :data:`EVIL` (keys made valid fact keys)."""
    if isinstance(facts, str):
        return facts.replace(EVIL, BIDI)
    if isinstance(facts, dict):
        return {
            k.replace(EVIL, "") if isinstance(k, str) else k: _bidi(v) for k, v in facts.items()
        }
    if isinstance(facts, list):
        return [_bidi(v) for v in facts]
    return facts


async def test_every_string_a_till_supplies_reaches_the_console_stripped(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    relay, url = start_relay(data)
    http = url.replace("ws://", "http://")
    try:
        token = await admin_token(url)
        device_id, key = await _enrol_evil(http, invite(data, store, url))
        # 1. escapes in the facts, sent raw (a hostile till skips its own checks): refused
        async with connect(url + "/v1/agent") as ws:
            _, answer = await agent_handshake(ws, device_id, key)
            assert isinstance(answer, m.AuthAccepted)
            await ws.send(msgpack.packb({"t": m.DeviceFacts.TAG, "facts": _facts()}))
            assert await close_code(ws, timeout=10) == 1007
        # 2. what the protocol does let through (bidi overrides) reaches the console stripped
        async with connect(url + "/v1/agent") as ws:
            session, answer = await agent_handshake(ws, device_id, key)
            assert isinstance(answer, m.AuthAccepted)
            session.send(m.DeviceFacts(facts=_bidi(_facts())))
            await send(ws, session)
            stored = await _facts_stored(http, token, device_id)
            assert stored["hostname"] == f"till-1{BIDI}"  # the relay keeps the device's word...

            tech = Technician(tmp_path / "tech").login(url)
            for argv in (("devices",), ("devices", "--facts")):
                result = tech(*argv)
                text = result.stdout + result.stderr
                assert result.returncode == 0, text
                assert not FORBIDDEN.search(text), (argv, text)  # ...the terminal never sees it
                assert "till-1evilx" in text
                assert device_id in text
            facts_text = tech("devices", "--facts").stdout
            for word in ("TM-T20", "DemoPOS", "pos-suite", "/dev/ttyUSB0", "extra", "value"):
                assert word in facts_text, word
    finally:
        stop(relay)
    with sqlite3.connect(data / "relay.db") as db:
        rows = db.execute("SELECT actor, action, outcome, detail FROM audit").fetchall()
    (enrolled,) = [r for r in rows if r[1] == "device.enrol" and r[2] == "ok"]
    assert enrolled[0] == f"device:{device_id}"  # the relay's field, whatever the till said
    assert "evil" not in enrolled[0]
    refused = [r for r in rows if r[0] == f"device:{device_id}" and r[2] == "refused"]
    assert refused, rows  # the bad frame is on the record
    details = json.dumps([json.loads(r[3]) for r in rows], ensure_ascii=False)
    assert not FORBIDDEN.search(details)  # no escape kept: not the frame's, not the version's
    assert json.loads(enrolled[3])["agent_version"] == "posassist-agent/1FAKEevil"
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(data)))
