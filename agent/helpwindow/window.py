"""``posassist-agent help``: the "获取帮助 / Get help" window (Tkinter, Python 3.8).

Big fonts and plain words for a cashier in a hurry; Simplified Chinese unless ``--lang en``. The
window shows what :class:`~.view.HelpView` says; the link to the agent runs in a thread with its
own event loop, and hands messages over through a queue the window polls (Tk is single-threaded).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
import tkinter as tk
from tkinter import font as tkfont
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .link import LinkError
from .linkclient import LinkClient
from .view import HelpView

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["HelpWindow", "LinkThread", "run_window"]

#: Font families tried in order for Chinese text (Linux, then Windows).
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Serif CJK SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "SimHei",
)
BIG, HUGE = 16, 30
POLL_MS = 100

log = logging.getLogger("posassist.agent")


#: What the merchant reads while the agent is away, and how often the window looks again.
NOT_RUNNING = (
    "收银助手服务没有运行, 正在重试… 如一直如此, 请重启电脑或致电客服 / "
    "the posassist agent is not running; retrying… if this lasts, restart the PC or phone support"
)
RECONNECTED = "已重新连接 / reconnected"
RETRY_MS = 3000


class LinkThread:
    """The link to the agent on a thread of its own: messages in through :attr:`inbox`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.client: Optional[LinkClient] = None
        self.ready = threading.Event()
        self.failure: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self, timeout: float = 10.0) -> Dict[str, Any]:
        """Connect; the agent's welcome. LinkError if the agent is not there or refuses us."""
        self.thread.start()
        if not self.ready.wait(timeout):
            raise LinkError("the agent did not answer / 收银助手服务无应答")
        if self.failure is not None:
            raise self.failure
        assert self.client is not None
        return self.client.welcome

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        try:
            self.client = await LinkClient.connect(self.data_dir)
        except LinkError as exc:
            self.failure = exc
            self.ready.set()
            return
        for msg in self.client.backlog:  # behind the welcome: the first things drawn
            self.inbox.put(msg)
        self.ready.set()
        try:
            while True:
                try:
                    msg = await self.client.receive()
                except LinkError as exc:
                    self.inbox.put(exc)
                    return
                self.inbox.put(msg)
        finally:
            await self.client.close()  # the agent went away, or we closed: release the socket

    def send(self, msg: Any) -> None:
        client = self.client
        if client is not None:
            asyncio.run_coroutine_threadsafe(client.send(msg), self.loop)

    def close(self) -> None:
        """Close the link; the thread ends when its reader sees the end."""
        client = self.client
        if client is not None and self.thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(client.close(), self.loop)
            try:
                future.result(2.0)
            except Exception:  # closing a link that broke already, or a loop that ended
                pass
        self.thread.join(5.0)


