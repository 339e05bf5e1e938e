"""examples/webhook_bridge.py between a real relay and a stand-in WeChat Work robot on 127.0.0.1:
a signed notification becomes one robot message; a forged one is refused and forwards nothing."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.relay.alerting import raised, relay, send_event
from tests.relay.harness import Agent, Relay

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["relay"]
BRIDGE = Path(__file__).resolve().parents[2] / "examples" / "webhook_bridge.py"


class Robot(BaseHTTPRequestHandler):
    """Stands in for the group robot: keeps what it is sent."""

    got: list[dict[str, Any]]

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def serving(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture
def bridge() -> Iterator[tuple[Any, str, list[dict[str, Any]]]]:
    spec = importlib.util.spec_from_file_location("webhook_bridge", BRIDGE)
    assert spec is not None
    assert spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    got: list[dict[str, Any]] = []
    robot_class = type("GotRobot", (Robot,), {"got": got})
    robot, robot_url = serving(robot_class)
    module.ROBOT_URL = robot_url
    module.Bridge.log_message = lambda *args: None
    server, url = serving(module.Bridge)
    try:
        yield module, url, got
    finally:
        for running in (server, robot):
            running.shutdown()
            running.server_close()


async def test_a_signed_notification_reaches_the_robot_and_a_forged_one_does_not(
    relay: Relay, bridge: tuple[Any, str, list[dict[str, Any]]]
) -> None:
    module, url, got = bridge
    status, body = await relay.post(
        "/v1/webhooks",
        {"scope_kind": "merchant", "scope_id": relay.merchant, "url": url},
        relay.tokens["admin"],
    )
    assert status == 201, body
    module.SECRET = body["secret"]
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await send_event(agent, raised(1, "p1", summary="缺纸 / paper out"))
    async with asyncio.timeout(10):
        while not got:  # noqa: ASYNC110 - the robot is another thread's server
            await asyncio.sleep(0.02)
    (message,) = got
    assert message["msgtype"] == "text"
    assert message["text"]["content"].startswith("[告警] critical printer 缺纸 / paper out")
    phone = {
        "store_id": relay.store,
        "description": "来电:\x1b[31m 钱箱打不开",
        "category": "cash_drawer",
    }
    status, body = await relay.post("/v1/tickets", phone, relay.tokens["admin"])
    assert status == 400  # control characters: refused before anything is sent
    phone["description"] = "来电: 钱箱打不开"
    status, opened = await relay.post("/v1/tickets", phone, relay.tokens["admin"])
    assert status == 201, opened
    async with asyncio.timeout(10):
        while len(got) < 2:  # noqa: ASYNC110 - the robot is another thread's server
            await asyncio.sleep(0.02)
    store = await relay.state.storage.get_store(relay.store)  # the robot shows its name
    assert got[1]["text"]["content"].startswith(
        f"[新工单] {opened['code']} 钱箱 来电: 钱箱打不开 ("
    )
    assert got[1]["text"]["content"].endswith(f" {store.name}, 电话)")
    forged = urllib.request.Request(
        url,
        b'{"type": "alert.opened"}',
        {"X-Posassist-Timestamp": "1", "X-Posassist-Signature": "sha256=00"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, forged, timeout=5)
    assert refused.value.code == 401
    refused.value.close()
    assert len(got) == 2
