"""How `posassist run` says a run ended (readme-walk F10): no Python ``None`` for a run that was
refused before it ran, and the relay's detail made printable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from posassist.console.__main__ import finished_line
from posassist.protocol.messages import ScriptFinished

if TYPE_CHECKING:
    import pytest


def _finished(**fields: object) -> ScriptFinished:
    base: dict[str, object] = {"id": 1, "job_id": "job_1", "finished_at": 1.0}
    return ScriptFinished(**{**base, **fields})  # type: ignore[arg-type]


def test_a_refused_run_has_no_exit_status() -> None:
    line = finished_line(_finished(status="refused", detail="无法确认… / cannot tell"))
    assert line == "refused 无法确认… / cannot tell"
    assert "None" not in line


def test_a_run_that_ran_shows_its_exit_status_and_backup() -> None:
    assert finished_line(_finished(status="failed", exit_code=3)) == "failed (exit 3)"
    line = finished_line(_finished(status="succeeded", exit_code=0, backup_id="b-1", detail="ok"))
    assert line == "succeeded (exit 0, backup b-1) ok"


def test_the_detail_cannot_move_the_cursor_or_add_lines() -> None:
    line = finished_line(_finished(status="failed", exit_code=1, detail="x\x1b[2J\nfake line"))
    assert "\x1b" not in line
    assert "\n" not in line


def test_a_refusal_step_reads_as_words_not_a_dict() -> None:
    from posassist.console.__main__ import progress_line
    from posassist.protocol.messages import ScriptProgress

    detail = {"code": "sale_unknown", "zh": "无法确认是否有交易", "en": "cannot tell\x1b[2J"}
    line = progress_line(ScriptProgress(id=1, job_id="j", step="refused", at=1.0, detail=detail))
    assert line == "[refused] 无法确认是否有交易 / cannot tell (sale_unknown)"  # escape dropped
    other = ScriptProgress(id=1, job_id="j", step="verified", at=1.0, detail={"risk": "A"})
    assert progress_line(other) == "[verified] signatures verified / 签名已验证: risk A"


def test_a_scripts_result_line_reads_in_words_and_other_lines_pass_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from posassist.console.__main__ import OutputLines

    lines = OutputLines()
    result = (
        b'RESULT {"action": "status", "done": true, "printer": "10.0.0.9:9100", '
        b'"problems": ["paper_end", "cover_open"], "raw": {"1": "0x1a"}}\n'
    )
    lines.write("stdout", b'DLE EOT 4 -> 0x7e {"near_end": true}\nwarn')  # a line in two parts
    lines.write("stdout", b"ing: paper near end\n" + result[:30])
    lines.write("stderr", b"careful \x1b[31mred\x1b[0m")
    lines.write("stdout", result[30:] + b"RESULT {not json}\nno newline at the end")
    lines.flush()
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        'DLE EOT 4 -> 0x7e {"near_end": true}',
        "warning: paper near end",
        "result / 结果: printer 10.0.0.9:9100 · 缺纸 / paper out; 上盖打开 / cover open · "
        "action=status · done=True",
        "RESULT {not json}",  # not a result: shown as the script printed it
        "no newline at the end",
    ]
    assert "\x1b" not in err
    assert "careful" in err


def test_a_result_with_no_problem_says_so() -> None:
    from posassist.client.render import result_line

    assert result_line('RESULT {"problems": []}') == "result / 结果: no problem found / 未发现问题"
    assert result_line('RESULT ["a"]') is None
    assert result_line("RESULTS {}") is None
