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

__all__ = [
    "RUNNING_FILE",
    "check_running",
    "clear_running",
    "read_running",
    "wait_idle",
    "write_running",
]

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


#: The most of running.json read: the agent writes a few hundred bytes.
MAX_RUNNING_BYTES = 64 * 1024
#: The most of its ``what`` shown or journalled.
MAX_WHAT = 200
#: The largest pid any OS gives (psutil raises OverflowError past a C long).
MAX_PID = 2**31 - 1


def read_regular(path: Path, limit: int) -> str:
    """A small regular file's text: opened without blocking (a FIFO never hangs), refused
    (ValueError) if it is not a regular file or longer than ``limit`` bytes; OSError as usual."""
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(str(path), flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{path.name} is larger than {limit} bytes")
    return data.decode("utf-8")


def read_running(data_dir: Path) -> Optional[Dict[str, Any]]:
    """The run under way, or None: no file, an unreadable or damaged one (not a regular file,
    too large, not JSON, a pid out of range), or one whose agent is gone."""
    return check_running(data_dir)[0]


def check_running(data_dir: Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """``(the run under way or None, why the file is unreadable or None)``: an unreadable file
    counts as no run (its agent can't be told apart), and the reason is said."""
    try:
        state = json.loads(read_regular(data_dir / RUNNING_FILE, MAX_RUNNING_BYTES))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{RUNNING_FILE} unreadable: {type(exc).__name__}: {str(exc)[:200]}"
    if not isinstance(state, dict):
        return None, f"{RUNNING_FILE} unreadable: not a JSON object"
    pid = state.get("pid")
    if type(pid) is not int or not 0 < pid <= MAX_PID:
        return None, f"{RUNNING_FILE} unreadable: no valid pid"
    if not _alive(pid):
        return None, None
    for key, limit in (("what", MAX_WHAT), ("job_id", 100)):
        value = state.get(key)
        state[key] = str(value)[:limit] if value is not None else ""
    return state, None


def _alive(pid: int) -> bool:
    # never os.kill(pid, 0): on Windows that terminates the process
    import psutil  # type: ignore[import-untyped]

    try:
        return bool(psutil.pid_exists(pid)) and psutil.Process(pid).status() != "zombie"
    except (psutil.Error, OverflowError, ValueError):
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
