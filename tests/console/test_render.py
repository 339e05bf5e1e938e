"""Reports render as readable text: sections, nesting, long lists cut, times as local time."""

from __future__ import annotations

from datetime import datetime

from console.render import render_report
from protocol import DiagnosticsReport


def test_report_renders_sections_and_local_times() -> None:
    at = 1_795_600_000.0
    report = DiagnosticsReport(
        id=1,
        device_id="dev_1",
        collected_at=at,
        sections={
            "printers": {"ok": True, "data": {"checked_at": at, "status": {"paper_out": True}}},
            "pos": {"ok": False, "error": {"type": "CollectorTimeout"}},
            "disks": {"ok": True, "data": {"mounts": list(range(25))}},
        },
    )
    text = render_report(report)
    assert text.splitlines()[0] == "diagnostics of dev_1 / 设备诊断"
    assert "[printers] ok" in text
    assert "[pos] FAILED" in text
    assert "paper_out: True" in text
    local = datetime.fromtimestamp(at).astimezone().isoformat(sep=" ", timespec="seconds")
    assert f"checked_at: {local}" in text
    assert "… 5 more" in text
