"""The till's offline report speaks Chinese first and in words (readme-walk F8): a section that
could not be read says why without a Python class name; the technician's line is zh / en."""

from __future__ import annotations

from typing import Any

from posassist.agent.findings import annotate
from posassist.client.render import render_report

NOW = 1_796_000_000.0


def test_a_failed_section_and_the_technician_line_read_chinese_first_without_class_names() -> None:
    why = "未安装 CUPS (找不到 lpstat) / CUPS is not installed (no lpstat)"
    report: dict[str, Any] = {
        "sections": {
            "print_queue": {"ok": False, "error": {"type": "CollectorError", "message": why}},
        }
    }
    annotate(report, None, NOW)
    text = render_report(report, NOW)
    assert "CollectorError" not in text
    assert f"读取失败 / could not read: {why}" in text
    (tech,) = [line for line in text.splitlines() if "技术员 / technician:" in line]
    assert tech.strip() == (
        "技术员 / technician: 查看错误原因, 必要时重新诊断 / Read the error; re-run diagnostics"
    )


def test_a_section_error_without_words_still_names_what_failed() -> None:
    report: dict[str, Any] = {
        "sections": {"scale": {"ok": False, "error": {"type": "CollectorTimeout"}}}
    }
    annotate(report, None, NOW)
    (finding,) = report["sections"]["scale"]["findings"]
    assert "CollectorTimeout" in finding["detail"]["en"]
