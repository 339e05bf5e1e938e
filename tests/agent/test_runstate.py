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
    from collections.abc import Callable
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


def _wait_idle_cli(data: Path) -> subprocess.CompletedProcess[str]:
    """The real ``posassist-agent wait-idle --timeout 1``; the test's own bound is 30 s."""
    command = [sys.executable, "-m", "posassist.agent", "wait-idle", "--data", str(data)]
    return subprocess.run(
        [*command, "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_running_file_that_is_no_regular_small_file_is_unreadable_and_never_hangs(
    tmp_path: Path,
) -> None:
    import os

    cases: dict[str, Callable[[Path], object]] = {
        "fifo": lambda path: os.mkfifo(path),
        "zero": lambda path: path.symlink_to("/dev/zero"),
        "huge": lambda path: path.write_text(
            json.dumps({"pid": os.getpid(), "what": "A" * (2 << 20)})
        ),
        "huge-pid": lambda path: path.write_text(json.dumps({"pid": 10**23, "what": "x"})),
    }
    for name, make in cases.items():
        data = tmp_path / name
        data.mkdir()
        make(data / RUNNING_FILE)
        started = time.monotonic()
        done = _wait_idle_cli(data)
        assert done.returncode == 0, done.stdout + done.stderr
        assert time.monotonic() - started < 20, name
        assert "Traceback" not in done.stderr, name
        assert "running.json unreadable" in done.stdout, name
        assert "no script is running" in done.stdout, name
        log = (data / "audit.log").read_text(encoding="utf-8")
        assert len(log) < 2000, name  # one short line, never the file's contents
        assert read_running(data) is None


def test_a_long_what_is_cut_before_it_is_shown_or_journalled(tmp_path: Path) -> None:
    import os

    (tmp_path / RUNNING_FILE).write_text(
        json.dumps({"pid": os.getpid(), "what": "B" * 50000, "job_id": "j" * 5000})
    )
    state = read_running(tmp_path)
    assert state is not None
    assert len(state["what"]) == 200
    assert len(state["job_id"]) == 100