class HelpWindow:
    """The window's widgets, one frame per screen of the view-model."""

    def __init__(self, root: tk.Tk, view: HelpView, link: LinkThread) -> None:
        self.root = root
        self.view = view
        self.link = link
        self.ids = itertools.count(1)
        self.shown = ""
        self._retrying = False
        family = next((f for f in CJK_FONTS if f in tkfont.families(root)), "TkDefaultFont")
        self.font = tkfont.Font(root=root, family=family, size=BIG)
        self.bold = tkfont.Font(root=root, family=family, size=BIG, weight="bold")
        self.huge = tkfont.Font(root=root, family=family, size=HUGE, weight="bold")
        root.title(view.word("title"))
        root.geometry("860x760")
        root.configure(bg="white")
        self.frame = tk.Frame(root, bg="white", padx=24, pady=16)
        self.frame.pack(fill="both", expand=True)
        self.category = tk.StringVar(root, "")
        self.rating = tk.IntVar(root, 0)
        self.error = tk.Label(
            root, text="", fg="#b00020", bg="white", font=self.bold, wraplength=800
        )
        self.error.pack(side="bottom", fill="x", pady=8)
        # widgets a test (or the keyboard) drives; made by each screen
        self.category_buttons: List[tk.Radiobutton] = []
        self.description: Optional[tk.Text] = None
        self.contact: Optional[tk.Entry] = None
        self.send_button: Optional[tk.Button] = None
        self.approve_button: Optional[tk.Button] = None
        self.deny_button: Optional[tk.Button] = None
        self.star_buttons: List[tk.Radiobutton] = []
        self.comment: Optional[tk.Text] = None
        self.rate_button: Optional[tk.Button] = None
        self.countdown: Optional[tk.Label] = None
        self.summary: Optional[tk.Label] = None
        self.reply_box: Optional[tk.Text] = None
        self.reply_button: Optional[tk.Button] = None
        self.link.send({"t": "link.diagnose", "id": next(self.ids)})
        self.refresh(force=True)

    # --- the loop ----------------------------------------------------------------------------

    def poll(self) -> None:
        """Take what the link brought, then tick the countdowns; again in POLL_MS."""
        self.pump()
        self.root.after(POLL_MS, self.poll)

    def pump(self) -> None:
        while True:
            try:
                msg = self.link.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(msg, LinkError):
                self.lost(msg)
            else:
                self.view.receive(msg, time.monotonic())
        if self.view.screen == "consent" and self.view.consent_left(time.monotonic()) == 0:
            self.view.answer(False, time.monotonic())  # time is up: the agent said no already
            self.view.error = self.view.word("consent_expired")
        self.refresh()

    def lost(self, why: BaseException) -> None:
        """The agent is not there (not running, or restarting): say so in plain words and try
        again every few seconds; the window stays open and keeps what was typed."""
        log.info("help window: no agent link: %s", why)
        self.view.error = NOT_RUNNING
        self.view.relay_connected = False
        if not self._retrying:
            self._retrying = True
            self.root.after(RETRY_MS, self.reconnect)
        self.refresh()

    def reconnect(self) -> None:
        self._retrying = False
        link = LinkThread(self.link.data_dir)
        try:
            welcome = link.start(timeout=3.0)
        except LinkError as exc:
            self.lost(exc)
            return
        old, self.link = self.link, link
        old.close()
        self.view.receive(welcome, time.monotonic())
        self.view.error, self.view.notice = "", RECONNECTED
        self.link.send({"t": "link.diagnose", "id": next(self.ids)})
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        view = self.view
        self.error.configure(
            text=view.error or view.notice, fg="#b00020" if view.error else "#1a7f37"
        )
        key = f"{view.screen}:{view.current}:{view.tickets.get(view.current)}"
        key += f":{view.findings is None}:{len(view.findings or [])}:{view.relay_connected}"
        if key != self.shown or force:
            self.shown = key
            self._keep_form()
            for child in self.frame.winfo_children():
                child.destroy()
            getattr(self, "_screen_" + view.screen)()
        self._tick()

    def _tick(self) -> None:
        view = self.view
        if self.countdown is None or not self.countdown.winfo_exists():
            return
        if view.screen == "consent":
            left = view.consent_left(time.monotonic())
            self.countdown.configure(
                text=f"{view.word('answer_in')}: {left} {view.word('seconds')}"
            )
        elif view.screen == "ticket":
            entry = view.tickets.get(view.current) or {}
            due = entry.get("response_due")
            if due is not None and entry.get("status") in ("new", "reopened"):  # not yet answered
                self.countdown.configure(
                    text=f"{view.word('respond_by')}: {view.countdown(due, time.time())}"
                )

    def _keep_form(self) -> None:
        """What was typed survives a redraw (a refused send keeps the text)."""
        if self.description is not None and self.description.winfo_exists():
            self.view.description = self.description.get("1.0", "end-1c")
        if self.contact is not None and self.contact.winfo_exists():
            self.view.contact = self.contact.get()
        if self.reply_box is not None and self.reply_box.winfo_exists():
            self.view.reply_text = self.reply_box.get("1.0", "end-1c")

    def _edited(self, _event: object) -> None:
        """The merchant changed the description: the last refusal no longer applies."""
        if self.description is not None and self.description.edit_modified():
            self.description.edit_modified(False)
            self.view.error = ""
            self.error.configure(text="")

    def _label(self, text: str, font: Optional[tkfont.Font] = None, **kw: Any) -> tk.Label:
        label = tk.Label(
            self.frame,
            text=text,
            font=font or self.font,
            bg="white",
            anchor="w",
            justify="left",
            wraplength=800,
            **kw,
        )
        label.pack(fill="x", pady=2)
        return label

    def _button(self, parent: tk.Widget, text: str, command: Any, color: str) -> tk.Button:
        return tk.Button(
            parent,
            text=text,
            command=command,
            font=self.bold,
            bg=color,
            fg="white",
            activebackground=color,
            padx=24,
            pady=8,
        )

    # --- screens -----------------------------------------------------------------------------

    def _screen_ask(self) -> None:
        view = self.view
        self._label(view.word("title"), self.huge)
        if not view.relay_connected:
            self._label(view.word("offline"), fg="#b00020")
        self._label(view.word("category"), self.bold)
        grid = tk.Frame(self.frame, bg="white")
        grid.pack(fill="x")
        self.category.set(view.category)
        self.category_buttons = []
        for i, (key, label) in enumerate(view.categories()):
            button = tk.Radiobutton(
                grid,
                text=label,
                value=key,
                variable=self.category,
                font=self.font,
                indicatoron=False,
                width=10,
                pady=6,
                bg="#eef3fb",
                selectcolor="#9ec5fe",
            )
            button.grid(row=i // 3, column=i % 3, padx=4, pady=4, sticky="we")
            self.category_buttons.append(button)
        self._label(view.word("description"), self.bold)
        self.description = tk.Text(self.frame, height=3, font=self.font, wrap="word")
        self.description.insert("1.0", view.description)
        self.description.edit_modified(False)
        self.description.bind("<<Modified>>", self._edited)
        self.description.pack(fill="x")
        self._label(view.word("contact"), self.bold)
        self.contact = tk.Entry(self.frame, font=self.font)
        self.contact.insert(0, view.contact)
        self.contact.pack(fill="x")
        self.summary = self._label("\n".join(view.summary_lines()), fg="#444444")
        self.send_button = self._button(self.frame, view.word("send"), self.send, "#1f6feb")
        self.send_button.pack(pady=10)

    def _screen_ticket(self) -> None:
        view = self.view
        rows = view.ticket_lines(time.time())
        if rows:
            self._label(rows[0][0], self.bold)
            self._label(rows[0][1], self.huge, fg="#1f6feb")
        for label, value in rows[1:]:
            if label == view.word("respond_by"):
                continue
            self._label(f"{label}: {value}" if label else value)
        self.countdown = self._label("", self.bold)
        if view.can_reply:  # the merchant answers the technician here, not only by phone
            self._label(view.word("reply"), self.bold)
            self.reply_box = tk.Text(self.frame, height=2, font=self.font, wrap="word")
            self.reply_box.insert("1.0", view.reply_text)
            self.reply_box.pack(fill="x")
            self.reply_button = self._button(
                self.frame, view.word("reply"), self.send_reply, "#1f6feb"
            )
            self.reply_button.pack(pady=6)
        self._button(self.frame, view.word("new_request"), self.new_request, "#57606a").pack(
            pady=10
        )

    def _screen_consent(self) -> None:
        view = self.view
        for label, value in view.consent_lines():
            self._label(f"{label}: {value}" if label else value, self.bold if not label else None)
        self.countdown = self._label("", self.bold, fg="#b35900")
        row = tk.Frame(self.frame, bg="white")
        row.pack(pady=12)
        self.approve_button = self._button(row, view.word("approve"), self.approve, "#1a7f37")
        self.approve_button.pack(side="left", padx=12)
        self.deny_button = self._button(row, view.word("deny"), self.deny, "#cf222e")
        self.deny_button.pack(side="left", padx=12)

    def _screen_rate(self) -> None:
        view = self.view
        self._label(view.word("rate_title"), self.huge)
        row = tk.Frame(self.frame, bg="white")
        row.pack(pady=8)
        self.rating.set(view.rating)
        self.star_buttons = []
        for n in range(1, 6):
            button = tk.Radiobutton(
                row,
                text="★" * n,
                value=n,
                variable=self.rating,
                font=self.bold,
                indicatoron=False,
                padx=8,
                pady=6,
                bg="#fff8e1",
                selectcolor="#ffd54f",
            )
            button.pack(side="left", padx=4)
            self.star_buttons.append(button)
        self._label(view.word("comment"), self.bold)
        self.comment = tk.Text(self.frame, height=3, font=self.font, wrap="word")
        self.comment.insert("1.0", view.comment)
        self.comment.pack(fill="x")
        self.rate_button = self._button(self.frame, view.word("rate"), self.rate, "#1f6feb")
        self.rate_button.pack(pady=10)

    def _screen_done(self) -> None:
        self._label(self.view.word("thanks"), self.huge)
        self._button(self.frame, self.view.word("new_request"), self.new_request, "#57606a").pack(
            pady=10
        )

    # --- what the merchant does --------------------------------------------------------------

    def send(self) -> None:
        assert self.description is not None
        assert self.contact is not None
        msg = self.view.submit(
            next(self.ids),
            self.category.get(),
            self.description.get("1.0", "end-1c"),
            self.contact.get(),
        )
        if msg is not None:
            self.link.send(msg)
            self.view.error = self.view.word("sending")
        self.refresh()

    def approve(self) -> None:
        self._answer(True)

    def deny(self) -> None:
        self._answer(False)

    def _answer(self, granted: bool) -> None:
        answer = self.view.answer(granted, time.monotonic())
        if answer is not None:
            self.link.send(answer)
        self.refresh()

    def rate(self) -> None:
        assert self.comment is not None
        msg = self.view.rate(next(self.ids), self.rating.get(), self.comment.get("1.0", "end-1c"))
        if msg is not None:
            self.link.send(msg)
        self.refresh()

    def send_reply(self) -> None:
        assert self.reply_box is not None
        msg = self.view.reply(next(self.ids), self.reply_box.get("1.0", "end-1c"))
        if msg is not None:
            self.link.send(msg)
        self.refresh(force=True)

    def new_request(self) -> None:
        self.view.new_request()
        self.view.findings = None  # a fresh look at the till for the new request
        self.link.send({"t": "link.diagnose", "id": next(self.ids)})
        self.refresh(force=True)


def run_window(data_dir: Path, lang: str) -> int:
    """Open the window until the merchant closes it; the exit status."""
    link = LinkThread(data_dir)
    view = HelpView(lang)
    failed: Optional[LinkError] = None
    try:
        view.receive(link.start(), time.monotonic())
    except LinkError as exc:  # a window all the same: the merchant clicked, and must read why
        failed = exc
    root = tk.Tk()
    window = HelpWindow(root, view, link)
    if failed is not None:
        window.lost(failed)
    window.poll()
    try:
        root.mainloop()
    finally:
        link.close()
    return 0
