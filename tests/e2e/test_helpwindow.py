"""The help window for real: a relay process, an agent process, the Tk window on an Xvfb display
(and the ``--text`` window in a terminal), driven the way a cashier would; the ticket reaches the
relay, the technician's consent question reaches the window and the real answer the technician.

Screenshots of each screen are saved under ``artefacts/helpwindow/`` (git-ignored); the two in
docs/ (docs/helpwindow-*.png) are copies of the zh-CN ask and consent screens.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from posassist.console.scripts_repo import init_repository
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.e2e.cli import (
    ADMIN_PASSWORD,
    ROOT,
    Technician,
    communicate,
    invite,
    lines,
    ok,
    provision,
    py,
    start_agent,
    start_relay,
    stop,
)
from tests.fakes.simprinter import PrinterState, SimPrinter
from tests.fakes.xvfb import Xvfb, screenshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

ARTEFACTS = ROOT / "artefacts" / "helpwindow"
RUN_VERSION = ("printer-status", "--version", "1.0.0")


def api(url: str, method: str, path: str, token: str, body: Any = None) -> Any:
    """The relay's JSON API, as a technician's tools call it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url.replace("ws://", "http://") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def login(url: str) -> str:
    request = urllib.request.Request(
        url.replace("ws://", "http://") + "/v1/login",
        data=json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return str(json.loads(reply.read())["token"])


class Store:
    """A relay process with a consent-needing signed script, and one till's agent process."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.tmp = tmp
        self.relay_dir = tmp / "relay"
        self.store = store = provision(self.relay_dir)
        repo = init_repository(tmp / "approvers", ["alice", "bob"], PASS)
        script = manifest("printer-status")
        script.update(consent=True, unattended=False)
        script["title"] = {"zh": "打印机状态与测试小票", "en": "Printer status and test receipt"}
        script["changes"] = {"zh": "打印一张测试小票", "en": "Prints one test receipt"}
        self.marker = tmp / "ran.txt"
        add(repo, tmp, script, body=f"echo printed >> {self.marker}\n".encode())
        approve(repo, "alice", "bob")
        repo.publish(self.relay_dir)
        self.relay, self.url = start_relay(self.relay_dir)
        self.till = tmp / "till"
        ok(
            py(
                "agent",
                "enroll",
                invite(self.relay_dir, store, self.url),
                "--data",
                str(self.till),
                "--root-hash",
                repo.root_hash(),
            )
        )
        # the till's receipt printer has run out of paper (the simulated ESC/POS printer)
        self.printer = SimPrinter()
        self.printer.set_state(PrinterState.PAPER_OUT)
        host, port = self.printer.start_tcp()
        printers = [{"name": "前台", "tcp": f"{host}:{port}"}]
        settings["printers"] = printers
        (self.till / "settings.json").write_text(json.dumps(settings))
        self.agent, self.device = start_agent(self.till)
        self.token = login(self.url)
        # the merchant's SLA: a technician must answer within 15 minutes of business time
        merchant = api(self.url, "GET", f"/v1/stores/{store}", self.token)["merchant_id"]
        sla = {"response_seconds": 900, "resolve_seconds": 4 * 3600}
        api(self.url, "POST", f"/v1/merchants/{merchant}/sla", self.token, sla)
        self.tech = Technician(tmp / "tech").login(self.url)

    def run_script(self) -> subprocess.Popen[str]:
        """The technician runs the risk-B script; it waits for the merchant's answer."""
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "posassist.console",
                "run",
                self.device,
                "printer-status",
                "--version",
                "1.0.0",
            ],
            cwd=ROOT,
            env=self.tech.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def close(self) -> None:
        stop(self.agent)
        stop(self.relay)
        self.printer.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path)
    yield opened
    opened.close()


def needs_x() -> None:
    from shutil import which

    if which("Xvfb") is None or which("xwd") is None:
        pytest.fail("Xvfb and xwd are missing: apt-get install -y xvfb x11-apps (.ci/run does)")


