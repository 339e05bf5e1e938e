"""The till's own audit log (agent/journal.py): appended, private, bounded, read back."""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING

from posassist.agent import journal

if TYPE_CHECKING:
    from pathlib import Path


def test_records_are_appended_as_json_lines_in_a_private_file(tmp_path: Path) -> None:
    first = journal.record(tmp_path, "provider.switch", "refused", {"why": "商户说不"}, now=1.5)
    journal.record(tmp_path, "agent.wait_idle", "idle", now=2.5)
    path = tmp_path / "audit.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == first
    assert first["detail"] == {"why": "商户说不"}
    assert first["actor"]
    assert [(e["action"], e["outcome"], e["at"]) for e in journal.read(tmp_path)] == [
        ("provider.switch", "refused", 1.5),
        ("agent.wait_idle", "idle", 2.5),
    ]


def test_a_full_log_moves_aside_and_a_damaged_line_is_skipped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(journal, "MAX_BYTES", 400)
    for n in range(6):
        journal.record(tmp_path, "step", "ok", {"n": n, "pad": "x" * 60})
    assert (tmp_path / "audit.log.1").exists()
    assert (tmp_path / "audit.log").stat().st_size <= 400
    with (tmp_path / "audit.log").open("a", encoding="utf-8") as log:
        log.write("not json\n[1]\n")
    kept = [e["detail"]["n"] for e in journal.read(tmp_path)]
    assert kept == sorted(kept)
    assert kept[-1] == 5
    assert len(kept) < 6  # the oldest went with the rotation before last
    assert journal.read(tmp_path / "nowhere") == []
