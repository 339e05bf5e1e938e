"""The help window's view-model (shared by the Tk window and --text): bad input is refused with
clear words and keeps what was typed; tickets, countdowns in the store's zone, consent, rating."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from posassist.agent.helpwindow.summary import summarise
from posassist.agent.helpwindow.view import HelpView, local_time
from posassist.client.render import consent_line
from posassist.protocol import (
    ConsentAnswer,
    ConsentRequest,
    ErrorReply,
    HelpRequested,
    ScriptProgress,
    TicketList,
    TicketOpened,
    TicketRated,
    TicketUpdated,
)

DEVICE = "dev_0123456789abcdef"
# 2026-12-05 06:00:00 UTC = 14:00 in Asia/Shanghai
NOW = 1796450400.0


def welcomed(lang: str = "zh-CN") -> HelpView:
    view = HelpView(lang)
    view.receive(
        {
            "t": "link.welcome",
            "device_id": DEVICE,
            "timezone": "Asia/Shanghai",
            "user": "cashier",
            "relay_connected": True,
        },
        0.0,
    )
    return view


def opened(response_due: float | None = NOW + 750) -> TicketOpened:
    return TicketOpened(
        id=1,
        ticket_id="tkt_1",
        support_code="K7M-4QXP",
        status="new",
        created_at=NOW,
        response_due=response_due,
    )


@pytest.mark.parametrize(
    ("description", "zh_words", "en_words"),
    [
        ("", "请填写问题描述", "is empty"),
        ("   \n\t ", "请填写问题描述", "is empty"),
        ("打" * 100_000, "内容过长", "at most 2000"),
        ("打印机\x1b[31m坏了", "控制字符", "control characters"),
        ("打印机\u202e坏了", "控制字符", "bidi"),
        ("a\x00b", "控制字符", "control characters"),
    ],
)
def test_bad_descriptions_are_refused_in_both_languages_and_kept(
    description: str, zh_words: str, en_words: str
) -> None:
    for lang, words in (("zh-CN", zh_words), ("en", en_words)):
        view = welcomed(lang)
        assert view.submit(1, "printer", description, "13800000000") is None
        assert words in view.error
        if lang == "zh-CN":
            assert view.error.index(zh_words) < view.error.index("/")  # Chinese first
        # nothing lost: the form still holds exactly what was typed
        assert (view.category, view.description, view.contact) == (
            "printer",
            description,
            "13800000000",
        )
        assert view.screen == "ask"


def test_a_good_request_is_built_and_a_refused_category_or_phone_says_so() -> None:
    view = welcomed()
    assert view.submit(1, "", "小票打印不出来", "") is None
    assert view.error == "请先选择问题类别"
    assert view.submit(1, "printer", "小票打印不出来", "138-0000\x1b0000") is None
    assert "电话号码" in view.error
    msg = view.submit(2, "printer", "小票打印不出来\n红灯一直闪", " 138 0000 0000 ")
    assert msg is not None
    assert (msg.id, msg.device_id, msg.category, msg.contact, msg.language) == (
        2,
        DEVICE,
        "printer",
        "138 0000 0000",
        "zh-CN",
    )
    assert msg.diagnostics == {}  # the agent attaches its own snapshot, not the window


def test_sent_ticket_shows_code_state_and_countdown_in_the_store_zone() -> None:
    view = welcomed()
    view.submit(1, "printer", "小票打印不出来", "")
    view.receive(opened(), 0.0)
    assert view.screen == "ticket"
    assert view.description == ""  # sent: the form is empty for the next time
    rows = dict(view.ticket_lines(NOW + 30))
    assert rows["求助编号 (电话中请报此编号)"] == "K7M-4QXP"
    assert rows["进度"] == "已提交, 等待技术员接单"
    assert rows["技术员"] == "尚未接单"
    assert rows["承诺响应时间"] == "12-05 14:12 (还剩 12 分 00 秒)"
    assert view.countdown(NOW + 750, NOW + 800) == "12-05 14:12 (已超时)"
    en = welcomed("en")
    en.receive(opened(), 0.0)
    assert dict(en.ticket_lines(NOW))["Promised response by"] == "12-05 14:12 (12 min 30 s left)"


def test_store_zone_without_zoneinfo_falls_back_to_its_fixed_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert local_time(NOW, "Asia/Shanghai") == "12-05 14:00"
    monkeypatch.setitem(sys.modules, "zoneinfo", None)  # as on a Python 3.8 till: ImportError
    assert local_time(NOW, "Asia/Shanghai") == "12-05 14:00"
    assert local_time(NOW, "Asia/Tokyo") == "12-05 15:00"
    assert local_time(NOW, "Europe/Nowhere") == "12-05 06:00 UTC"  # unknown: said so


def test_updates_name_the_technician_and_a_late_older_update_changes_nothing() -> None:
    view = welcomed()
    view.receive(opened(), 0.0)
    update = TicketUpdated(
        ticket_id="tkt_1",
        support_code="K7M-4QXP",
        status="accepted",
        message_zh="李伟已接单\x1b[2J",
        message_en="Li Wei took it",
        updated_at=NOW + 60,
        technician="li.wei",
    )
    view.receive(update, 0.0)
    rows = view.ticket_lines(NOW + 61)
    assert ("技术员", "li.wei") in rows
    assert ("", "李伟已接单") in rows  # the relay's text, made printable
    older = TicketUpdated(
        ticket_id="tkt_1",
        support_code="K7M-4QXP",
        status="new",
        message_zh="",
        message_en="",
        updated_at=NOW + 1,
    )
    view.receive(older, 0.0)
    assert view.tickets["tkt_1"]["status"] == "accepted"


def test_a_reopened_window_shows_the_open_ticket() -> None:
    view = welcomed()
    entry = {
        "ticket_id": "tkt_9",
        "support_code": "AB2-CD3E",
        "status": "in_progress",
        "message_zh": "正在处理",
        "message_en": "working on it",
        "updated_at": NOW,
        "technician": "li.wei",
        "response_due": None,
        "resolve_due": None,
    }
    view.receive(TicketList(id=1, tickets=(entry,)), 0.0)
    assert view.screen == "ticket"
    assert view.current == "tkt_9"


def question(timeout: float = 120.0) -> ConsentRequest:
    return ConsentRequest(
        id=7,
        device_id=DEVICE,
        script="printer-status-test",
        title_zh="打印机状态与测试小票",
        title_en="Printer status and test receipt",
        changes_zh="打印一张测试小票 运行前会先备份",
        changes_en="Prints one test receipt",
        expected_duration=20.0,
        timeout=timeout,
    )


def test_consent_names_the_script_and_a_late_answer_is_not_sent() -> None:
    view = welcomed()
    view.receive(opened(), 0.0)
    view.receive(question(), 100.0)
    assert view.screen == "consent"
    lines = view.consent_lines()
    assert ("", "打印机状态与测试小票  (printer-status-test)") in lines
    assert ("会做什么", "打印一张测试小票 运行前会先备份") in lines
    assert ("大约需要", "20 秒") in lines
    assert view.consent_left(150.0) == 70
    answer = view.answer(True, 150.0)
    assert answer is not None
    assert (answer.id, answer.granted) == (7, True)
    assert view.screen == "ticket"
    view.receive(question(), 300.0)
    assert view.answer(True, 420.0) is None  # the time was up: the agent took it as a no
    assert view.error == "该请求已过期, 未运行任何操作"


def test_agent_refusing_an_expired_answer_reads_as_expired() -> None:
    view = welcomed()
    view.receive(ErrorReply(id=7, code="consent_expired", message="x"), 0.0)
    assert view.error == "该请求已过期, 未运行任何操作"


def test_resolved_ticket_asks_for_a_rating_and_bad_ratings_are_refused() -> None:
    view = welcomed()
    view.receive(opened(), 0.0)
    view.receive(
        TicketUpdated(
            ticket_id="tkt_1",
            support_code="K7M-4QXP",
            status="resolved",
            message_zh="已修好",
            message_en="fixed",
            updated_at=NOW + 600,
            technician="li.wei",
        ),
        0.0,
    )
    assert view.screen == "rate"
    assert view.rate(3, 0, "") is None
    assert view.error == "请选择 1 到 5 分"
    assert view.rate(3, 5, "很快\u2066修好") is None
    assert "控制字符" in view.error
    assert view.comment == "很快\u2066修好"  # kept
    msg = view.rate(4, 5, "很快就修好了")
    assert msg is not None
    assert (msg.ticket_id, msg.rating, msg.comment) == ("tkt_1", 5, "很快就修好了")
    view.receive(TicketRated(id=4), 0.0)
    assert view.screen == "done"


def test_summary_is_words_worst_first_never_a_dump() -> None:
    from posassist.agent.findings import Finding
    from posassist.client.advice import Severity
    from posassist.protocol import HelpRequested

    findings = [
        Finding("printer.paper_near_end", Severity.WARNING, "printers", "front", {}),
        Finding("printer.paper_out", Severity.FAULT, "printers", "front", {}),
    ]
    summary = summarise(findings)
    assert [f["zh"] for f in summary["findings"]] == [
        "打印机缺纸 (front)",
        "打印纸快用完 (front)",
    ]
    view = welcomed()
    view.receive({"t": "link.summary", "id": 1, "findings": summary["findings"], "error": ""}, 0)
    assert view.summary_lines() == [
        "收银机检查结果:",
        "• 打印机缺纸 (front)",
        "• 打印纸快用完 (front)",
    ]
    # the bounded form rides in a help request under the agent.facts limits
    HelpRequested(
        id=1, device_id=DEVICE, category="printer", description="x", diagnostics=summary["facts"]
    )


def test_the_merchant_reads_problems_in_words_not_notes_or_section_ids() -> None:
    """A note (info: no print spooler, normal here) is for the technician, not a problem on
    the merchant's screen; a section that could not be read is named in words, per language."""
    from posassist.agent.findings import Finding
    from posassist.client.advice import Severity

    findings = [
        Finding("queue.no_spooler", Severity.INFO, "print_queue", "", {}),
        Finding("collector.unreadable", Severity.WARNING, "print_queue", "print_queue", {}),
    ]
    summary = summarise(findings)
    assert [(f["zh"], f["en"]) for f in summary["findings"]] == [
        ("诊断数据无法读取 (打印队列)", "Diagnostic reading unreadable (Print queue)"),
        ("本机没有打印队列服务", "No print spooler on this till"),
    ]
    assert len(summary["facts"]["findings"]) == 2  # the technician still gets the note
    view = welcomed()
    view.receive({"t": "link.summary", "id": 1, "findings": summary["findings"], "error": ""}, 0)
    assert view.summary_lines() == ["收银机检查结果:", "• 诊断数据无法读取 (打印队列)"]
    notes_only = summary["findings"][1:]
    view.receive({"t": "link.summary", "id": 2, "findings": notes_only, "error": ""}, 0)
    assert view.summary_lines() == [view.word("nothing_found")]


