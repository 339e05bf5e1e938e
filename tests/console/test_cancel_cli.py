"""``posassist cancel JOB`` against a real relay with an agent played over a real websocket: the
till's answer in words (its text made printable) or as JSON, and each refusal in English and
Chinese with a failing exit status, nothing sent to the till."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest

from posassist.protocol import messages as m
from tests.relay.harness import Agent, Console, Relay, start_relay
from tests.relay.test_tickets_console import console

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


async def _running(agent: Agent, console_peer: Console, device_id: str) -> m.ScriptRunRequest:
    await console_peer.request(
        m.ScriptRunRequest(id=1, device_id=device_id, script="printer-test", version="1.0.0")
    )
    (run,) = await agent.next()
    assert isinstance(run, m.ScriptRunRequest)
    assert run.job_id is not None
    await agent.reply(m.ScriptStarted(id=run.id, job_id=run.job_id, started_at=1.0))
    return run


async def _answer_cancel(agent: Agent, run: m.ScriptRunRequest, detail: str) -> None:
    (asked,) = await agent.next()
    assert isinstance(asked, m.ScriptCancel)
    assert asked.job_id == run.job_id
    for request_id in (run.id, asked.id):
        await agent.reply(
            m.ScriptFinished(
                id=request_id,
                job_id=str(run.job_id),
                status="cancelled",
                finished_at=2.0,
                exit_code=-9,
                backup_id="bk_7",
                detail=detail,
            )
        )


async def test_cancel_says_what_the_till_did_and_refuses_a_second_time(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as peer:
        run = await _running(agent, peer, device_id)
        job_id = str(run.job_id)
        cli = asyncio.ensure_future(
            console(relay, tmp_path, monkeypatch, capsys, "tech", "cancel", job_id)
        )
        hostile = "stopped\x1b[2J; backup bk_7 restored, and kept"
        await _answer_cancel(agent, run, hostile)
        status, out, err = await asyncio.wait_for(cli, 30)
        assert status == 0, err
        assert f"job {job_id} cancelled on device {device_id} / 任务已取消" in out
        assert "stopped; backup bk_7 restored, and kept" in out  # the escape dropped
        assert "\x1b" not in out
        assert f"posassist restore {device_id} bk_7" in out
        status, out, err = await console(
            relay, tmp_path, monkeypatch, capsys, "tech", "cancel", job_id
        )
        assert status != 0
        assert out == ""
        assert "JobFinished" in err
        assert "任务已结束, 无需取消" in err
        assert "Traceback" not in err


async def test_cancel_json_and_refusals_in_words(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as peer:
        run = await _running(agent, peer, device_id)
        job_id = str(run.job_id)
        status, _, err = await console(
            relay, tmp_path, monkeypatch, capsys, "viewer", "cancel", job_id
        )
        assert (status, "您的角色不能取消脚本" in err) == (3, True)
        status, _, err = await console(
            relay, tmp_path, monkeypatch, capsys, "tech", "cancel", "job_$(rm -rf)"
        )
        assert (status, "not a job id" in err) == (2, True)
        status, _, err = await console(
            relay, tmp_path, monkeypatch, capsys, "tech", "cancel", "job_0000000000000000"
        )
        assert status != 0
        assert "没有此任务" in err
        # none of those reached the till: a heartbeat's ack is the next thing it reads
        await agent.reply(m.Heartbeat(seq=5, sent_at=1.0))
        (ack,) = await agent.next()
        assert isinstance(ack, m.HeartbeatAck)
        # now a real one, as JSON
        cli = asyncio.ensure_future(
            console(relay, tmp_path, monkeypatch, capsys, "tech", "cancel", job_id, "--json")
        )
        await _answer_cancel(agent, run, "cancelled on request")
        status, out, err = await asyncio.wait_for(cli, 30)
        assert status == 0, err
        assert json.loads(out) == {
            "job_id": job_id,
            "device_id": device_id,
            "status": "cancelled",
            "exit_code": -9,
            "backup_id": "bk_7",
            "detail": "cancelled on request",
        }
