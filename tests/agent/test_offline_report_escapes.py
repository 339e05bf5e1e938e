"""attack 14 F3: ``posassist-agent diag --offline`` printed a POS log line, a profile's display
name and a printer's name with their terminal escapes (window title, clear screen, colours, BEL)
and bidi overrides intact; the text and the ``--json`` report now carry none of them raw."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

HOSTILE = "\x1b]0;PWNED\x07 \x1b[2J\x1b[31mRED\x1b[0m \u202eevil\u202c \x9b31m"


def test_device_and_log_text_reach_the_terminal_inert(tmp_path: Path) -> None:
    till = tmp_path / "till"
    logs = till / "pos" / "logs"
    logs.mkdir(parents=True)
    (logs / "pos.log").write_text(f"ERROR 1234567890 failed {HOSTILE} title\n", encoding="utf-8")
    profile = (
        f'name = "evilpos"\ndisplay_name = {json.dumps("Evil " + HOSTILE)}\n'
        f'[logs]\npaths = ["{logs}/pos.log"]\nerror_patterns = ["ERROR"]\n'
    )
    (till / "prof.toml").write_text(profile, encoding="utf-8")
    printer = {"name": "rcpt" + HOSTILE, "serial": "/dev/ttyNOPE99"}
    (till / "settings.json").write_text(
        json.dumps({"pos_profile": "prof.toml", "printers": [printer]})
    )
    argv = [sys.executable, "-m", "posassist.agent", "diag", "--offline", "--data", str(till)]
    text = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    assert "RED" in text  # the words arrive…
    assert "evil" in text
    assert "PWNED" not in text  # (a window-title sequence is dropped whole, its text with it)
    for raw in ("\x1b", "\x07", "\u202e", "\u202c", "\x9b"):  # …their controls do not
        assert raw not in text, repr(raw)
    out = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=120).stdout
    for raw in ("\x1b", "\x07", "\u202e", "\u202c", "\x9b"):
        assert raw not in out, repr(raw)
    report = json.dumps(json.loads(out), ensure_ascii=False)  # a JSON reader gets the text
    assert "\u202eevil" in report  # as the device gave it: escaped for the terminal only
