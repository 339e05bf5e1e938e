"""``running.json`` (agent/runstate.py): what an uninstaller waits on, with real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from posassist.agent.runstate import (
    RUNNING_FILE,
    clear_running,
    read_running,
    wait_idle,
    write_running,
)

if TYPE_CHECKING:
    from pathlib import Path


def _note(data: Path, pid: int) -> None:
    (data / RUNNING_FILE).write_text(json.dumps({"format": 1, "job_id": "j", "pid": pid}))


def test_a_run_is_under_way_while_the_file_names_a_live_agent(tmp_path: Path) -> None:
    assert read_running(tmp_path) is None
    write_running(tmp_path, "job-1", "printer-status 1.0.0", 5.0)
    state = read_running(tmp_path)
    assert state is not None
    assert (state["job_id"], state["what"], state["started_at"]) == (
        "job-1",
        "printer-status 1.0.0",
        5.0,
    )
    clear_running(tmp_path)
    clear_running(tmp_path)  # twice: no error
    assert read_running(tmp_path) is None


def test_a_stale_or_damaged_file_means_nothing(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    _note(tmp_path, gone.pid)  # its agent died: stale
    assert read_running(tmp_path) is None
    for text in ("not json", "[1]", '{"pid": "7"}', '{"pid": true}'):
        (tmp_path / RUNNING_FILE).write_text(text)
        assert read_running(tmp_path) is None
    assert wait_idle(tmp_path, 5) == ("idle", None, 0.0)


def test_wait_idle_gives_up_at_its_bound_and_sees_a_dead_agents_file_as_idle(
    tmp_path: Path,
) -> None:
    # (a run that ends within the bound: tests/e2e/test_uninstall_while_running.py)
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _note(tmp_path, busy.pid)
        started = time.monotonic()
        outcome, run, waited = wait_idle(tmp_path, 0.5)
        assert (outcome, run and run["job_id"]) == ("timed_out", "j")
        assert 0.5 <= waited <= time.monotonic() - started
    finally:
        busy.kill()
        busy.wait(timeout=30)
    assert wait_idle(tmp_path, 30) == ("idle", None, 0.0)  # its agent is gone: stale
