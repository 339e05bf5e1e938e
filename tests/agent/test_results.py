"""The agent keeps the last results of runs the relay named, so a relay that lost track of one can
ask after it (job.query, docs/protocol.md#requests); the file survives an agent restart."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from posassist.agent.scripts.results import INTERRUPTED, ResultStore
from posassist.agent.scripts.service import ScriptService
from posassist.protocol import messages as m

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
    assert answers[1]["status"] == "unknown"  # the oldest was forgotten
    assert len(json.loads(path.read_text())) == 3
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
    assert store.lookup(["job-1"])[0]["status"] == "unknown"
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
        ("job_zzz", "unknown"),
    ]
    # a request from an older relay has no job id: per-connection name, nothing recorded
    sent.clear()
    await service.handle(
        m.ScriptRunRequest(id=5, device_id="d", script="s", version="1"), send, lambda: 51.0
    )
    assert sent[0].job_id == "run-5"  # type: ignore[attr-defined]
    assert service.answer(m.JobQuery(id=3, job_ids=("run-5",))).results[0]["status"] == "unknown"


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
    manifest = SimpleNamespace(risk="low", approvals_needed=1)
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
