"""``posassist-agent`` with bad arguments: exit 2 and one line (BadArgument), never a usage dump
or a traceback, and nothing started (no identity is read, no relay is tried)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from posassist.agent.__main__ import main

if TYPE_CHECKING:
    from pathlib import Path

BAD = {
    "backoff not a number": (["run", "--max-backoff", "soon"], "not a number of seconds"),
    "backoff NaN": (["run", "--max-backoff", "nan"], "between 1 and 3600"),
    "backoff zero": (["run", "--max-backoff", "0"], "between 1 and 3600"),
    "backoff infinite": (["run", "--max-backoff", "inf"], "between 1 and 3600"),
    "diag timeout negative": (["diag", "--offline", "--timeout", "-1"], "between 0.1 and 600"),
    "diag without --offline": (["diag"], "only --offline is available here"),
    "unknown command": (["bogus"], "invalid choice"),
    "missing token": (["enroll"], "required"),
}


@pytest.mark.parametrize(("argv", "why"), BAD.values(), ids=BAD.keys())
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data", str(tmp_path / "till")] if argv[0] in ("run", "diag") else []
    assert main([*argv, *data]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: bad argument: ")
    assert why in err
    assert err.rstrip().endswith("/ 参数有误")
    assert not (tmp_path / "till").exists()  # nothing was created or read


def test_good_arguments_get_as_far_as_the_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the control: the same command with a good back-off looks for the till's identity
    assert main(["run", "--data", str(tmp_path / "till"), "--max-backoff", "30", "--once"]) == 2
    assert "agent configuration error" in capsys.readouterr().err


def test_diag_without_offline_says_so_in_chinese_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """readme-walk F22: the merchant reads it; Chinese first, then English."""
    assert main(["diag", "--data", str(tmp_path / "till")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: bad argument: 本机只能离线诊断, 请用 posassist-agent diag --offline"
    )
    assert not (tmp_path / "till").exists()


def test_an_unknown_refusal_code_is_quoted_printably_and_a_known_one_has_words() -> None:
    from posassist.client.errors import REFUSALS, refusal_words

    zh, en = refusal_words("\x1b[31mEvil\nline")
    assert "\x1b" not in zh + en
    assert "\n" not in zh + en
    assert en.startswith("the relay refused: ")
    for code, (zh, en) in REFUSALS.items():
        assert zh, code
        assert code not in zh, code  # Chinese words, never the bare code
        assert "_" not in en, code  # nor a code or class name in the English
        assert not any(c.isupper() for c in en), code


def test_a_relative_data_folder_reads_its_profile_as_an_absolute_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """readme-walk 14: ``diag --offline --data demo-data/till`` said "POS profile invalid (path
    must be absolute)" for a profile whose ``${DATA}`` paths are fine."""
    import json

    till = tmp_path / "shop" / "till"
    till.mkdir(parents=True)
    (till / "settings.json").write_text(json.dumps({"pos_profile": "demo"}))
    monkeypatch.chdir(tmp_path)
    main(["diag", "--offline", "--json", "--data", "shop/till"])
    report = json.loads(capsys.readouterr().out)
    assert "profile_error" not in report
    codes = [f["code"] for s in report["sections"].values() for f in s["findings"]]
    codes += [f["code"] for f in report["findings"]]
    assert "pos.profile_invalid" not in codes, codes


def test_the_offline_report_on_a_gbk_console_replaces_what_it_cannot_show(tmp_path: Path) -> None:
    """attack 14 F10: a report redirected on a Chinese Windows till (cp936) crashed with
    UnicodeEncodeError on the first U+FFFD, emoji or U+202E from a log, and printed nothing."""
    import os
    import subprocess
    import sys

    till = tmp_path / "till"
    (till / "pos" / "logs").mkdir(parents=True)
    (till / "pos" / "logs" / "pos.log").write_bytes(
        b"ERROR bad \xff\xfe byte \xf0\x9f\x98\x80 \xe2\x80\xae\n"
    )
    (till / "settings.json").write_text('{"pos_profile": "demo"}')
    env = {**os.environ, "PYTHONIOENCODING": "gbk"}
    for extra in ([], ["--json"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "posassist.agent",
                "diag",
                "--offline",
                "--data",
                str(till),
                *extra,
            ],
            capture_output=True,
            env=env,
            timeout=120,
        )
        assert b"Traceback" not in result.stderr, result.stderr[-2000:]
        assert b"UnicodeEncodeError" not in result.stderr
        assert result.stdout.strip(), "no report printed"
