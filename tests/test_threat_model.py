"""docs/scripts.md#threat-model names, for every attack, the tests that prove it fails: each of
them must exist (a renamed or deleted test would leave the table claiming what nothing checks)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _table() -> list[str]:
    text = (ROOT / "docs" / "scripts.md").read_text(encoding="utf-8")
    section = text[text.index("### threat model") :]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("| ") and not line.startswith("| Attacker"):
            rows.append(line)
    return rows


def _references(row: str) -> list[tuple[str, str]]:
    """(file, test name or "") for each test the row's last column names; ``::name`` alone
    means the file named before it."""
    found, path = [], ""
    for ref in re.findall(r"`([^`]+)`", row.rsplit("|", 2)[-2]):
        if ref.startswith("tests/"):
            path, _, name = ref.partition("::")
        elif ref.startswith("::"):
            name = ref[2:]
        else:
            continue
        found.append((path, name))
    return found


def test_the_threat_model_table_names_tests_that_exist() -> None:
    rows = _table()
    assert len(rows) >= 20, "the table lost its rows"
    missing = []
    checked = 0
    for row in rows:
        for path, name in _references(row):
            source = ROOT / path
            if not source.is_file():
                missing.append(path)
                continue
            if name:
                pattern = re.escape(name).replace(r"\*", r"\w*")
                if not re.search(rf"^(?:async )?def {pattern}\(", source.read_text(), re.M):
                    missing.append(f"{path}::{name}")
            checked += 1
    assert not missing, missing
    assert checked >= 40