def test_window_ticket_reaches_the_relay_and_consent_answers_reach_the_technician(
    store: Store,
) -> None:
    import tkinter as tk

    from posassist.agent.helpwindow.view import HelpView
    from posassist.agent.helpwindow.window import NOT_RUNNING, HelpWindow, LinkThread

    needs_x()
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with Xvfb(860, 760) as display:
        link = LinkThread(store.till)
        view = HelpView("zh-CN")
        view.receive(link.start(), time.monotonic())
        root = tk.Tk(screenName=display)
        window = HelpWindow(root, view, link)

        def pump_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, f"window stuck on {view.screen}: {view.error}"
                window.pump()
                root.update()
                time.sleep(0.02)
            window.pump()
            root.update()

        def shot(name: str) -> Path:
            return screenshot(display, ARTEFACTS / f"{name}.png")

        try:
            pump_until(lambda: view.findings is not None and view.relay_connected)
            assert "• 打印机缺纸 (前台)" in view.summary_lines()  # words, not a JSON dump

            # a bad description is refused in words and kept in the box
            window.category_buttons[0].invoke()
            assert window.description is not None
            assert window.contact is not None
            window.description.insert("1.0", "   ")
            window.send_button.invoke()  # type: ignore[union-attr]
            pump_until(lambda: "请填写问题描述" in window.error.cget("text"))
            assert window.description.get("1.0", "end-1c") == "   "  # kept
            shot("0-refused-zh")
            window.description.delete("1.0", "end")
            window.description.insert("1.0", "小票打印不出来, 红灯一直闪")
            window.contact.insert(0, "138 0000 0000")
            pump_until(lambda: window.error.cget("text") == "")  # editing clears the refusal
            shot("1-ask-zh")

            window.send_button.invoke()  # type: ignore[union-attr]
            pump_until(lambda: view.screen == "ticket")
            ticket = view.tickets[view.current]
            code = ticket["support_code"]
            assert ticket["response_due"] is not None
            assert window.countdown is not None
            assert "还剩 1" in window.countdown.cget("text")  # 15 min: "还剩 14 分 59 秒"
            # the technician sees it on the relay (its API, as `posassist tickets` does)
            listed = api(store.url, "GET", "/v1/tickets", store.token)["tickets"]
            mine = [t for t in listed if t["code"] == code]
            assert len(mine) == 1
            assert mine[0]["description"] == "小票打印不出来, 红灯一直闪"
            assert mine[0]["contact"] == "138 0000 0000"
            assert mine[0]["category"] == "printer"
            assert mine[0]["device_id"] == store.device
            # the agent's own snapshot rode along, as findings (codes and words)
            full = api(store.url, "GET", f"/v1/tickets/{code}", store.token)
            codes = [f["code"] for f in full["diagnostics"]["findings"]]
            assert "printer.paper_out" in codes
            shot("2-ticket-zh")

            api(store.url, "POST", f"/v1/tickets/{code}/accept", store.token, {})
            pump_until(lambda: view.tickets[view.current].get("technician") == "admin")
            shot("3-accepted-zh")
            assert "承诺响应时间" not in window.countdown.cget("text")  # answered: no countdown

            # the technician asks; the merchant reads the question and answers in the window
            ask = {"text": "纸卷装好了吗? 装好后请回复", "state": "waiting_merchant"}
            api(store.url, "POST", f"/v1/tickets/{code}/note", store.token, ask)
            pump_until(lambda: view.tickets[view.current]["status"] == "waiting_merchant")
            assert ("技术员的问题", "纸卷装好了吗? 装好后请回复") in view.ticket_lines(time.time())
            assert window.reply_box is not None
            window.reply_box.insert("1.0", "装好了")
            pump_until(lambda: True)  # drawn before the picture
            shot("3b-question-zh")
            window.reply_button.invoke()  # type: ignore[union-attr]
            pump_until(lambda: view.tickets[view.current]["status"] == "in_progress")
            assert window.error.cget("text") == "已回复, 技术员会继续处理"
            replied = api(store.url, "GET", f"/v1/tickets/{code}", store.token)
            assert replied["events"][-1]["text"] == "装好了"

            # consent: the technician runs a risk-B script; the window asks; approved
            run = store.run_script()
            pump_until(lambda: view.screen == "consent")
            assert view.consent is not None
            assert view.consent.title_zh == "打印机状态与测试小票"
            shot("4-consent-zh")
            window.approve_button.invoke()  # type: ignore[union-attr]
            out, err = run.communicate(timeout=60)
            assert "[consent] approved by the merchant / 商户已同意" in out, out + err
            assert store.marker.read_text() == "printed\n"

            # denied: refused, nothing runs, the technician reads the merchant's no
            run = store.run_script()
            pump_until(lambda: view.screen == "consent")
            window.deny_button.invoke()  # type: ignore[union-attr]
            out, err = run.communicate(timeout=60)
            assert "[consent] denied by the merchant / 商户拒绝" in out, out + err
            assert run.returncode == 1
            assert store.marker.read_text() == "printed\n"

            # resolved: the window asks for a rating, which reaches the relay
            api(store.url, "POST", f"/v1/tickets/{code}/resolve", store.token, {"text": "换纸"})
            pump_until(lambda: view.screen == "rate")
            shot("5-rate-zh")
            window.star_buttons[4].invoke()
            assert window.comment is not None
            window.comment.insert("1.0", "很快就修好了")
            window.rate_button.invoke()  # type: ignore[union-attr]
            pump_until(lambda: view.screen == "done")
            shot("6-done-zh")
            shown = api(store.url, "GET", f"/v1/tickets/{code}", store.token)
            assert (shown["rating"], shown["rating_comment"]) == (5, "很快就修好了")

            # the agent goes away (restarted after editing settings.json, or stopped): the
            # window says so in words and connects again by itself once it is back (README walk)
            stop(store.agent)
            pump_until(lambda: window.error.cget("text") == NOT_RUNNING)
            shot("7-no-agent-zh")
            store.agent, _ = start_agent(store.till)
            pump_until(lambda: window.error.cget("text") == "已重新连接 / reconnected", 30.0)
            assert view.relay_connected or view.device_id == store.device
        finally:
            window.link.close()
            root.destroy()

    # the window is closed: a consent question now says so to the technician
    run = store.run_script()
    out, err = run.communicate(timeout=60)
    assert "[consent] no window open / 收银台没有打开帮助窗口" in out, out + err


