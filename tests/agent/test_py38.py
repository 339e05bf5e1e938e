"""agent/ and protocol/ stay importable on Python 3.8, the newest Python a Windows 7 till runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERMIN = str(Path(sys.executable).with_name("vermin"))
SOURCES = sorted((ROOT / "agent").rglob("*.py")) + sorted((ROOT / "protocol").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_parses_with_python38_grammar(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 8))


def test_vermin_finds_nothing_newer_than_python38() -> None:
    result = subprocess.run(
        [
            VERMIN,
            "-t=3.8-",
            "--no-tips",
            "--violations",
            "agent",
            "protocol",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_would_catch_a_python39_feature(tmp_path: Path) -> None:
    (tmp_path / "new.py").write_text("x = 'ab'.removeprefix('a')\n")
    result = subprocess.run(
        [VERMIN, "-t=3.8-", "--no-tips", "--violations", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
