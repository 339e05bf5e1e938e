"""Cancelling a running script end to end, with real processes (docs/protocol.md#cancel): a
signed long-running script runs on a real ``posassist-agent run`` through a real
``posassist-relay serve``; ``posassist cancel JOB`` stops it, the till's process tree is gone, the
job shows ``cancelled`` and the audit chain holds the cancel."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING

from posassist.console.scripts_repo import init_repository
from tests.agent.test_runner import gone
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.e2e.cli import (
    ROOT,
    Technician,
    communicate,
    invite,
    lines,
    ok,
    provision,
    py,
    start_agent,
    start_relay,
    stop,
)

if TYPE_CHECKING:
    from pathlib import Path


RUN_ARGS = ("--version", "1.0.0", "--unattended")


def _job_and_audit(relay_dir: Path, job_id: str) -> tuple[str, list[tuple[str, str]]]:
    import asyncio

    from posassist.relay.storage import open_storage

    async def read() -> tuple[str, list[tuple[str, str]]]:
        storage = open_storage(f"sqlite:///{relay_dir / 'relay.db'}")
        try:
            job = await storage.get_job(job_id)
            records = [
                (r.action, str(r.outcome))
                async for r in storage.records()
                if r.action.startswith("job.cancel")
            ]
            return job.status.value, records
        finally:
            await storage.close()

    return asyncio.run(read())


def test_posassist_cancel_stops_a_real_tills_script_and_its_process_tree(tmp_path: Path) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    pids = tmp_path / "pids"
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("long-wait")
    script.update({"risk": "A", "unattended": True, "consent": False, "timeout": 600})
    body = f"echo $$ > {pids}\nsleep 600 &\necho $! >> {pids}\necho ready\nwait\necho not-reached\n"
    add(repo, tmp_path, script, body=body.encode())
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    relay, url = start_relay(relay_dir)
    agent = run = None
    till = tmp_path / "till"
    try:
        ok(
            py(
                "agent",
                "enroll",
                invite(relay_dir, store, url),
                "--data",
                str(till),
                "--root-hash",
                repo.root_hash(),
            )
        )
        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech").login(url)
        run = subprocess.Popen(
            [sys.executable, "-m", "posassist.console", "run", device, "long-wait", *RUN_ARGS],
            cwd=ROOT,
            env=dict(tech.env, PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        job_id = lines(run).wait_for(r"started \(job (job_[0-9a-f]+)\)", 60).group(1)
        lines(run).wait_for(r"^ready$", 30)
        shell, sleeper = (int(p) for p in pids.read_text().split())
        assert not gone(shell)
        assert not gone(sleeper)

        cancelled = tech("cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert f"job {job_id} cancelled on device {device}" in cancelled.stdout
        assert "process tree was stopped" in cancelled.stdout
        # the till's processes are gone: the script's shell and the process it started
        deadline = time.monotonic() + 10
        while not (gone(shell) and gone(sleeper)):
            assert time.monotonic() < deadline, "the till's script processes are still there"
            time.sleep(0.05)
        # the technician who ran it hears how it ended; the script never reached its end
        out, err = communicate(run, 30)
        assert run.returncode == 1, err
        assert "cancelled" in out
        assert "not-reached" not in out
        # cancel twice, and a made-up job: refused in words, nothing sent
        again = tech("cancel", job_id)
        assert again.returncode != 0
        assert "job already finished" in again.stderr
        assert "任务已结束" in again.stderr
        unknown = tech("cancel", "job_00000000000000000000")
        assert unknown.returncode != 0
        assert "没有此任务" in unknown.stderr
        assert agent.poll() is None  # the agent runs on
    finally:
        for proc in (run, agent):
            if proc is not None:
                stop(proc)
        stop(relay)
    status, records = _job_and_audit(relay_dir, job_id)
    assert status == "cancelled"
    assert records == [
        ("job.cancel", "ok"),
        ("job.cancel.finished", "ok"),
        ("job.cancel", "refused"),
        ("job.cancel", "refused"),
    ]
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(relay_dir)))
    # the till keeps the run's end for the relay to ask after
    assert '"cancelled"' in (till / "scripts" / "results.json").read_text()
