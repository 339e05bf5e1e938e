"""One relay per data directory (readme-walk F27): a second ``serve`` on a data directory a relay is
serving is refused before it touches anything, and a lock left by a relay that died doesn't block.

Real processes: the first relay serves, the second is a real ``posassist-relay serve``.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from tests.e2e.cli import provision, py, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


def _state(data: Path) -> tuple[object, ...]:
    """Everything a start-up would change: audit records, jobs, checkpoints, relay.url."""
    with sqlite3.connect(data / "relay.db") as db:
        audit = db.execute("SELECT seq, action, outcome FROM audit ORDER BY seq").fetchall()
        jobs = db.execute("SELECT * FROM jobs ORDER BY 1").fetchall()
    checkpoints = data / "audit-checkpoints.jsonl"
    return (
        audit,
        jobs,
        checkpoints.read_bytes() if checkpoints.exists() else b"",
        (data / "relay.url").read_text(),
    )


def test_a_second_serve_on_the_same_data_dir_is_refused_before_it_touches_anything(
    tmp_path: Path,
) -> None:
    data = tmp_path / "relay"
    provision(data)
    first, url = start_relay(data)
    try:
        before = _state(data)
        assert before[0], "the first relay audits its start"
        # on a free port (it would start) and on the first one's port (it would fail to bind)
        port = url.rsplit(":", 1)[1]
        for extra in (["--port", "0"], ["--port", port]):
            second = py("relay", "serve", "--data", str(data), "--host", "127.0.0.1", *extra)
            assert second.returncode == 2, second.stdout + second.stderr
            assert second.stdout == ""
            (line,) = second.stderr.splitlines()
            assert line.startswith("error: another relay is serving this data directory: ")
            assert str(first.pid) in line
            assert "另一个服务器进程正在使用此数据目录" in line
            assert "Traceback" not in second.stderr
            assert _state(data) == before
        assert first.poll() is None, "the first relay still serves"
    finally:
        stop(first)  # SIGKILL: the lock file stays behind, the kernel's lock does not

    assert (data / "serve.lock").exists()
    again, _url = start_relay(data)
    try:
        assert again.poll() is None
    finally:
        stop(again)