def text_window(till: Path, lines: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "posassist.agent", "help", "--data", str(till), "--text"],
        input="".join(line + "\n" for line in lines),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def test_text_window_sends_and_a_reopened_one_shows_the_ticket(store: Store) -> None:
    """``help --text``: an empty description is refused and asked again, the request goes
    through, and a new window (the old one was closed mid-ticket) shows the same ticket."""
    first = text_window(store.till, ["1", "", "", "扫码枪没反应", "", "q"])
    assert first.returncode == 0, first.stderr
    assert "请填写问题描述" in first.stdout
    assert "求助编号" in first.stdout
    listed = api(store.url, "GET", "/v1/tickets", store.token)["tickets"]
    assert [t["description"] for t in listed] == ["扫码枪没反应"]
    code = listed[0]["code"]
    assert code in first.stdout

    again = text_window(store.till, ["q"])
    assert again.returncode == 0, again.stderr
    assert code in again.stdout
    assert "已提交, 等待技术员接单" in again.stdout


def _audit(relay_dir: Path, action: str) -> list[dict[str, Any]]:
    import asyncio

    from posassist.relay.storage import open_storage

    async def read() -> list[dict[str, Any]]:
        storage = open_storage(f"sqlite:///{relay_dir / 'relay.db'}")
        try:
            return [dict(r.detail) async for r in storage.records() if r.action == action]
        finally:
            await storage.close()

    return asyncio.run(read())


