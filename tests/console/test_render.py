"""Reports render as readable text: sections, nesting, long lists cut, times as local time."""

from __future__ import annotations

from posassist.console.render import facts_summary, render_facts, render_report
from posassist.protocol import DiagnosticsReport


def test_report_renders_sections_in_words_and_the_stores_times() -> None:
    """The console renders a report through the agent's own renderer (readme-walk 14: it
    dumped raw data with run-together lists, True/None and raw numbers, in its own zone)."""
    from zoneinfo import ZoneInfo

    at = 1_795_600_000.0
    report = DiagnosticsReport(
        id=1,
        device_id="dev_1",
        collected_at=at,
        sections={
            "pos": {"ok": False, "error": {"type": "CollectorTimeout", "message": "no result"}},
            "gadget": {
                "ok": True,
                "data": {
                    "checked_at": at - 180,
                    "on": True,
                    "missing": None,
                    "items": [{"a": 1, "b": 2}, {"a": 3, "b": 4}],
                    "mounts": list(range(25)),
                },
            },
        },
    )
    text = render_report(report, ZoneInfo("Asia/Shanghai"))
    assert text.splitlines()[0] == "diagnostics of dev_1 / 设备诊断"
    assert "== 收银软件 / POS application  [UNREADABLE 无法读取" in text
    assert "读取失败 / could not read: no result" in text
    assert "checked_at: 2026-11-25 17:43:40 CST (3 min ago)" in text  # the store's zone
    assert "on: yes 是" in text
    assert "missing: —" in text
    assert "True" not in text
    assert "None" not in text  # not even a missing elapsed_ms
    assert (
        "  items:\n    - a: 1\n      b: 2\n    - a: 3" in text
    )  # each list item marked where it starts
    assert "… 5 more" in text


def test_raw_readings_show_in_human_units() -> None:
    at = 1_795_600_000.0
    data = {
        "os": {"system": "Windows", "release": "7", "machine": "x86", "bits": 32},
        "memory": {"total": 2147483648, "available": 134217728},
        "uptime_s": 36000.0,
        "boot_time": at - 36000,
        "processes": {"count": 80, "top_by_memory": [{"name": "pos.exe", "rss": 1073741824}]},
    }
    report = DiagnosticsReport(
        id=1, device_id="d", collected_at=at, sections={"system": {"ok": True, "data": data}}
    )
    text = render_report(report)
    assert "memory 内存: 128 MB free of 2.0 GB" in text
    assert "uptime 运行时间: 10.0 h" in text
    assert "(10 h ago)" in text  # boot_time as a time and its age
    assert "pos.exe(1.0 GB)" in text
    assert "1795564000" not in text  # no raw epochs
    assert "2147483648" not in text
    gadget = {"free_mb": 78189, "rss_bytes": 104857600, "since": at - 600, "wait_s": 7200}
    other = DiagnosticsReport(
        id=1, device_id="d", collected_at=at, sections={"x": {"ok": True, "data": gadget}}
    )
    text = render_report(other)
    assert "free_mb: 76.4 GB" in text
    assert "rss_bytes: 100 MB" in text
    assert "(10 min ago)" in text
    assert "wait_s: 7200 s (2 h)" in text


def test_report_shows_the_agents_findings_first_and_escapes_them() -> None:
    from posassist.agent.findings import annotate

    at = 1_795_600_000.0
    sections = {
        "printers": {
            "ok": True,
            "data": {
                "checked_at": at,
                "printers": [
                    {
                        "name": "receipt\x1b]0;pwned\x07",
                        "target": "tcp://127.0.0.1:9100",
                        "outcome": "ok",
                        "status": {"paper_out": True, "online": False},
                        "problems": ["paper_out"],
                    }
                ],
            },
        },
        "network": {"ok": True, "data": {"relay": None, "interfaces": [], "clock": None}},
        "print_queue": {"ok": False, "error": {"type": "CollectorTimeout", "message": "no result"}},
    }
    annotate(sections, None, at)
    report = DiagnosticsReport(id=1, device_id="dev_1", collected_at=at, sections=sections)
    text = render_report(report)
    findings_at = text.index("== 诊断结论 / Findings")
    assert findings_at < text.index("== 小票打印机 / Receipt printers")
    assert "[FAULT 故障] 打印机缺纸 / Printer out of paper [receipt]  (printer.paper_out)" in text
    assert "pwned" not in text  # the terminal-title escape is dropped whole
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "== 小票打印机 / Receipt printers  [FAULT 故障]" in text
    assert "Receipt printers  [OK" not in text  # a probe that ran is not ok: it found a fault
    assert "== 打印队列 / Print queue  [UNREADABLE 无法读取]" in text
    assert "读取失败 / could not read: no result" in text
    assert "{'type'" not in text  # no dict reprs


FACTS = {
    "hostname": "TILL-01",
    "os": "Windows",
    "os_release": "7",
    "os_version": "6.1.7601",
    "machine": "x86",
    "python": "3.8.10",
    "agent_version": "0.1.0",
    "pos_profile": "windows-sqlexpress",
    "pos_name": "SQL Express POS",
    "printers": [
        {"name": "收银小票", "target": "COM3", "model": "Epson TM-T20III"},
        {"name": "kitchen", "target": "tcp://10.0.0.9:9100", "model": None},
    ],
    "printers_omitted": 1,
    "serial_ports": [{"device": "COM3", "usb_id": "04b8:0e28", "product": None}],
    "uptime_days": 3,  # a fact this console has no label for
}


def test_facts_summary_is_one_short_line() -> None:
    assert facts_summary(FACTS) == "TILL-01 · Windows 7 · agent 0.1.0 · 3 printers"
    assert facts_summary({"hostname": "till", "printers": [{"name": "p"}]}) == "till · 1 printer"
    assert facts_summary({}) == "-"


def test_facts_render_with_english_and_chinese_labels() -> None:
    assert render_facts(FACTS) == [
        "  hostname / 主机名: TILL-01",
        "  OS / 操作系统: Windows 7 (x86)",
        "  Python: 3.8.10",
        "  agent / 代理程序: 0.1.0",
        "  POS profile / 收银软件: SQL Express POS (windows-sqlexpress)",
        "  printers / 打印机: 收银小票 (COM3, Epson TM-T20III); kitchen (tcp://10.0.0.9:9100); "
        "+1 more / 另有 1 个",
        "  serial ports / 串口: COM3 (04b8:0e28)",
        "  uptime_days: 3",
    ]
    assert render_facts({}) == ["  (no facts reported yet / 设备尚未上报信息)"]


def test_facts_from_a_device_cannot_drive_the_terminal() -> None:
    hostile = {
        "hostname": "TILL\x1b[2J\x1b]0;owned\x07",
        "printers": [{"name": "p\r\nFAKE LINE", "target": "\x9b31m"}],
        "evil\x1b[1m": "x",
    }
    text = "\n".join([facts_summary(hostile), *render_facts(hostile)])
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in text)
    assert len(render_facts(hostile)) == 3  # no line was smuggled in
