"""A technician cancels a running script (protocol v7 ``script.cancel``, docs/protocol.md#cancel):
the agent's script service stops the run with the runner's own cancel, a real process tree dies,
the backup is restored and said so, and the cancel is answered with the run's end."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

import pytest

from posassist.agent.scripts.backup import BackupStore
from posassist.agent.scripts.results import ResultStore
from posassist.agent.scripts.runner import ScriptRunner
from posassist.agent.scripts.service import ScriptService
from posassist.protocol import messages as m
from tests.agent.test_runner import gone, manifest, script_dir, wait_gone

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.agent.scripts.consent import ConsentDecision
    from posassist.protocol.manifest import Manifest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX runner tests")

CONFIG = b"[printer]\nport=COM3\n"


class Sent:
    """What the service sends the relay, with a wait for one message."""

    def __init__(self) -> None:
        self.messages: list[m.Message] = []
        self.changed = asyncio.Event()

    async def __call__(self, msg: m.Message) -> None:
        self.messages.append(msg)
        self.changed.set()

    async def until(self, check: Any, within: float = 30.0) -> Any:
        """The first message ``check`` accepts, waiting for it (bounded)."""
        async with asyncio.timeout(within):
            while True:
                for msg in self.messages:
                    if check(msg):
                        return msg
                self.changed.clear()
                await self.changed.wait()

    async def wait_for(self, kind: type, request_id: int, within: float = 30.0) -> Any:
        return await self.until(
            lambda msg: isinstance(msg, kind) and getattr(msg, "id", None) == request_id, within
        )


def _service(tmp_path: Path, runner: ScriptRunner, chosen: Manifest, folder: Path) -> ScriptService:
    """The real service and runner; only the TUF verification is skipped (tests/agent/
    test_verify.py covers it): the script is the folder this test wrote."""
    service = ScriptService(tmp_path / "till", "ws://127.0.0.1:1", runner)
    service.root_file.parent.mkdir(parents=True)
    service.root_file.write_text("{}")
    service._verify = lambda script, version: (chosen, folder)  # type: ignore[method-assign,assignment,return-value]
    return service


def _runner(tmp_path: Path, **kwargs: Any) -> ScriptRunner:
    return ScriptRunner(
        backups=BackupStore(tmp_path / "data" / "backups"),
        placeholders={"DATA": str(tmp_path / "data"), "POS_DATA": str(tmp_path / "pos")},
        **kwargs,
    )


def _run(job_id: str, request_id: int = 4) -> m.ScriptRunRequest:
    return m.ScriptRunRequest(
        id=request_id, device_id="dev-1", script="test-script", version="1.0.0", job_id=job_id
    )


async def test_a_cancel_kills_the_running_tree_restores_the_backup_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pos").mkdir()
    config = tmp_path / "pos" / "config.ini"
    config.write_bytes(CONFIG)
    pidfile = tmp_path / "pids"
    folder = script_dir(
        tmp_path,
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        open({str(config)!r}, "ab").write(b"half written")
        print("ready", flush=True)
        time.sleep(600)
        """,
    )
    chosen = manifest(backup=["${POS_DATA}/config.ini"], timeout=600)
    service = _service(tmp_path, _runner(tmp_path), chosen, folder)
    sent = Sent()
    caplog.set_level(logging.WARNING, logger="posassist.agent")
    assert service.submit(_run("job_c"), sent, lambda: 10.0) is None
    await sent.until(lambda x: isinstance(x, m.ScriptOutput) and b"ready" in x.data)
    script_pid, child_pid = (int(p) for p in pidfile.read_text().split())
    assert not gone(script_pid)
    assert not gone(child_pid)

    assert service.cancel(m.ScriptCancel(id=9, job_id="job_c"), sent) is None
    answer = await sent.wait_for(m.ScriptFinished, 9)
    ended = await sent.wait_for(m.ScriptFinished, 4)
    # the whole tree is gone: the script and the process it started
    assert await wait_gone(script_pid)
    assert await wait_gone(child_pid)
    assert (ended.status, ended.job_id, ended.backup_id) == ("cancelled", "job_c", ended.backup_id)
    assert ended.backup_id is not None
    assert answer == m.ScriptFinished(
        id=9,
        job_id="job_c",
        status="cancelled",
        finished_at=ended.finished_at,
        exit_code=ended.exit_code,
        backup_id=ended.backup_id,
        detail=ended.detail,
    )
    # nothing restored silently: the step and the end say so, and the backup is kept
    steps = [x.step for x in sent.messages if isinstance(x, m.ScriptProgress)]
    assert "restored" in steps
    assert f"backup {ended.backup_id} restored, and kept" in ended.detail
    assert "cancelled on request" in ended.detail
    assert config.read_bytes() == CONFIG
    assert (tmp_path / "data" / "backups" / ended.backup_id).is_dir()
    # the till's own results file and log keep what happened
    (result,) = ResultStore(service.results.path).lookup(["job_c"])
    assert (result["status"], result["backup_id"]) == ("cancelled", ended.backup_id)
    logged = [r.getMessage() for r in caplog.records]
    assert any("cancel of job job_c asked by the relay" in line for line in logged)
    assert any(line.startswith("job job_c cancelled:") for line in logged)
    # cancel twice: the run is over, nothing more happens
    again = service.cancel(m.ScriptCancel(id=10, job_id="job_c"), sent)
    assert isinstance(again, m.ErrorReply)
    assert (again.id, again.code) == (10, "not_running")
    await service.close()


