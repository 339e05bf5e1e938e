"""Review items at the relay's edges (issue 10, wp-edges), over a real relay with agents and
consoles played by the test: fields the relay owns, failed-handshake budgets, identifiers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from posassist.protocol import messages as m
from posassist.protocol import signing
from tests.relay.harness import Agent, Console, Relay, agent_handshake, start_relay

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


async def test_forwarded_replies_carry_the_relays_job_and_device_not_the_agents(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    other_id, _ = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(m.DiagnosticsRequest(id=3, device_id=device_id))
        (asked,) = await agent.next()
        assert isinstance(asked, m.DiagnosticsRequest)
        # the agent claims the report is another device's
        await agent.reply(
            m.DiagnosticsReport(
                id=asked.id, device_id=other_id, collected_at=1.0, sections={"a": 1}
            )
        )
        (report,) = await console.next()
        assert isinstance(report, m.DiagnosticsReport)
        assert (report.id, report.device_id, report.sections) == (3, device_id, {"a": 1})

        await console.request(
            m.ScriptRunRequest(id=4, device_id=device_id, script="pos-restart", version="1")
        )
        (run,) = await agent.next()
        assert isinstance(run, m.ScriptRunRequest)
        assert run.job_id is not None
        forged = "job_someone_elses"
        await agent.reply(m.ScriptStarted(id=run.id, job_id=forged, started_at=1.0))
        await agent.reply(
            m.ScriptProgress(id=run.id, job_id=forged, step="verified", at=1.0, detail={})
        )
        await agent.reply(
            m.ScriptOutput(id=run.id, job_id=forged, seq=0, stream="stdout", data=b"ok\n")
        )
        await agent.reply(
            m.ScriptFinished(
                id=run.id,
                job_id=forged,
                status="succeeded",
                finished_at=2.0,
                exit_code=0,
                backup_id=None,
            )
        )
        seen: list[m.Message] = []
        while len(seen) < 4:
            seen += await console.next()
        assert [type(x) for x in seen] == [
            m.ScriptStarted,
            m.ScriptProgress,
            m.ScriptOutput,
            m.ScriptFinished,
        ]
        for reply in seen:
            assert getattr(reply, "job_id") == run.job_id  # noqa: B009
            assert getattr(reply, "id") == 4  # noqa: B009
        job = await relay.state.storage.get_job(run.job_id)
        assert job.status.value == "succeeded"


async def _refused_agent(relay: Relay, device_id: str, key: signing.Ed25519PrivateKey) -> str:
    """One agent sign-in that the relay refuses; its refusal code."""
    async with connect(relay.ws + "/v1/agent", close_timeout=1) as ws:
        _, answer = await agent_handshake(ws, device_id, key)
    assert isinstance(answer, m.AuthRefused), answer
    return answer.code


async def _status_before_upgrade(relay: Relay, path: str) -> tuple[int, dict[str, object]]:
    with pytest.raises(InvalidStatus) as info:
        async with connect(relay.ws + path, close_timeout=1):
            pass
    response = info.value.response
    if response.status_code == 429:  # says when to try again: 1 / 0.05 tokens per second
        assert 1 <= int(response.headers["Retry-After"]) <= 20
    return response.status_code, json.loads(response.body or b"{}")


async def test_failed_sign_ins_spend_a_budget_then_get_429_before_the_upgrade(
    tmp_path: Path,
) -> None:
    relay = await start_relay(tmp_path, handshake_failure_burst=3, handshake_failure_rate=0.05)
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent, Console(relay) as console:
            stranger = signing.generate_private_key()
            codes = [await _refused_agent(relay, device_id, stranger) for _ in range(2)]
            codes.append(await _refused_agent(relay, "dev_nobody", stranger))
            assert codes == ["bad_signature", "bad_signature", "unknown_device"]
            seen_before = await _records(relay)
            # the budget is spent: refused before any websocket, for agents and consoles alike
            for path in ("/v1/agent", "/v1/agent", "/v1/console"):
                status, body = await _status_before_upgrade(relay, path)
                assert status == 429
                assert body["error"] == "RateLimited"
                assert body["message_zh"]
            # nothing was read or checked for them: no new agent.connect record per try
            # (agent.connect had its full record already in this window; console.connect gets one)
            assert len(await _records(relay)) == len(seen_before) + 1
            # signed-in traffic from the same address is unaffected
            await console.request(m.DiagnosticsRequest(id=9, device_id=device_id))
            (asked,) = await agent.next()
            assert isinstance(asked, m.DiagnosticsRequest)
            await agent.reply(
                m.DiagnosticsReport(id=asked.id, device_id=device_id, collected_at=1, sections={})
            )
            (report,) = await console.next()
            assert isinstance(report, m.DiagnosticsReport)
        # the budget refills: 1/0.05 = 20 s later one more try is let through (and refused)
        relay.clock.offset += 21
        assert await _refused_agent(relay, device_id, stranger) == "bad_signature"
        await relay.state.write_refusal_summaries(final=True)
        summaries = [
            r
            for r in await _records(relay)
            if r.action == "agent.connect" and r.detail.get("summary")
        ]
        assert len(summaries) == 1
        assert summaries[0].actor == "ip:127.0.0.1"
        # the two refusals after the first full record were counted, including the 429s
        assert summaries[0].detail["count"] >= 3
        assert summaries[0].detail["reasons"].get("rate_limited") == 2
    finally:
        await relay.server.close()


async def _records(relay: Relay) -> list:  # type: ignore[type-arg]
    return [r async for r in relay.state.storage.records()]


@pytest.mark.parametrize("bad", ["dev%201", "dev%1B%5B2J", "%3Cb%3E", "d" * 65])
async def test_revoking_something_that_cannot_be_a_device_id_is_bad_request(
    relay: Relay, bad: str
) -> None:
    device_id, _ = await relay.enrol()
    before = await _records(relay)
    status, body = await relay.post(f"/v1/devices/{bad}/revoke", {}, relay.tokens["admin"])
    assert status == 400
    assert body == {"error": "BadRequest", "message": "bad request", "message_zh": "请求无效"}
    assert len(await _records(relay)) == len(before)  # nothing looked up, changed or audited
    assert (await relay.state.storage.get_device(device_id)).status.value == "active"
