"""The help window's view-model: what the merchant sees and may do, shared by the Tk window and
``--text`` mode (one way). Pure, Python 3.8: no I/O, no clock (``now`` is passed in).

Screens: ``ask`` (category, description, phone, the diagnostics summary), ``ticket`` (support
code, state, technician, the promised response time counting down), ``consent`` (a script the
technician wants to run: approve or deny before the countdown ends), ``rate`` (1-5 and a comment),
``done``. Every text is Simplified Chinese by default, English with ``lang="en"``; what comes
from the relay or the agent is made printable before it is shown.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional, Tuple

from posassist.protocol import (
    ConsentAnswer,
    ConsentRequest,
    ErrorReply,
    HelpRequested,
    TicketList,
    TicketOpened,
    TicketRate,
    TicketRated,
    TicketReplied,
    TicketReply,
    TicketUpdated,
)
from posassist.protocol.messages import MAX_CONTACT, merchant_text_problem
from posassist.protocol.text import printable

__all__ = ["CATEGORIES", "LANGUAGES", "HelpView", "local_time", "zone"]

LANGUAGES = ("zh-CN", "en")
#: (wire value, Chinese, English), in the order the window shows them.
CATEGORIES: Tuple[Tuple[str, str, str], ...] = (
    ("printer", "打印机", "Printer"),
    ("cash_drawer", "钱箱", "Cash drawer"),
    ("scanner", "扫码枪", "Scanner"),
    ("pos_software", "收银软件", "POS software"),
    ("network", "网络", "Network"),
    ("other", "其他问题", "Something else"),
)
WORDS: Dict[str, Tuple[str, str]] = {
    "title": ("获取帮助", "Get help"),
    "category": ("哪里出了问题?", "What is wrong?"),
    "description": ("请简单描述问题", "Say briefly what happened"),
    "contact": ("联系电话 (可不填)", "Phone number (optional)"),
    "send": ("发送求助", "Send"),
    "sending": ("正在发送…", "Sending…"),
    "checking": ("正在检查收银机…", "Checking the till…"),
    "found": ("收银机检查结果:", "What the till found:"),
    "nothing_found": ("收银机检查未发现问题", "The till's check found nothing wrong"),
    "check_failed": (
        "收银机检查未完成, 仍可发送求助",
        "The till's check did not finish; you can still send",
    ),
    "pick_category": ("请先选择问题类别", "Pick what is wrong first"),
    "bad_contact": (
        "电话号码最多 32 位, 只能含数字和 + - 空格",
        "A phone number is at most 32 digits, + - and spaces",
    ),
    "support_code": ("求助编号 (电话中请报此编号)", "Support code (read it out on the phone)"),
    "status": ("进度", "Status"),
    "technician": ("技术员", "Technician"),
    "nobody_yet": ("尚未接单", "not taken yet"),
    "respond_by": ("承诺响应时间", "Promised response by"),
    "overdue": ("已超时", "overdue"),
    "left": ("还剩", "left"),
    "offline": ("未连接服务器", "not connected to the service"),
    "consent_title": (
        "技术员请求在本机运行以下操作",
        "The technician asks to run this on the till",
    ),
    "changes": ("会做什么", "What it changes"),
    "duration": ("大约需要", "Takes about"),
    "approve": ("同意", "Approve"),
    "deny": ("拒绝", "Deny"),
    "answer_in": (
        "请在倒计时结束前回答, 超时视为拒绝",
        "Answer before the countdown ends; no answer means no",
    ),
    "consent_expired": ("该请求已过期, 未运行任何操作", "This request expired; nothing was run"),
    "consent_withdrawn": (
        "技术员已取消此操作, 未运行任何操作",
        "The technician cancelled this; nothing was run",
    ),
    "consent_answered": ("已在另一个窗口回答", "Answered in another window"),
    "rate_title": ("问题已解决, 请为本次服务打分", "Solved: please rate the service"),
    "comment": ("意见或建议 (可不填)", "Comment (optional)"),
    "rate": ("提交评价", "Submit rating"),
    "pick_rating": ("请选择 1 到 5 分", "Pick 1 to 5"),
    "thanks": ("感谢您的评价!", "Thank you for your rating!"),
    "new_request": ("新的求助", "New request"),
    "question": ("技术员的问题", "The technician asks"),
    "reply": ("回复技术员", "Reply to the technician"),
    "reply_prompt": ("请输入回复 (按回车发送)", "Your answer (Enter sends it)"),
    "replied": ("已回复, 技术员会继续处理", "Sent: the technician carries on"),
    "nothing_to_reply": ("没有需要回复的工单", "No open ticket to reply to"),
    "seconds": ("秒", "s"),
    "minutes": ("分", "min"),
}
STATUS_WORDS: Dict[str, Tuple[str, str]] = {
    "new": ("已提交, 等待技术员接单", "sent, waiting for a technician"),
    "accepted": ("技术员已接单", "a technician has taken it"),
    "in_progress": ("正在处理", "being worked on"),
    "waiting_merchant": ("等待您的回复", "waiting for you"),
    "resolved": ("已解决", "solved"),
    "closed": ("已关闭", "closed"),
    "reopened": ("已重新打开", "reopened"),
}
_OPEN = ("new", "accepted", "in_progress", "waiting_merchant", "reopened")
#: Zones without daylight saving time, for a Python without zoneinfo (3.8 tills): UTC offsets.
_FIXED_ZONES = {
    "Asia/Shanghai": 8,
    "Asia/Chongqing": 8,
    "Asia/Harbin": 8,
    "Asia/Urumqi": 6,
    "Asia/Hong_Kong": 8,
    "Asia/Macau": 8,
    "Asia/Taipei": 8,
    "Asia/Singapore": 8,
    "Asia/Kuala_Lumpur": 8,
    "Asia/Manila": 8,
    "Asia/Tokyo": 9,
    "Asia/Seoul": 9,
    "Asia/Bangkok": 7,
    "Asia/Jakarta": 7,
    "Asia/Ho_Chi_Minh": 7,
    "UTC": 0,
    "Etc/UTC": 0,
}


def zone(name: str) -> datetime.tzinfo:
    """The store's time zone: zoneinfo where Python has it (3.9+), else a fixed offset for the
    zones without daylight saving above, else UTC (named so on screen by :func:`local_time`)."""
    try:
        from zoneinfo import ZoneInfo  # novermin - 3.9+; the fallback below serves 3.8

        return ZoneInfo(name)
    except Exception:  # ImportError on 3.8, ZoneInfoNotFoundError, a bad name
        pass
    hours = _FIXED_ZONES.get(name)
    if hours is None:
        return datetime.timezone.utc
    return datetime.timezone(datetime.timedelta(hours=hours), name)


def local_time(epoch: float, zone_name: str) -> str:
    """``epoch`` as the store's wall-clock time, ``MM-DD HH:MM``."""
    tz = zone(zone_name)
    shown = datetime.datetime.fromtimestamp(epoch, tz).strftime("%m-%d %H:%M")
    if tz is datetime.timezone.utc and zone_name not in ("UTC", "Etc/UTC"):
        shown += " UTC"  # a zone this Python can't resolve: say which time this is
    return shown