def test_agent_killed_with_consent_pending_denies_it_and_the_relay_learns_it(
    store: Store,
) -> None:
    """The question is on the merchant's screen when the agent dies (SIGKILL): the next agent
    denies it, and the relay reconciles the job from that answer (job.query), audited."""
    from posassist.agent.helpwindow.window import LinkThread
    from posassist.protocol import ConsentRequest

    link = LinkThread(store.till)
    link.start()
    run = store.run_script()
    try:
        deadline = time.monotonic() + 30
        while True:
            msg = link.inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(msg, ConsentRequest):
                break
        pending = json.loads((store.till / "help" / "consent-pending.json").read_text())
        assert [p["script"] for p in pending] == ["printer-status"]
        stop(store.agent)  # SIGKILL, with the question unanswered
        run.communicate(timeout=60)
    finally:
        link.close()
    store.agent, _ = start_agent(store.till)
    deadline = time.monotonic() + 30
    while not _audit(store.relay_dir, "script.run.reconciled"):
        assert time.monotonic() < deadline, "the relay did not learn how the run ended"
        time.sleep(0.2)
    [reconciled] = _audit(store.relay_dir, "script.run.reconciled")
    assert reconciled["via"] == "job.query"
    assert "consent_denied: the agent restarted" in str(reconciled["error"])
    [asked] = _audit(store.relay_dir, "script.run.consent_asked")
    assert asked["agent"]["script"] == "printer-status"
    assert asked["job"] == reconciled.get("job", asked["job"])
    assert not store.marker.exists()  # nothing ran
    assert json.loads((store.till / "help" / "consent-pending.json").read_text()) == []


PY38 = ROOT / ".venv38" / "bin" / "python"