@pytest.mark.parametrize(
    ("detail", "line"),
    [
        ({"decision": "denied", "answered_by": "cashier"}, "denied by the merchant / 商户拒绝"),
        ({"decision": "timed_out", "timeout": 120.0}, "no answer in 120 s / 120 秒内无应答"),
        ({"decision": "no_window"}, "no window open / 收银台没有打开帮助窗口 — ask the merchant"),
        (
            {"decision": "granted", "answered_by": "cashier"},
            "approved by the merchant / 商户已同意 (desktop user / 桌面用户 cashier)",
        ),
    ],
)
def test_the_technician_reads_the_real_consent_answer(detail: dict[str, object], line: str) -> None:
    from posassist.console.__main__ import progress_line

    shown = progress_line(
        ScriptProgress(id=1, job_id="j", step="consent_answered", at=1.0, detail=detail)
    )
    assert shown.startswith("[consent] ")
    assert line in shown
    assert consent_line("verified", {}) is None


def test_autostart_entry_opens_the_window_at_log_in(tmp_path: Path) -> None:
    import subprocess

    from posassist.agent.helpwindow.autostart import autostart_entry

    data = tmp_path / "my till $HOME"  # a space and a $ are quoted, not expanded
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run(
        [sys.executable, "-m", "posassist.agent", "help", "--data", str(data), "--autostart"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    entry = tmp_path / "config" / "autostart" / "posassist-help.desktop"
    body = entry.read_text(encoding="utf-8")
    assert str(entry) in done.stdout
    exec_line = next(line for line in body.splitlines() if line.startswith("Exec="))
    assert exec_line.endswith(f'"help" "--data" "{tmp_path}/my till \\$HOME" "--lang" "zh-CN"')
    path, cmd = autostart_entry(
        Path("C:/posassist"),
        "en",
        python="C:/py/python.exe",
        platform="win32",
        env={"APPDATA": "C:/Users/cashier/AppData/Roaming"},
    )
    assert path.name == "posassist-help.cmd"
    assert "Startup" in path.parts
    assert cmd.startswith('@start "" "C:/py/pythonw.exe" "-m" "posassist.agent" "help"')


def test_text_face_prompts_refuses_keeps_and_sends() -> None:
    import io

    from posassist.agent.helpwindow.text import TextHelp

    out = io.StringIO()
    view = HelpView()
    view.receive(
        {
            "t": "link.welcome",
            "device_id": DEVICE,
            "timezone": "Asia/Shanghai",
            "user": "cashier",
            "relay_connected": False,
        },
        0.0,
    )
    face = TextHelp(view, out, clock=lambda: 0.0, wall=lambda: NOW)
    face.render(force=True)
    assert "! 未连接服务器" in out.getvalue()
    assert face.line("9") is None  # no such category
    assert "请先选择问题类别" in out.getvalue()
    assert face.line("1") is None
    assert face.line("打印机\u202e坏了") is None  # refused at once, not after the phone
    assert "控制字符" in out.getvalue()
    assert "[打印机坏了]" in out.getvalue()  # kept, echoed printable
    assert "[打印机\u202e坏了]" not in out.getvalue()
    assert face.line("") is None  # Enter keeps it, without the invisible mark (README walk)
    assert "联系电话" in out.getvalue().rsplit("\n", 2)[-2]
    sent = face.line("138 0000 0000")
    assert isinstance(sent, HelpRequested)
    assert sent.description == "打印机坏了"
    view.receive(question(timeout=30.0), 0.0)
    face.render()
    assert "y = 同意, n = 拒绝" in out.getvalue()
    assert face.line("maybe") is None  # asked again
    answer = face.line("y")
    assert isinstance(answer, ConsentAnswer)


def _update(ticket_id: str, code: str, status: str, at: float, **more: object) -> TicketUpdated:
    return TicketUpdated(
        ticket_id=ticket_id,
        support_code=code,
        status=status,
        message_zh="",
        message_en="",
        updated_at=at,
        technician="li.wei",
        **more,  # type: ignore[arg-type]
    )


def test_the_merchant_reads_the_question_and_replies_in_the_terminal() -> None:
    """README walk: "waiting for you" showed no question and offered no way to answer."""
    import io

    from posassist.agent.helpwindow.text import TextHelp
    from posassist.protocol import TicketReplied, TicketReply

    view = welcomed()
    out = io.StringIO()
    face = TextHelp(view, out, clock=lambda: 0.0, wall=lambda: NOW)
    view.receive(_update("t-1", "K7Q2-XM9P", "in_progress", NOW), 0.0)
    view.screen = "ticket"
    view.receive(
        _update("t-1", "K7Q2-XM9P", "waiting_merchant", NOW + 1, question="纸卷装好了吗?"), 0.0
    )
    face.render(force=True)
    shown = out.getvalue()
    assert "技术员的问题: 纸卷装好了吗?" in shown
    assert "r = 回复技术员" in shown
    assert face.line("r") is None
    assert "请输入回复" in out.getvalue()
    assert face.line("") is None  # an empty answer: refused, nothing sent, asked again later
    assert "请填写" in out.getvalue()
    assert face.line("r") is None
    sent = face.line("装好了\\n可以打印")  # "\n" typed starts a new line
    assert isinstance(sent, TicketReply)
    assert (sent.ticket_id, sent.text) == ("t-1", "装好了\n可以打印")
    view.receive(TicketReplied(id=sent.id), 0.0)
    assert view.awaiting is None
    face.render(force=True)
    assert "已回复, 技术员会继续处理" in out.getvalue()


def test_every_solved_ticket_is_offered_for_rating_one_after_another() -> None:
    """README walk: with three tickets, two solved ones were never offered for rating."""
    view = welcomed()
    view.receive(_update("t-1", "AAAA-BBBB", "in_progress", NOW), 0.0)
    view.receive(_update("t-2", "CCCC-DDDD", "in_progress", NOW), 0.0)
    view.receive(_update("t-3", "EEEE-FFFF", "new", NOW), 0.0)
    view.screen = "ticket"
    view.receive(_update("t-1", "AAAA-BBBB", "resolved", NOW + 5), 0.0)
    view.receive(_update("t-2", "CCCC-DDDD", "resolved", NOW + 6), 0.0)
    rated: list[str] = []
    for request_id in (1, 2):  # the one shown, then the other solved meanwhile
        assert view.screen == "rate", (view.screen, view.current)
        sent = view.rate(request_id, 5, "")
        assert sent is not None
        rated.append(sent.ticket_id)
        view.receive(TicketRated(id=request_id), 0.0)
    assert sorted(rated) == ["t-1", "t-2"]
    assert view.screen == "done"


@pytest.mark.parametrize(
    ("reason", "at", "said"),
    [
        ("withdrawn", 150.0, "技术员已取消此操作, 未运行任何操作"),
        ("expired", 150.0, "该请求已过期, 未运行任何操作"),
        ("withdrawn", 300.0, "该请求已过期, 未运行任何操作"),  # the time was up anyway
        ("answered", 150.0, "已在另一个窗口回答"),
    ],
)
def test_a_question_the_agent_closed_leaves_the_screen_with_why(
    reason: str, at: float, said: str
) -> None:
    view = welcomed()
    view.receive(opened(), 0.0)
    view.receive(question(), 100.0)
    assert view.screen == "consent"
    view.receive({"t": "link.consent_closed", "id": 6, "reason": reason}, at)  # another one
    assert view.screen == "consent"
    view.receive({"t": "link.consent_closed", "id": 7, "reason": reason}, at)
    assert (view.screen, view.consent, view.error) == ("ticket", None, said)
    assert view.answer(True, at) is None  # nothing left to answer: nothing is sent
