"""The agent against a real in-process relay whose agent side the test plays: diagnostics
requests, unknown requests, and staying alive (memory flat) while the relay is unreachable."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import tracemalloc
from typing import TYPE_CHECKING

import msgpack
from aiohttp import web
from aiohttp.test_utils import TestServer

from posassist.agent.backoff import backoff
from posassist.agent.config import Identity, write_identity
from posassist.agent.connection import connect_once
from posassist.agent.diagnostics import Collector, DiagContext
from posassist.agent.run import run_agent
from posassist.agent.settings import Settings
from posassist.protocol import Role, Session, signing
from posassist.protocol import messages as m
from posassist.relay.app import create_app
from posassist.relay.config import RelayConfig
from posassist.relay.connection import WebSocketSession
from posassist.relay.handlers.agents import _authenticate
from posassist.relay.state import STATE

if TYPE_CHECKING:
    from pathlib import Path


class PlayedRelay:
    """The real relay (storage, enrolment, its own agent authentication); after the handshake the
    test drives the relay's side of the Session itself, on a test-only path."""

    PATH = "/played/v1/agent"

    def __init__(self, tmp_path: Path, port: int = 0) -> None:
        config = RelayConfig.load(tmp_path / "relay", heartbeat_interval=1.0)
        app = create_app(config)
        app.router.add_get(self.PATH, self.endpoint)
        self.state = app[STATE]
        self.peers: asyncio.Queue[WebSocketSession] = asyncio.Queue()
        self.done = asyncio.Event()
        self.server = TestServer(app, host="127.0.0.1", port=port)

    async def endpoint(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peer = WebSocketSession(ws, Session(Role.RELAY_FOR_AGENT), "test")
        await _authenticate(peer, self.state)
        await self.peers.put(peer)
        await self.done.wait()
        return ws

    async def enrol(self, tmp_path: Path, base_url: str) -> Identity:
        storage, now = self.state.storage, time.time()
        await storage.migrate()  # idempotent; lets a test enrol before the relay is serving
        org = await storage.create_organisation("o", now=now)
        merchant = await storage.create_merchant(org.id, "m", now=now)
        store = await storage.create_store(merchant.id, "s", now=now)
        _, secret = await storage.create_enrolment(
            store.id, self.state.config.relay_id, now=now, ttl=60
        )
        key = signing.generate_private_key()
        device = await storage.consume_enrolment(
            secret,
            relay_id=self.state.config.relay_id,
            public_key=signing.public_key_to_raw(key.public_key()),
            now=now,
        )
        identity = Identity(device.id, base_url + self.PATH, key)
        write_identity(tmp_path / "till", identity)
        return identity


async def _reply(peer: WebSocketSession, request_id: int, timeout: float = 10.0) -> m.Message:
    end = time.monotonic() + timeout
    while True:
        for event in await peer.wait_events(end - time.monotonic()):
            if getattr(event, "id", None) == request_id:
                return event


def _slow(ctx):
    time.sleep(30)


async def test_agent_answers_diagnostics_request_within_its_timeout(tmp_path) -> None:
    relay = PlayedRelay(tmp_path)
    await relay.server.start_server()
    identity = await relay.enrol(tmp_path, f"ws://127.0.0.1:{relay.server.port}")
    ctx = DiagContext(Settings())
    collectors = [Collector("fast", lambda c: {"x": 1}), Collector("slow", _slow, 30.0)]
    agent = asyncio.ensure_future(connect_once(identity, diagnostics=ctx, collectors=collectors))
    try:
        peer = await asyncio.wait_for(relay.peers.get(), 10)
        request = m.DiagnosticsRequest(
            id=peer.session.next_id(), device_id=identity.device_id, timeout=1.5
        )
        started = time.monotonic()
        peer.send_nowait(request)
        report = await _reply(peer, request.id)
        assert time.monotonic() - started < 1.5  # the slow collector was cut at the deadline
        assert isinstance(report, m.DiagnosticsReport)
        assert (report.id, report.device_id) == (request.id, identity.device_id)
        assert report.sections["fast"]["data"] == {"x": 1}
        assert report.sections["slow"]["error"]["type"] == "CollectorTimeout"
        # a second request names one collector
        again = m.DiagnosticsRequest(
            id=peer.session.next_id(), device_id=identity.device_id, collectors=("fast",)
        )
        peer.send_nowait(again)
        second = await _reply(peer, again.id)
        assert isinstance(second, m.DiagnosticsReport)
        assert list(second.sections) == ["fast"]
        # heartbeat acks from the relay side feed the clock offset
        hb = await peer.wait_events(3)
        assert any(isinstance(e, m.Heartbeat) for e in hb)
    finally:
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        relay.done.set()
        await relay.server.close()


async def test_a_diag_report_to_the_relay_keeps_the_report_wide_findings(tmp_path) -> None:
    """attack 14 F6: the agent annotated the sections alone for a ``diag.report``, so a POS
    profile that did not load read "No POS profile configured" (info) on the console, and a
    clock before 2020 (critical) vanished; the offline report said both."""
    relay = PlayedRelay(tmp_path)
    await relay.server.start_server()
    identity = await relay.enrol(tmp_path, f"ws://127.0.0.1:{relay.server.port}")
    ctx = DiagContext(Settings(pos_profile="nosuch"))
    ctx.profile_error = "POS profile 'nosuch': No such file or directory"
    collectors = [
        Collector("pos", _no_profile),
        Collector("system", lambda c: {"os": {"system": "Linux"}}),
    ]
    agent = asyncio.ensure_future(connect_once(identity, diagnostics=ctx, collectors=collectors))
    try:
        peer = await asyncio.wait_for(relay.peers.get(), 10)
        request = m.DiagnosticsRequest(id=peer.session.next_id(), device_id=identity.device_id)
        peer.send_nowait(request)
        report = await _reply(peer, request.id)
        assert isinstance(report, m.DiagnosticsReport)
        pos = report.sections["pos"]
        assert [f["code"] for f in pos["findings"]] == ["pos.profile_invalid"]
        assert "nosuch" in pos["findings"][0]["detail"]["en"]
        assert pos["status"] == "warning"
    finally:
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        relay.done.set()
        await relay.server.close()


def _no_profile(ctx):
    from posassist.agent.errors import CollectorError

    raise CollectorError("no POS profile loaded")


async def test_unknown_request_gets_clear_error_and_unknown_tag_only_costs_a_reconnect(
    tmp_path,
) -> None:
    relay = PlayedRelay(tmp_path)
    await relay.server.start_server()
    identity = await relay.enrol(tmp_path, f"ws://127.0.0.1:{relay.server.port}")
    stop = asyncio.Event()
    failures: list[BaseException] = []
    agent = asyncio.ensure_future(
        run_agent(
            identity,
            stop,
            delays=lambda: backoff(base=0.05, cap=0.1),
            diagnostics=DiagContext(Settings()),
            on_failure=failures.append,
        )
    )
    try:
        peer = await asyncio.wait_for(relay.peers.get(), 10)
        run = m.ScriptRunRequest(
            id=peer.session.next_id(), device_id=identity.device_id, script="s", version="1"
        )
        peer.send_nowait(run)
        reply = await _reply(peer, run.id)
        assert isinstance(reply, m.ErrorReply)
        assert reply.code == "unsupported"
        assert "script.run not supported" in reply.message
        # a tag from a newer protocol: the codec refuses it (docs/protocol.md: 1003), the agent
        # drops that connection and comes back on a new one
        await peer.ws.send_bytes(msgpack.packb({"t": "future.request", "id": 99}))
        second = await asyncio.wait_for(relay.peers.get(), 10)
        assert [type(f).__name__ for f in failures] == ["UnknownMessageType"]
        assert not agent.done()
        diag = m.DiagnosticsRequest(
            id=second.session.next_id(), device_id=identity.device_id, collectors=("x",)
        )
        second.send_nowait(diag)
        assert isinstance(await _reply(second, diag.id), m.DiagnosticsReport)
    finally:
        stop.set()
        assert await asyncio.wait_for(agent, 10) == 0
        relay.done.set()
        await relay.server.close()


async def test_relay_unreachable_agent_keeps_running_memory_flat_then_connects(
    tmp_path, unused_port
) -> None:
    relay = PlayedRelay(tmp_path, port=unused_port)
    identity = await relay.enrol(tmp_path, f"ws://127.0.0.1:{unused_port}")
    stop = asyncio.Event()
    failures: list[BaseException] = []
    agent = asyncio.ensure_future(
        run_agent(
            identity,
            stop,
            delays=lambda: backoff(base=0.001, cap=0.005),
            diagnostics=DiagContext(Settings()),
            on_failure=failures.append,
        )
    )
    # pytest keeps every captured log record: silence the per-attempt warning so the harness's
    # own memory doesn't count against the agent's
    agent_log = logging.getLogger("posassist.agent")
    agent_log.setLevel(logging.ERROR)
    tracemalloc.start()
    try:
        while len(failures) < 50:  # noqa: ASYNC110 - warm-up: caches, first-use allocations
            await asyncio.sleep(0.01)
        failures.clear()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        while len(failures) < 400:  # noqa: ASYNC110 - a counter filled by the agent's callback
            await asyncio.sleep(0.01)
        failures.clear()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        assert grown < 64 * 1024, f"{grown} bytes kept over 400 failed reconnects"
        assert not agent.done()
        await relay.server.start_server()
        await asyncio.wait_for(relay.peers.get(), 10)
    finally:
        tracemalloc.stop()
        agent_log.setLevel(logging.NOTSET)
        stop.set()
        assert await asyncio.wait_for(agent, 10) == 0
        relay.done.set()
        await relay.server.close()
