"""The agent keeps the last results of runs the relay named, so a relay that lost track of one can
ask after it (job.query, docs/protocol.md#requests); the file survives an agent restart."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from posassist.agent.scripts.results import FORGOTTEN, INTERRUPTED, ResultStore
from posassist.agent.scripts.service import ScriptService
from posassist.protocol import messages as m
from posassist.protocol.errors import LocalProtocolError

if TYPE_CHECKING:
    from pathlib import Path


def test_results_are_bounded_persisted_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "scripts" / "results.json"
    store = ResultStore(path, max_results=3)
    for i in range(5):
        store.started(f"job-{i}")
        store.finished(f"job-{i}", "succeeded", 100.0 + i, exit_code=0, backup_id=f"bk-{i}")
    again = ResultStore(path, max_results=3)
    answers = again.lookup(["job-4", "job-0"])
    assert answers[0] == {
        "job_id": "job-4",
        "status": "succeeded",
        "exit_code": 0,
        "finished_at": 104.0,
        "backup_id": "bk-4",
        "detail": "",
    }
    # the oldest result was forgotten, but the till still knows it received the job
    assert (answers[1]["status"], answers[1]["detail"]) == ("unknown", FORGOTTEN)
    written = json.loads(path.read_text())
    assert written["format"] == 2
    assert len(written["results"]) == 3
    assert written["received"] == [f"job-{i}" for i in range(5)]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".results-")]
    # every answer is a valid job.results entry
    m.JobResults(id=1, results=tuple(answers))


def test_a_run_the_agent_died_in_reads_back_as_failed_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    ResultStore(path).started("job-1")
    (answer,) = ResultStore(path).lookup(["job-1"])
    assert (answer["status"], answer["detail"]) == ("failed", INTERRUPTED)


@pytest.mark.parametrize("content", ["not json", '{"a": 1}', '[{"job_id": 3}, 7]'])
def test_a_damaged_results_file_starts_empty_and_is_replaced(tmp_path: Path, content: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    store = ResultStore(path)
    assert store.lookup(["job-1"])[0]["status"] == "never_received"
    store.finished("job-1", "failed", 1.0, exit_code=2, detail="x" * 2000)
    assert len(ResultStore(path).lookup(["job-1"])[0]["detail"]) == 1024
    with pytest.raises(ValueError, match="not a script status"):
        store.finished("job-2", "pending", 1.0)


def _service(tmp_path: Path, runner: object) -> ScriptService:
    return ScriptService(tmp_path, "ws://127.0.0.1:1", runner)  # type: ignore[arg-type]


async def test_a_run_is_reported_under_the_relays_job_id_and_answered_later(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path, runner=None)  # no trusted root: refused before anything runs
    sent: list[m.Message] = []

    async def send(msg: m.Message) -> None:
        sent.append(msg)

    request = m.ScriptRunRequest(id=4, device_id="d", script="s", version="1", job_id="job_abc")
    await service.handle(request, send, lambda: 50.0)
    (finished,) = sent
    assert isinstance(finished, m.ScriptFinished)
    assert (finished.job_id, finished.status) == ("job_abc", "refused")
    answer = service.answer(m.JobQuery(id=2, job_ids=("job_abc", "job_zzz")))
    assert answer.id == 2
    assert [(r["job_id"], r["status"]) for r in answer.results] == [
        ("job_abc", "refused"),
        ("job_zzz", "never_received"),
    ]
    # a relay older than v4 doesn't know never_received: it hears unknown
    old = service.answer(m.JobQuery(id=3, job_ids=("job_zzz",)), never_received=False)
    assert old.results[0]["status"] == "unknown"
    # a request from an older relay has no job id: per-connection name, nothing recorded
    sent.clear()
    await service.handle(
        m.ScriptRunRequest(id=5, device_id="d", script="s", version="1"), send, lambda: 51.0
    )
    assert sent[0].job_id == "run-5"  # type: ignore[attr-defined]
    assert (
        service.answer(m.JobQuery(id=3, job_ids=("run-5",))).results[0]["status"]
        == "never_received"
    )


async def test_a_run_cut_short_by_cancellation_is_recorded_cancelled(tmp_path: Path) -> None:
    running = asyncio.Event()

    class BlockingRunner:
        async def run(self, *args: object, **kwargs: object) -> object:
            running.set()
            await asyncio.Event().wait()  # until cancelled
            raise AssertionError("not reached")

    service = _service(tmp_path, BlockingRunner())
    service.root_file.parent.mkdir(parents=True)
    service.root_file.write_text("{}")
    manifest = SimpleNamespace(risk="low", approvals_needed=1, timeout=300.0)
    service._verify = lambda script, version: (manifest, tmp_path)  # type: ignore[method-assign,assignment,return-value]
    sent: list[m.Message] = []

    async def send(msg: m.Message) -> None:
        sent.append(msg)

    request = m.ScriptRunRequest(id=4, device_id="d", script="s", version="1", job_id="job_c")
    task = asyncio.ensure_future(service.handle(request, send, lambda: 60.0))
    async with asyncio.timeout(10):
        await running.wait()
    assert service.answer(m.JobQuery(id=1, job_ids=("job_c",))).results[0]["status"] == "running"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (result,) = ResultStore(service.results.path).lookup(["job_c"])
    assert result["status"] == "cancelled"


def test_the_receipts_log_is_bounded_and_proves_never_received(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    store = ResultStore(path, max_results=2, max_receipts=4)
    for i in range(6):
        store.received(f"job-{i}")
        store.started(f"job-{i}")
        store.finished(f"job-{i}", "succeeded", float(i))
    store.received("job-noted")  # noted in memory only: it never started, so never ran
    again = ResultStore(path, max_results=2, max_receipts=4)
    statuses = [r["status"] for r in again.lookup(["job-5", "job-3", "job-1", "job-noted"])]
    assert statuses == ["succeeded", "unknown", "never_received", "never_received"]
    assert len(json.loads(path.read_text())["received"]) == 4


def test_a_format_1_results_file_is_read_and_rewritten_as_format_2(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    entry = {
        "job_id": "job-old",
        "status": "failed",
        "exit_code": 1,
        "finished_at": 5.0,
        "backup_id": None,
        "detail": "d",
    }
    path.write_text(json.dumps([entry]))
    store = ResultStore(path)
    assert store.lookup(["job-old"]) == [entry]
    store.started("job-new")
    written = json.loads(path.read_text())
    assert written["format"] == 2
    assert written["received"] == ["job-old", "job-new"]
    assert [r["job_id"] for r in written["results"]] == ["job-old", "job-new"]


def test_a_results_file_of_an_unknown_format_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"format": 99, "results": [], "received": ["job-1"]}))
    assert ResultStore(path).lookup(["job-1"])[0]["status"] == "never_received"


async def test_a_busy_refusal_is_recorded_so_the_relay_hears_it(tmp_path: Path) -> None:
    service = _service(tmp_path, runner=None)
    release = asyncio.Event()

    async def send(msg: m.Message) -> None:
        await release.wait()

    first = m.ScriptRunRequest(id=1, device_id="d", script="s", version="1", job_id="job_1")
    second = m.ScriptRunRequest(id=2, device_id="d", script="s", version="1", job_id="job_2")
    assert service.submit(first, send, lambda: 1.0) is None
    refused = service.submit(second, send, lambda: 2.0)
    assert isinstance(refused, m.ErrorReply)
    assert (refused.id, refused.code) == (2, "busy")
    (result,) = service.answer(m.JobQuery(id=1, job_ids=("job_2",))).results
    assert (result["status"], result["detail"]) == ("refused", "busy: another script is running")
    release.set()
    await service.close()


async def test_a_submitted_run_outlives_its_sender_and_only_close_cuts_it_short(
    tmp_path: Path,
) -> None:
    running = asyncio.Event()

    class BlockingRunner:
        async def run(self, *args: object, **kwargs: object) -> object:
            running.set()
            await asyncio.Event().wait()  # until cancelled
            raise AssertionError("not reached")

    service = _service(tmp_path, BlockingRunner())
    service.root_file.parent.mkdir(parents=True)
    service.root_file.write_text("{}")
    manifest = SimpleNamespace(risk="low", approvals_needed=1, timeout=300.0)
    service._verify = lambda script, version: (manifest, tmp_path)  # type: ignore[method-assign,assignment,return-value]
    sent: list[m.Message] = []

    async def send(msg: m.Message) -> None:
        if sent:  # the connection is gone after the first step: sending fails
            raise LocalProtocolError("session closed")
        sent.append(msg)

    request = m.ScriptRunRequest(id=4, device_id="d", script="s", version="1", job_id="job_s")
    assert service.submit(request, send, lambda: 60.0) is None
    async with asyncio.timeout(10):
        await running.wait()
    (verified,) = sent
    assert verified.detail["run_timeout"] == 300.0  # type: ignore[attr-defined]
    # its connection failed under it, yet the run goes on
    assert service.busy
    assert service.answer(m.JobQuery(id=1, job_ids=("job_s",))).results[0]["status"] == "running"
    await service.close()  # the agent stops
    assert not service._tasks  # nothing left running
    (result,) = ResultStore(service.results.path).lookup(["job_s"])
    assert (result["status"], result["detail"]) == ("cancelled", "stopped when the agent stopped")
