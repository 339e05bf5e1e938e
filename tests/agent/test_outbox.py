"""The durable outbox: committed before it returns, at-least-once, bounded, dropping the oldest
low-severity events first and counting them (issue 13, "an outbox at its size limit")."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from posassist.agent.errors import OutboxError
from posassist.agent.outbox import Outbox

ROOT = Path(__file__).resolve().parents[2]


def _event(severity: str, n: int = 0) -> dict[str, Any]:
    return {
        "check_name": "disk",
        "severity": severity,
        "state": "firing",
        "summary": f"磁盘空间不足 / disk low #{n}",
        "observed_at": 1700000000.0 + n,
        "details": {"n": n},
    }


def test_an_event_is_on_disk_when_put_returns_and_leaves_only_on_ack(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    assert box.put("disk:e1:1", _event("warning", 1), now=1.0)
    # another connection (another process, after a crash) sees it at once: it is committed
    other = sqlite3.connect(str(tmp_path / "o.sqlite3"))
    assert other.execute("SELECT alert_key FROM events").fetchall() == [("disk:e1:1",)]
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()
    [queued] = box.pending()
    assert (queued.alert_key, queued.event, queued.attempts) == (
        "disk:e1:1",
        _event("warning", 1),
        0,
    )
    box.attempted("disk:e1:1")
    assert box.pending()[0].attempts == 1
    assert box.ack("disk:e1:1")
    assert not box.ack("disk:e1:1")  # a second ack (a duplicate reply) changes nothing
    assert box.pending() == []
    assert len(box) == 0
    box.close()


def test_the_same_key_twice_is_queued_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    assert box.put("k", _event("critical", 1), now=1.0)
    assert not box.put("k", _event("critical", 2), now=2.0)
    assert [q.event["details"] for q in box.pending()] == [{"n": 1}]
    box.close()


def test_events_survive_reopening_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    for n in range(5):
        box.put(f"k{n}", _event("info", n), now=float(n))
    box.close()
    again = Outbox(tmp_path / "o.sqlite3")
    assert [q.alert_key for q in again.pending()] == [f"k{n}" for n in range(5)]
    assert [q.alert_key for q in again.pending(limit=2)] == ["k0", "k1"]
    again.close()


def test_at_its_size_limit_the_oldest_lowest_severity_goes_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_events=4)
    box.put("w1", _event("warning"), now=1.0)
    box.put("i1", _event("info"), now=2.0)
    box.put("c1", _event("critical"), now=3.0)
    box.put("i2", _event("info"), now=4.0)
    assert box.dropped() == 0
    box.put("c2", _event("critical"), now=5.0)  # full: the oldest info goes
    assert [q.alert_key for q in box.pending()] == ["w1", "c1", "i2", "c2"]
    box.put("w2", _event("warning"), now=6.0)  # the remaining info goes
    box.put("c3", _event("critical"), now=7.0)  # then the oldest warning
    assert [q.alert_key for q in box.pending()] == ["c1", "c2", "w2", "c3"]
    assert box.dropped() == 3
    # an info event when everything queued matters more: it is the one dropped, and counted
    assert not box.put("i3", _event("info"), now=8.0)
    assert [q.alert_key for q in box.pending()] == ["c1", "c2", "w2", "c3"]
    assert box.dropped() == 4
    assert len(box) == 4
    box.close()
    assert Outbox(tmp_path / "o.sqlite3", max_events=4).dropped() == 4  # kept on disk


def test_meta_values_are_kept(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    assert box.get_meta("policy") is None
    box.set_meta("policy", '{"version": 1}')
    box.set_meta("policy", '{"version": 2}')
    box.close()
    assert Outbox(tmp_path / "o.sqlite3").get_meta("policy") == '{"version": 2}'


def test_an_unusable_outbox_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        Outbox(path)
    assert path.read_bytes() == b"this is not a database" * 100  # nothing overwritten
    with pytest.raises(ValueError, match="max_events"):
        Outbox(tmp_path / "other.sqlite3", max_events=0)


@pytest.mark.py38
def test_the_outbox_runs_on_python38(tmp_path: Path) -> None:
    if not (ROOT / ".venv38" / "bin" / "python").exists():
        pytest.fail(".venv38 is missing: `make venv` builds it (docs/windows7.md)")
    code = (
        "import sys; from pathlib import Path; from posassist.agent.outbox import Outbox\n"
        "box = Outbox(Path(sys.argv[1]), max_events=2)\n"
        "for n, sev in enumerate(['info', 'critical', 'warning']):\n"
        "    box.put('k%d' % n, {'severity': sev}, float(n))\n"
        "print([q.alert_key for q in box.pending()], box.dropped())\n"
    )
    done = subprocess.run(
        [str(ROOT / ".venv38" / "bin" / "python"), "-c", code, str(tmp_path / "o.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['k1', 'k2'] 1"
    assert sys.version_info >= (3, 11)  # and this process ran the same code on 3.11 above


def test_an_event_discarded_unsent_is_counted_as_dropped(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.put("bad", _event("critical"), now=1.0)
    assert box.discard("bad")
    assert not box.discard("bad")
    assert box.dropped() == 1
    assert len(box) == 0
    box.close()


def test_the_outbox_and_its_journal_are_private_files(tmp_path: Path) -> None:
    """README walk: outbox.sqlite3 was 0644 (in a 0700 folder) while every other file is 0600;
    one made 0644 by an older agent is made private when opened."""
    import stat

    path = tmp_path / "till" / "outbox.sqlite3"
    path.parent.mkdir(mode=0o700)
    path.touch(mode=0o644)
    box = Outbox(path)
    try:
        box.put("k1", {"check_name": "disk"}, 1.0)
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir() if p.is_file()
        }
    finally:
        box.close()
    assert modes == dict.fromkeys(
        ["outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm"], 0o600
    )
