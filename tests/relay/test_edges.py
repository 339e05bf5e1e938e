"""Review items at the relay's edges (issue 10, wp-edges), over a real relay with agents and
consoles played by the test: fields the relay owns, failed-handshake budgets, identifiers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from posassist.protocol import messages as m
from tests.relay.harness import Agent, Console, Relay, start_relay

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