@pytest.mark.py38
def test_agent_and_both_windows_work_on_python38(store: Store) -> None:
    """The till's Python (3.8, Windows 7): an agent, the --text window and the Tk window, real."""
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make test` builds it from Python 3.8 (docs/windows7.md)")
    needs_x()
    stop(store.agent)
    agent = subprocess.Popen(
        [str(PY38), "-m", "posassist.agent", "run", "--data", str(store.till)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store.agent = agent
    assert "connected to relay" in lines(agent).readline(within=30)
    text = subprocess.run(
        [str(PY38), "-m", "posassist.agent", "help", "--data", str(store.till), "--text"],
        input="2\n钱箱打不开\n\nq\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 0, text.stderr
    assert "求助编号" in text.stdout
    code = (
        "import sys, time, tkinter as tk\n"
        "from pathlib import Path\n"
        "from posassist.agent.helpwindow.view import HelpView\n"
        "from posassist.agent.helpwindow.window import HelpWindow, LinkThread\n"
        "assert sys.version_info[:2] == (3, 8)\n"
        "link = LinkThread(Path(sys.argv[1])); view = HelpView('en')\n"
        "view.receive(link.start(), time.monotonic())\n"
        "root = tk.Tk(screenName=sys.argv[2]); window = HelpWindow(root, view, link)\n"
        "def pump(cond):\n"
        "    deadline = time.monotonic() + 30\n"
        "    while not cond():\n"
        "        assert time.monotonic() < deadline, view.error\n"
        "        window.pump(); root.update(); time.sleep(0.02)\n"
        "pump(lambda: view.relay_connected)\n"
        "window.category_buttons[5].invoke()\n"
        "window.description.insert('1.0', 'the scale shows the wrong weight')\n"
        "window.send_button.invoke()\n"
        "pump(lambda: view.screen == 'ticket')\n"
        "print(view.tickets[view.current]['support_code'])\n"
        "link.close(); root.destroy()\n"
    )
    with Xvfb() as display:
        tk38 = subprocess.run(
            [str(PY38), "-c", code, str(store.till), display],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert tk38.returncode == 0, tk38.stderr
    listed = api(store.url, "GET", "/v1/tickets", store.token)["tickets"]
    assert {t["description"] for t in listed} == {"钱箱打不开", "the scale shows the wrong weight"}
    assert tk38.stdout.strip() in {t["code"] for t in listed}


class Terminal:
    """``help --text`` as a cashier uses it: type a line when the screen asks for it."""

    def __init__(self, till: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "posassist.agent", "help", "--data", str(till), "--text"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        try:
            return lines(self.proc).wait_for(re.escape(text), timeout).string
        except AssertionError as exc:
            if self.proc.poll() is None:
                raise
            # the window ended: what it said on stderr is the reason
            why = communicate(self.proc, 10)[1][-2000:]
            raise AssertionError(f"the window ended before {text!r}: {exc} {why}") from None

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> int:
        """Quit (``q``), or kill it if it is past that; its exit status."""
        if self.proc.poll() is None:
            try:
                self.type("q")
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        stop(self.proc)  # reaps it and closes its pipes
        return self.proc.returncode


def test_text_window_consent_and_rating_as_a_cashier_types(store: Store) -> None:
    term = Terminal(store.till)
    try:
        term.wait_for("哪里出了问题?")
        term.type("1")
        term.wait_for("请简单描述问题")
        term.type("打印机没纸了")
        term.wait_for("联系电话")
        term.type("")
        code = term.wait_for("求助编号").strip()  # the screen's heading; the code follows
        run = store.run_script()
        term.wait_for("技术员请求在本机运行以下操作")
        term.wait_for("打印机状态与测试小票")
        term.wait_for("y = 同意, n = 拒绝")
        term.type("n")
        out, err = run.communicate(timeout=60)
        assert "[consent] denied by the merchant / 商户拒绝" in out, out + err
        [ticket] = api(store.url, "GET", "/v1/tickets", store.token)["tickets"]
        api(store.url, "POST", f"/v1/tickets/{ticket['code']}/accept", store.token, {})
        # the technician asks; the merchant reads the question and answers from the till
        ask = {"text": "纸卷装好了吗?", "state": "waiting_merchant"}
        api(store.url, "POST", f"/v1/tickets/{ticket['code']}/note", store.token, ask)
        term.wait_for("技术员的问题: 纸卷装好了吗?")
        term.wait_for("r = 回复技术员")
        term.type("r")
        term.wait_for("请输入回复")
        term.type("装好了, 可以打印")
        term.wait_for("已回复, 技术员会继续处理")
        replied = api(store.url, "GET", f"/v1/tickets/{ticket['code']}", store.token)
        assert (replied["status"], replied["sla_paused"]) == ("in_progress", False)
        assert replied["events"][-1]["text"] == "装好了, 可以打印"
        api(store.url, "POST", f"/v1/tickets/{ticket['code']}/resolve", store.token, {})
        term.wait_for("问题已解决, 请为本次服务打分")
        term.type("4")
        term.wait_for("意见或建议")
        term.type("还行")
        term.wait_for("感谢您的评价")
    finally:
        status = term.close()
    assert status == 0
    assert code
    shown = api(store.url, "GET", f"/v1/tickets/{ticket['code']}", store.token)
    assert (shown["rating"], shown["rating_comment"]) == (4, "还行")
    assert not store.marker.exists()


def test_no_answer_in_time_is_a_no_and_a_late_answer_is_refused(tmp_path: Path) -> None:
    """The merchant has 2 s (settings.json consent_timeout): silence is a no; the technician
    reads "no answer in 2 s"; the answer the window sends after that is refused, nothing runs."""
    from posassist.agent.helpwindow.window import LinkThread
    from posassist.protocol import ConsentAnswer, ConsentRequest, ErrorReply

    store = Store(tmp_path, consent_timeout=2)
    link = LinkThread(store.till)
    try:
        link.start()
        run = store.run_script()
        deadline = time.monotonic() + 30
        question = None
        while not isinstance(question, ConsentRequest):
            question = link.inbox.get(timeout=max(0.1, deadline - time.monotonic()))
        assert question.timeout == 2.0
        out, err = run.communicate(timeout=60)  # nobody answers
        assert "[consent] no answer in 2 s / 2 秒内无应答" in out, out + err
        link.send(ConsentAnswer(id=question.id, granted=True))  # too late
        late = None
        while not isinstance(late, ErrorReply):
            late = link.inbox.get(timeout=max(0.1, deadline - time.monotonic()))
        assert late.code == "consent_expired"
        assert not store.marker.exists()
    finally:
        link.close()
        store.close()


def test_the_window_follows_the_stores_zone_set_on_the_relay(store: Store) -> None:
    """README walk: `posassist store set --timezone` moved the console's times but not the
    till's. The relay tells the agent (policy.updated) and the open window hears it."""
    import asyncio

    from posassist.agent.helpwindow.linkclient import LinkClient

    async def window_zone_after_the_change() -> tuple[str, str]:
        client = await LinkClient.connect(store.till)
        try:
            before = str(client.welcome["timezone"])
            body = {"timezone": "Europe/Berlin"}
            await asyncio.to_thread(
                api, store.url, "PATCH", f"/v1/stores/{store.store}", store.token, body
            )
            while True:
                said = await client.receive(20)
                if isinstance(said, dict) and said.get("t") == "link.welcome":
                    return before, str(said["timezone"])
        finally:
            await client.close()

    before, after = asyncio.run(window_zone_after_the_change())
    assert (before, after) == ("Asia/Shanghai", "Europe/Berlin")


def test_the_text_window_waits_for_a_restarted_agent_and_carries_on(store: Store) -> None:
    """README walk: restarting the agent (after editing settings.json) ended the open window
    with an English-first error. It now says so in Chinese first, waits, and carries on."""
    term = Terminal(store.till)
    try:
        term.wait_for("哪里出了问题?")
        stop(store.agent)  # killed: the socket goes with it
        term.wait_for("与收银助手服务的连接已断开 / the agent closed the link")
        term.wait_for("正在重新连接收银助手服务")
        store.agent, _ = start_agent(store.till)
        term.wait_for("已重新连接 / reconnected")
        term.wait_for("哪里出了问题?")
        term.type("1")
        term.wait_for("请简单描述问题")
        term.type("重启后再试")
        term.wait_for("联系电话")
        term.type("")
        term.wait_for("求助编号")  # sent through the new link
    finally:
        status = term.close()
    assert status == 0
    listed = api(store.url, "GET", "/v1/tickets", store.token)["tickets"]
    assert [t["description"] for t in listed] == ["重启后再试"]


def test_a_cancel_during_the_consent_wait_closes_the_question_and_runs_nothing(
    tmp_path: Path,
) -> None:
    """The technician cancels while the merchant is being asked (real relay, real agent, the
    window's real link): the question leaves the window, saying the technician cancelled; the
    job ends ``cancelled``; the script never ran; an answer sent after that is refused."""
    from posassist.agent.helpwindow.view import HelpView
    from posassist.agent.helpwindow.window import LinkThread
    from posassist.protocol import ConsentAnswer, ConsentRequest, ErrorReply
    from tests.e2e.test_script_cancel import _job_and_audit

    store = Store(tmp_path)
    link = LinkThread(store.till)
    view = HelpView("zh-CN")
    run = None
    try:
        view.receive(link.start(), time.monotonic())
        run = subprocess.Popen(
            [sys.executable, "-m", "posassist.console", "run", store.device, *RUN_VERSION],
            cwd=ROOT,
            env=dict(store.tech.env, PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        job_id = lines(run).wait_for(r"job (job_[0-9a-f]+) \(to stop it", 60).group(1)
        deadline = time.monotonic() + 30
        question = None
        while not isinstance(question, ConsentRequest):
            question = link.inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            view.receive(question, time.monotonic())
        assert view.screen == "consent"

        cancelled = store.tech("cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert "nothing ran" in cancelled.stdout
        closed: Any = None
        while not (isinstance(closed, dict) and closed.get("t") == "link.consent_closed"):
            closed = link.inbox.get(timeout=max(0.1, deadline - time.monotonic()))
        assert closed == {"t": "link.consent_closed", "id": question.id, "reason": "withdrawn"}
        view.receive(closed, time.monotonic())
        assert (view.screen, view.consent) == ("ask", None)
        assert view.error == "技术员已取消此操作, 未运行任何操作"

        link.send(ConsentAnswer(id=question.id, granted=True))  # clicked just too late
        late = None
        while not isinstance(late, ErrorReply):
            late = link.inbox.get(timeout=max(0.1, deadline - time.monotonic()))
        assert late.code == "consent_expired"
        out, err = communicate(run, 30)
        assert run.returncode == 1, out + err
        assert "cancelled" in out
        assert not store.marker.exists()  # the script never ran
        consent_file = store.till / "help" / "consent-pending.json"
        assert json.loads(consent_file.read_text()) == []
    finally:
        link.close()
        if run is not None:
            stop(run)
        store.close()
    status, records = _job_and_audit(store.relay_dir, job_id)
    assert status == "cancelled"
    assert records == [("job.cancel", "ok"), ("job.cancel.finished", "ok")]