class HelpView:
    """The state of one help window. Feed it what the link brings (:meth:`receive`) and what the
    merchant does (:meth:`submit`, :meth:`answer`, :meth:`rate`); read what to show from it."""

    def __init__(self, lang: str = "zh-CN") -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"lang must be one of {LANGUAGES}")
        self.lang = lang
        self.screen = "ask"
        self.device_id = ""
        self.timezone = "Asia/Shanghai"
        self.relay_connected = False
        self.category = ""
        self.description = ""
        self.contact = ""
        #: the last problem to show (a refused input, the relay's error); "" when none
        self.error = ""
        #: the diagnostics summary's rows (code, severity, zh, en); None while it runs
        self.findings: Optional[List[Dict[str, Any]]] = None
        self.findings_error = ""
        self.tickets: Dict[str, Dict[str, Any]] = {}
        self.current = ""
        self.consent: Optional[ConsentRequest] = None
        self.consent_deadline = 0.0
        self.rating = 0
        self.comment = ""
        self.rated: List[str] = []
        #: what the merchant is typing as a reply to the technician, kept when refused
        self.reply_text = ""
        #: a passing word of good news ("sent"); "" when none
        self.notice = ""
        #: the id of a request sent and not yet answered (help or rating), else None
        self.awaiting: Optional[int] = None

    # --- words -----------------------------------------------------------------------------

    def word(self, key: str) -> str:
        zh, en = WORDS[key]
        return zh if self.lang == "zh-CN" else en

    def pick(self, zh: str, en: str) -> str:
        return printable(zh if self.lang == "zh-CN" else en)

    def categories(self) -> List[Tuple[str, str]]:
        """(wire value, label) of each category, in order."""
        return [(key, zh if self.lang == "zh-CN" else en) for key, zh, en in CATEGORIES]

    # --- the ask screen --------------------------------------------------------------------

    def summary_lines(self) -> List[str]:
        """The diagnostics summary in words, worst first ("打印机缺纸"), never a JSON dump."""
        if self.findings is None:
            return [self.word("checking")]
        if self.findings_error and not self.findings:
            return [self.word("check_failed")]
        wrong = [f for f in self.findings if f.get("severity") != "info"]  # notes aren't faults
        if not wrong:
            return [self.word("nothing_found")]
        rows = [self.pick(str(f.get("zh", "")), str(f.get("en", ""))) for f in wrong]
        return [self.word("found")] + ["• " + r for r in rows[:6]]

    def submit(
        self, request_id: int, category: str, description: str, contact: str
    ) -> Optional[HelpRequested]:
        """The help request to send, or None with :attr:`error` saying why (what was typed is
        kept in the view either way)."""
        self.category, self.description, self.contact = category, description, contact.strip()
        self.error = ""
        if category not in {key for key, _, _ in CATEGORIES}:
            self.error = self.word("pick_category")
            return None
        problem = merchant_text_problem("description", description)
        if problem is not None:
            self.error = problem if self.lang == "en" else zh_first(problem)
            return None
        if len(self.contact) > MAX_CONTACT or any(c not in "0123456789+- ()" for c in self.contact):
            self.error = self.word("bad_contact")
            return None
        if not self.device_id:
            self.error = self.word("offline")
            return None
        self.awaiting = request_id
        return HelpRequested(
            id=request_id,
            device_id=self.device_id,
            category=category,
            description=description,
            contact=self.contact,
            language=self.lang,
        )

    # --- what the link brings --------------------------------------------------------------

    def receive(self, msg: Any, now: float) -> None:
        """One message from the agent (``now``: monotonic seconds, for the consent countdown)."""
        if (
            isinstance(msg, (TicketOpened, TicketRated, TicketReplied, ErrorReply))
            and msg.id == self.awaiting
        ):
            self.awaiting = None
        if isinstance(msg, dict):
            if msg.get("t") == "link.welcome":
                self.device_id = str(msg["device_id"])
                self.timezone = str(msg["timezone"])
                self.relay_connected = bool(msg["relay_connected"])
            elif msg.get("t") == "link.summary":
                self.findings = [f for f in msg["findings"] if isinstance(f, dict)]
                self.findings_error = str(msg["error"])
            elif msg.get("t") == "link.consent_closed":
                self._consent_closed(int(msg["id"]), str(msg["reason"]), now)
        elif isinstance(msg, TicketOpened):
            self._ticket(
                {
                    "ticket_id": msg.ticket_id,
                    "support_code": msg.support_code,
                    "status": msg.status,
                    "message_zh": "",
                    "message_en": "",
                    "updated_at": msg.created_at,
                    "technician": None,
                    "response_due": msg.response_due,
                    "resolve_due": None,
                },
                show=True,
            )
            self.description = self.contact = ""  # sent: the form starts empty again
            self.category = self.error = ""
        elif isinstance(msg, TicketUpdated):
            entry = msg.to_wire()
            del entry["t"]
            self._ticket(entry, show=False)
        elif isinstance(msg, TicketList):
            for entry in msg.tickets:
                self._ticket(dict(entry), show=False)
        elif isinstance(msg, ConsentRequest):
            self.consent = msg
            self.consent_deadline = now + msg.timeout
            self.screen = "consent"
        elif isinstance(msg, TicketRated):
            self.screen = "done"
            self._rate_next()
        elif isinstance(msg, TicketReplied):
            self.notice = self.word("replied")
        elif isinstance(msg, ErrorReply):
            self._refused(msg)

    def _ticket(self, entry: Dict[str, Any], show: bool) -> None:
        """Note a ticket; ``show``: it is the one just opened from this window."""
        ticket_id = entry["ticket_id"]
        old = self.tickets.get(ticket_id)
        if old is not None and old["updated_at"] > entry["updated_at"]:
            return  # an older state arriving late
        if old is not None and not entry.get("message_zh"):
            entry["message_zh"], entry["message_en"] = old["message_zh"], old["message_en"]
        self.tickets[ticket_id] = entry
        current = self.tickets.get(self.current)
        if show or current is None or (current["status"] not in _OPEN and entry["status"] in _OPEN):
            self.current = ticket_id
        if ticket_id != self.current:
            return
        if show or (self.screen == "ask" and entry["status"] in _OPEN and not self.description):
            self.screen = "ticket"  # just sent, or a reopened window showing its open ticket
        if (
            self.screen == "ticket"
            and entry["status"] == "resolved"
            and ticket_id not in self.rated
        ):
            self.screen = "rate"

    def _rate_next(self) -> None:
        """After a rating, the next resolved ticket of this till nobody rated yet (several
        tickets may have been solved while the window showed one)."""
        for ticket_id, entry in self.tickets.items():
            if entry["status"] == "resolved" and ticket_id not in self.rated:
                self.current = ticket_id
                self.screen = "rate"
                return

    def _consent_closed(self, question_id: int, reason: str, now: float) -> None:
        """The agent took the question shown here off the table (``link.consent_closed``): the
        technician cancelled the run (``withdrawn``), the time is up (``expired``), or another
        window answered it (``answered``). Nothing to answer any more; say why."""
        if self.consent is None or self.consent.id != question_id:
            return  # not the question on screen (answered here, or an older one)
        self.consent = None
        if self.screen == "consent":
            self.screen = "ticket" if self.current else "ask"
        if reason == "answered":
            self.error = self.word("consent_answered")
        elif reason == "withdrawn" and now < self.consent_deadline:
            self.error = self.word("consent_withdrawn")
        else:
            self.error = self.word("consent_expired")

    def _refused(self, msg: ErrorReply) -> None:
        if msg.code == "consent_expired":
            self.error = self.word("consent_expired")
            if self.screen == "consent":
                self.screen = "ticket" if self.current else "ask"
            return
        self.error = printable(msg.message, multiline=False)

    # --- the ticket screen -----------------------------------------------------------------

    def ticket_lines(self, now_epoch: float) -> List[Tuple[str, str]]:
        """(label, value) rows for the current ticket."""
        entry = self.tickets.get(self.current)
        if entry is None:
            return []
        zh, en = STATUS_WORDS.get(entry["status"], (entry["status"], entry["status"]))
        rows = [
            (self.word("support_code"), printable(entry["support_code"])),
            (self.word("status"), self.pick(zh, en)),
            (
                self.word("technician"),
                printable(entry["technician"], multiline=False)
                if entry.get("technician")
                else self.word("nobody_yet"),
            ),
        ]
        due = entry.get("response_due")
        if due is not None and entry["status"] in ("new", "reopened"):
            rows.append((self.word("respond_by"), self.countdown(due, now_epoch)))
        message = self.pick(entry.get("message_zh") or "", entry.get("message_en") or "")
        if message:
            rows.append(("", message))
        question = entry.get("question")
        if entry["status"] == "waiting_merchant" and question:
            rows.append((self.word("question"), printable(str(question))))
        return rows

    @property
    def can_reply(self) -> bool:
        """Whether the ticket shown is open (a reply goes on it; one waiting for the merchant
        goes back to the technician)."""
        entry = self.tickets.get(self.current)
        return entry is not None and entry["status"] in _OPEN

    def reply(self, request_id: int, text: str) -> Optional[TicketReply]:
        """The merchant's answer to send for the ticket shown, or None with :attr:`error`
        saying why (what was typed is kept in :attr:`reply_text`)."""
        self.reply_text, self.error = text, ""
        if not self.can_reply:
            self.error = self.word("nothing_to_reply")
            return None
        problem = merchant_text_problem("reply", text)
        if problem is not None:
            self.error = problem if self.lang == "en" else zh_first(problem)
            return None
        self.reply_text = ""
        self.awaiting = request_id
        return TicketReply(id=request_id, ticket_id=self.current, text=text)

    def countdown(self, due: float, now_epoch: float) -> str:
        """``14:05 (还剩 12 分 30 秒)``: the store's time, and what is left (or overdue)."""
        when = local_time(due, self.timezone)
        left = int(due - now_epoch)
        if left < 0:
            return f"{when} ({self.word('overdue')})"
        minutes, seconds = divmod(left, 60)
        if self.lang == "zh-CN":
            return f"{when} (还剩 {minutes} 分 {seconds:02d} 秒)"
        return f"{when} ({minutes} min {seconds:02d} s left)"

    # --- consent ---------------------------------------------------------------------------

    def consent_lines(self) -> List[Tuple[str, str]]:
        question = self.consent
        if question is None:
            return []
        minutes = max(1, round(question.expected_duration / 60.0))
        duration = f"{minutes} 分钟" if self.lang == "zh-CN" else f"{minutes} min"
        if question.expected_duration < 60:
            duration = (
                f"{int(question.expected_duration)} 秒"
                if self.lang == "zh-CN"
                else f"{int(question.expected_duration)} s"
            )
        return [
            ("", self.word("consent_title")),
            ("", self.pick(question.title_zh, question.title_en) + f"  ({question.script})"),
            (self.word("changes"), self.pick(question.changes_zh, question.changes_en)),
            (self.word("duration"), duration),
        ]

    def consent_left(self, now: float) -> int:
        """Whole seconds left to answer (monotonic ``now``); 0 when the time is up."""
        return max(0, int(self.consent_deadline - now + 0.999))

    def answer(self, granted: bool, now: float) -> Optional[ConsentAnswer]:
        """The answer to send, or None (and the words why) if the time is up: the agent took
        no answer as a no already."""
        question = self.consent
        self.consent = None
        self.screen = "ticket" if self.current else "ask"
        if question is None:
            return None
        if now >= self.consent_deadline:
            self.error = self.word("consent_expired")
            return None
        return ConsentAnswer(id=question.id, granted=granted)

    # --- rating ----------------------------------------------------------------------------

    def rate(self, request_id: int, rating: int, comment: str) -> Optional[TicketRate]:
        """The rating to send for the current ticket, or None with :attr:`error` (text kept)."""
        self.rating, self.comment, self.error = rating, comment, ""
        if not 1 <= rating <= 5:
            self.error = self.word("pick_rating")
            return None
        problem = merchant_text_problem("comment", comment, min_len=0)
        if problem is not None:
            self.error = problem if self.lang == "en" else zh_first(problem)
            return None
        if not self.current:
            return None
        self.rated.append(self.current)
        self.awaiting = request_id
        return TicketRate(id=request_id, ticket_id=self.current, rating=rating, comment=comment)

    def new_request(self) -> None:
        self.screen = "ask"
        self.error = ""


def zh_first(problem: str) -> str:
    """``english / 中文`` (merchant_text_problem's form) as ``中文 / english``."""
    en, sep, zh = problem.partition(" / ")
    return f"{zh} / {en}" if sep else problem
