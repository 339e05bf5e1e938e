"""The relay's own work per forwarded ScriptOutput, in process: the agent handler's loop, the
session checks both ways, routing and the console's outbox, without sockets or other processes.

``python -m benchmarks.bench_forwarding [--messages N] [--batch K] [--repeats R]``. The agent's
websocket is a stand-in that hands the handler the same frame again and again, ``K`` frames per
event-loop wake-up (bench_relay's throughput section sees ~8 with 100 pairs); the console's
transport swallows what it is given. What aiohttp and the kernel do is left out, so the figure is
the part of bench_relay's "server CPU µs/msg" that posassist code decides, measured as this
thread's CPU time (steady on a shared machine, unlike the wall clock). Best of ``R``. Never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType
from aiohttp.http_websocket import WSMessage

from posassist.protocol import Codec, Role, ScriptOutput, ScriptRunRequest, Session
from posassist.relay.app import create_app
from posassist.relay.config import RelayConfig
from posassist.relay.connection import ConnectionClosedError, WebSocketSession
from posassist.relay.handlers.agents import LostJobs, _serve
from posassist.relay.state import STATE

CHUNK = b"x" * 200


class _AgentSocket:
    """Hands out ``frame`` ``count`` times, ``batch`` per wake-up, then a close."""

    closed = False
    _left = 0
    _batch = 1

    def load(self, frame: bytes, count: int, batch: int) -> None:
        self._message = WSMessage(WSMsgType.BINARY, frame, None)
        self._left = count
        self._batch = batch

    async def receive(self) -> WSMessage:
        self._left -= 1
        if self._left < 0:
            return WSMessage(WSMsgType.CLOSED, None, None)
        if self._left % self._batch == 0:
            await asyncio.sleep(0)  # the loop runs the console's writer, as between reads
        return self._message


class _ConsoleTransport:
    """Swallows the console's frames; its buffer is always empty."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


class _ConsoleSocket:
    """A lone queued frame goes out through the websocket (aiohttp's send_bytes), not counted."""

    closed = False

    def __init__(self, transport: _ConsoleTransport) -> None:
        self._transport = transport

    async def send_bytes(self, data: bytes) -> None:
        self._transport.write(data)


def _pump(src: Session, dst: Session) -> list[Any]:
    for frame in src.data_to_send():
        dst.receive_data(frame)
    return dst.events_received()


def _open(role: Role, relay_role: Role) -> tuple[Session, Session]:
    """A client session and the relay's, through the real handshake (no signature checked)."""
    client, relay = Session(role), Session(relay_role)
    client.send_hello("bench/1")
    _pump(client, relay)
    relay.send_welcome("relay-bench", "relay/1")
    if role is Role.AGENT:
        relay.send_challenge(b"n" * 32)
        _pump(relay, client)
        client.send_auth_response("dev-bench", b"s" * 64)
    else:
        _pump(relay, client)
        client.send_token("token")
    _pump(client, relay)
    relay.send_accepted("dev-bench" if role is Role.AGENT else "li.wei", 3600.0)
    _pump(relay, client)
    return client, relay


async def _once(data: Path, messages: int, batch: int) -> float:
    """Thread CPU seconds the relay's agent handler spent on ``messages`` chunks."""
    state = create_app(RelayConfig(data_dir=data, relay_id="relay-bench"))[STATE]
    agent, agent_side = _open(Role.AGENT, Role.RELAY_FOR_AGENT)
    console, console_side = _open(Role.CONSOLE, Role.RELAY_FOR_CONSOLE)
    transport = _ConsoleTransport()
    console_peer = WebSocketSession(
        _ConsoleSocket(transport),  # type: ignore[arg-type]
        console_side,
        "console",
        transport=transport,  # type: ignore[arg-type]
        max_outbox=max(256, 4 * batch),
    )
    console.send(ScriptRunRequest(id=1, device_id="dev-bench", script="bench", version="1"))
    (request,) = _pump(console, console_side)
    agent_socket = _AgentSocket()
    agent_peer = WebSocketSession(agent_socket, agent_side, "agent")  # type: ignore[arg-type]
    state.router.attach_agent("dev-bench", agent_peer)
    route = state.router.forward(
        console_peer,
        request,
        device_id="dev-bench",
        job_id="job-bench",
        user="li.wei",
        now=state.now(),
        timeout=600.0,
    )
    for queued in agent_peer._outbox:  # the request, to the agent's session
        agent.receive_data(queued)
    agent_peer._outbox.clear()
    (run,) = agent.events_received()
    assert isinstance(run, ScriptRunRequest)
    frame = Codec().encode(
        ScriptOutput(id=run.id, job_id=route.job_id, seq=0, stream="stdout", data=CHUNK)
    )
    agent_socket.load(frame, messages, batch)
    agent_side.data_received(asyncio.get_running_loop().time())  # as its handshake's frames did
    console_peer.start_writer()
    start = time.thread_time()
    try:
        await _serve("dev-bench", agent_peer, state, LostJobs())
    except ConnectionClosedError:
        pass
    await asyncio.sleep(0)  # the console's writer writes the last batch
    spent = time.thread_time() - start
    await console_peer.stop_writer()
    expected = messages * len(frame)
    if transport.written < expected:
        raise RuntimeError(f"the console got {transport.written} bytes, not {expected}+")
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_forwarding")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=8, help="frames per loop wake-up")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= 10_000_000 or not 1 <= args.batch <= 256:
        parser.error("--messages 1..10,000,000, --batch 1..256")
    import uvloop

    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="bench-forwarding-") as tmp:
        for i in range(max(1, args.repeats)):
            data = Path(tmp) / str(i)
            data.mkdir()
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                best = min(best, runner.run(_once(data, args.messages, args.batch)))
    print(
        f"relay, in process: {best / args.messages * 1e6:.2f} µs thread CPU per forwarded "
        f"ScriptOutput (best of {args.repeats} × {args.messages:,}, {args.batch} per wake-up)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
