"""Whether a vetted script (or a restore) runs on this till now: ``running.json`` in the data
folder, written by the agent when a run starts and removed when it ends, however it ends.

The contract for installers (docs/agent.md#uninstall-while-a-script-runs): while the file
exists and the agent process it names (``pid``) is alive, a run is under way. A file whose
process is gone is stale (the agent died) and means nothing. ``posassist-agent wait-idle`` reads
it; the Linux ``prerm`` and the Windows ``installer.py uninstall`` call that before they stop
the agent, which cancels a run still going cleanly (process tree killed, backup restored,
recorded ``cancelled``).
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from posassist.client.files import write_private

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["RUNNING_FILE", "clear_running", "read_running", "wait_idle", "write_running"]

RUNNING_FILE = "running.json"
#: How often ``wait_idle`` looks at the file (the agent sets no event another process can see).
POLL_INTERVAL = 0.2


def write_running(data_dir: Path, job_id: str, what: str, started_at: float) -> None:
    """Note that ``what`` (a script id and version, or ``restore``) runs as ``job_id``."""
    state = {"format": 1, "job_id": job_id, "what": what, "pid": os.getpid()}
    state["started_at"] = started_at
    write_private(data_dir / RUNNING_FILE, json.dumps(state))


def clear_running(data_dir: Path) -> None:
    try:
        (data_dir / RUNNING_FILE).unlink()
    except FileNotFoundError:
        pass


def read_running(data_dir: Path) -> Optional[Dict[str, Any]]:
    """The run under way, or None: no file, a damaged one, or one whose agent is gone."""
    try:
        state = json.loads((data_dir / RUNNING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    pid = state.get("pid")
    if type(pid) is not int or not _alive(pid):
        return None
    return state


def _alive(pid: int) -> bool:
    # never os.kill(pid, 0): on Windows that terminates the process
    import psutil  # type: ignore[import-untyped]

    try:
        return bool(psutil.pid_exists(pid)) and psutil.Process(pid).status() != "zombie"
    except psutil.Error:
        return False


def wait_idle(data_dir: Path, timeout: float) -> Tuple[str, Optional[Dict[str, Any]], float]:
    """Wait until no run is under way, at most ``timeout`` seconds.

    Returns ``(outcome, the run seen first or None, seconds waited)``; ``outcome`` is ``idle``
    (nothing ran), ``finished`` (it ended within the bound) or ``timed_out`` (it still runs).
    """
    started = time.monotonic()
    deadline = started + timeout
    first = read_running(data_dir)
    if first is None:
        return "idle", None, 0.0
    while True:
        now = time.monotonic()
        if read_running(data_dir) is None:
            return "finished", first, now - started
        if now >= deadline:
            return "timed_out", first, now - started
        time.sleep(min(POLL_INTERVAL, deadline - now))
