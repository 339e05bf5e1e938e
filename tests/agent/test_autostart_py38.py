"""``posassist-agent help --autostart`` under the tills' Python 3.8 (Path.write_text had no
``newline=`` before 3.10: the entry could not be written on a Windows 7 till)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY38 = ROOT / ".venv38" / "bin" / "python"


@pytest.mark.py38
def test_help_autostart_writes_its_entry_on_python38(tmp_path: Path) -> None:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make venv` builds it (docs/windows7.md)")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = subprocess.run(
        [str(PY38), "-m", "posassist.agent", "help", "--data", str(tmp_path / "d"), "--autostart"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    entry = tmp_path / "config" / "autostart" / "posassist-help.desktop"
    assert "Exec=" in entry.read_text(encoding="utf-8")