async def test_a_cancel_of_a_job_not_running_here_is_not_running_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "marker"
    folder = script_dir(
        tmp_path,
        f"""
        import time
        print("ready", flush=True)
        time.sleep(1.0)
        open({str(marker)!r}, "w").write("done")
        """,
    )
    service = _service(tmp_path, _runner(tmp_path), manifest(), folder)
    sent = Sent()
    caplog.set_level(logging.WARNING, logger="posassist.agent")
    unknown = service.cancel(m.ScriptCancel(id=1, job_id="job_nobody"), sent)
    assert isinstance(unknown, m.ErrorReply)
    assert (unknown.id, unknown.code) == (1, "not_running")
    assert "job_nobody" in unknown.message
    assert service.submit(_run("job_keep"), sent, lambda: 1.0) is None
    await sent.wait_for(m.ScriptStarted, 4)
    other = service.cancel(m.ScriptCancel(id=2, job_id="job_other"), sent)  # another job's id
    assert isinstance(other, m.ErrorReply)
    assert other.code == "not_running"
    ended = await sent.wait_for(m.ScriptFinished, 4)
    assert ended.status == "succeeded"  # the run went on untouched
    assert marker.read_text() == "done"
    late = service.cancel(m.ScriptCancel(id=3, job_id="job_keep"), sent)  # finished already
    assert isinstance(late, m.ErrorReply)
    assert late.code == "not_running"
    assert not [x for x in sent.messages if getattr(x, "id", None) in (1, 2, 3)]
    assert sum("refused: not running" in r.getMessage() for r in caplog.records) == 3
    assert all("not running on this till" in x.message for x in (unknown, other, late))
    await service.close()


async def test_a_second_cancel_while_the_first_works_gets_the_same_end(tmp_path: Path) -> None:
    folder = script_dir(tmp_path, "import time\nprint('ready', flush=True)\ntime.sleep(600)\n")
    service = _service(tmp_path, _runner(tmp_path), manifest(timeout=600), folder)
    sent = Sent()
    assert service.submit(_run("job_twice"), sent, lambda: 1.0) is None
    await sent.wait_for(m.ScriptStarted, 4)
    assert service.cancel(m.ScriptCancel(id=5, job_id="job_twice"), sent) is None
    assert service.cancel(m.ScriptCancel(id=6, job_id="job_twice"), sent) is None
    first = await sent.wait_for(m.ScriptFinished, 5)
    second = await sent.wait_for(m.ScriptFinished, 6)
    ended = await sent.wait_for(m.ScriptFinished, 4)
    assert first.status == second.status == ended.status == "cancelled"
    assert first.detail == second.detail == ended.detail
    assert "nothing was restored" in ended.detail  # it backed nothing up
    assert sum(isinstance(x, m.ScriptFinished) for x in sent.messages) == 3  # one run, one end
    await service.close()


async def test_a_cancel_while_the_merchant_is_asked_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = script_dir(tmp_path, f"open({str(marker)!r}, 'w').write('ran')\n")

    class NeverAnswers:
        async def ask(self, manifest: Manifest, params: object) -> ConsentDecision:
            await asyncio.Event().wait()
            raise AssertionError("not reached")

    runner = _runner(tmp_path, consent=NeverAnswers(), consent_timeout=600.0)
    service = _service(tmp_path, runner, manifest(consent=True), folder)
    sent = Sent()
    assert service.submit(_run("job_ask"), sent, lambda: 1.0) is None
    await sent.until(lambda x: isinstance(x, m.ScriptProgress) and x.step == "consent_asked")
    assert service.cancel(m.ScriptCancel(id=7, job_id="job_ask"), sent) is None
    answer = await sent.wait_for(m.ScriptFinished, 7, within=10)
    assert answer.status == "cancelled"
    assert "before the script started: nothing ran" in answer.detail
    assert not any(isinstance(x, m.ScriptStarted) for x in sent.messages)
    assert not marker.exists()
    await service.close()
