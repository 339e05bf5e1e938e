"""A peer's outbox is bounded in bytes as well as in frames (relay/connection.py): a console
that stops reading while big replies pour in is closed with 4008 once the relay holds
``max_outbox_bytes`` for it, not after 1,024 frames of up to 1 MiB each (a gigabyte); the agent
that sent them stays connected and another console is still answered (issue 16, big replies)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from posassist.protocol import messages as m
from posassist.relay.connection import WebSocketSession
from tests.relay.harness import Agent, Console, close_code, start_relay, wait_until

if TYPE_CHECKING:
    from pathlib import Path

LIMIT = 1024 * 1024


def _queued_bytes(relay: object) -> int:
    sessions = [s for group in relay.state.console_tokens.values() for s in group]  # type: ignore[attr-defined]
    return max((s.queued_bytes for s in sessions if isinstance(s, WebSocketSession)), default=0)


async def test_a_console_that_stops_reading_big_output_is_shed_within_its_byte_bound(
    tmp_path: Path,
) -> None:
    relay = await start_relay(tmp_path, max_outbox_bytes=LIMIT)
    try:
        device_id, key = await relay.enrol()
        async with (
            Agent(relay, device_id, key) as agent,
            Console(relay) as console,
            Console(relay, "admin") as other,
        ):
            await console.request(
                m.ScriptRunRequest(id=1, device_id=device_id, script="flood", version="1")
            )
            (request,) = [r for r in await agent.next() if isinstance(r, m.ScriptRunRequest)]
            assert console.ws is not None
            console.ws.transport.pause_reading()  # the console reads nothing from here on
            chunk = b"x" * m.MAX_CHUNK
            peak = 0
            sent = 0
            # 64 KiB chunks: 1,024 frames (the frame bound alone) would be 64 MiB
            for seq in range(1000):
                if relay.state.router.routes_in_flight == 0:
                    break
                await agent.reply(
                    m.ScriptOutput(id=request.id, job_id="j", seq=seq, stream="stdout", data=chunk)
                )
                sent += len(chunk)
                peak = max(peak, _queued_bytes(relay))
            await wait_until(lambda: relay.state.router.routes_in_flight == 0, timeout=30)
            assert peak <= LIMIT
            assert sent < 40 * LIMIT  # shed long before the frame bound (64 MiB) was reached
            console.ws.transport.resume_reading()
            assert await close_code(console.ws, timeout=30) == 4008
            # the agent is still connected, and another console's request is answered
            assert relay.state.router.agent(device_id) is not None
            await other.request(m.DiagnosticsRequest(id=7, device_id=device_id, timeout=10))
            (diag,) = [r for r in await agent.next() if isinstance(r, m.DiagnosticsRequest)]
            await agent.reply(
                m.DiagnosticsReport(id=diag.id, device_id=device_id, collected_at=1.0, sections={})
            )
            (report,) = await other.next()
            assert isinstance(report, m.DiagnosticsReport)
            assert report.id == 7
    finally:
        await relay.server.close()


async def test_one_frame_bigger_than_the_byte_bound_still_goes_to_a_reading_peer(
    tmp_path: Path,
) -> None:
    # the bound sheds a peer that lets frames pile up, never one big frame on its own
    relay = await start_relay(tmp_path, max_outbox_bytes=1000)
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent, Console(relay) as console:
            await console.request(m.DiagnosticsRequest(id=3, device_id=device_id, timeout=10))
            (diag,) = [r for r in await agent.next() if isinstance(r, m.DiagnosticsRequest)]
            sections = {"logs": {"ok": True, "data": {"pos.log": ["y" * 200_000]}}}
            await agent.reply(
                m.DiagnosticsReport(
                    id=diag.id, device_id=device_id, collected_at=1.0, sections=sections
                )
            )
            (report,) = await console.next()
            assert isinstance(report, m.DiagnosticsReport)
            assert list(report.sections["logs"]["data"]["pos.log"]) == ["y" * 200_000]
    finally:
        await relay.server.close()
