"""``posassist-agent help --text``: the help window in a terminal, one line in, lines out.

Python 3.8. The same view-model as the Tk window (:mod:`.view`); the link runs on this process's
event loop and stdin is read by a thread, so updates and consent questions show while the
merchant types. Every line it prints goes through ``printable``; ``make demo`` drives it.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, TextIO

from posassist.protocol.messages import merchant_text_problem
from posassist.protocol.text import printable

from .link import LinkError
from .linkclient import LinkClient
from .view import HelpView, zh_first

if TYPE_CHECKING:
    from pathlib import Path

    from .link import LinkMessage

__all__ = ["run_text"]

#: What the merchant types on each screen besides the answers asked for.
QUIT = ("q", "quit", "退出")


class TextHelp:
    """The terminal face of :class:`HelpView`: prompts by screen, answers by line."""

    def __init__(
        self,
        view: HelpView,
        out: TextIO,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self.out = out
        self.clock = clock
        self.wall = wall
        self.ids = itertools.count(1)
        self.step = 0  # on the ask screen: 0 category, 1 description, 2 phone
        self.form: List[str] = ["", "", ""]
        self.shown = ""
        self.rating = 0
        self.replying = False  # the next line is the merchant's answer to the technician

    def say(self, text: str) -> None:
        self.out.write(printable(text) + "\n")
        self.out.flush()

    def render(self, force: bool = False) -> None:
        """Print the screen when it changed (or ``force``), then its prompt."""
        view = self.view
        if view.screen == "ask":  # redrawn for news: the summary, the relay coming or going
            key = f"ask:{view.findings is None}:{view.relay_connected}"
        elif view.screen == "ticket":  # and each change of the ticket shown
            key = f"ticket:{view.current}:{view.tickets.get(view.current)}"
        else:
            key = f"{view.screen}:{view.current}"
        if view.error:
            self.say("! " + view.error)
            view.error = ""
        if view.notice:
            self.say(view.notice)
            view.notice = ""
        if key == self.shown and not force:
            return
        self.shown = key
        if view.screen == "ask":
            self.say(f"== {view.word('title')} ==")
            if not view.relay_connected:
                self.say("! " + view.word("offline"))
            for line in view.summary_lines():
                self.say(line)
            self.prompt()
        elif view.screen == "ticket":
            self.say(f"== {view.word('support_code')} ==")
            for label, value in view.ticket_lines(self.wall()):
                self.say(f"{label}: {value}" if label else value)
            self.say(self._keys())
        elif view.screen == "consent":
            for label, value in view.consent_lines():
                self.say(f"{label}: {value}" if label else value)
            left = view.consent_left(self.clock())
            self.say(
                f"{view.word('answer_in')} ({left} {view.word('seconds')}): "
                f"y = {view.word('approve')}, n = {view.word('deny')}"
            )
        elif view.screen == "rate":
            self.say(f"== {view.word('rate_title')} ==")
            entry = view.tickets.get(view.current) or {}
            if entry:
                self.say(f"{view.word('support_code')}: {entry.get('support_code', '')}")
            self.say(view.word("pick_rating") + ":")
        elif view.screen == "done":
            self.say(view.word("thanks"))
            self.say("(n = " + view.word("new_request") + ", q = 退出/quit)")

    def _keys(self) -> str:
        """What can be typed on the ticket screen."""
        view = self.view
        keys = [f"n = {view.word('new_request')}", "q = 退出/quit"]
        if view.can_reply:
            keys.insert(0, f"r = {view.word('reply')}")
        return "(" + ", ".join(keys) + ")"

    def prompt(self) -> None:
        view = self.view
        if self.step == 0:
            choices = "  ".join(
                f"{i}) {label}" for i, (_, label) in enumerate(view.categories(), 1)
            )
            self.say(f"{view.word('category')} {choices}")
        elif self.step == 1:
            kept = f" [{self.form[1]}]" if self.form[1] else ""
            self.say(view.word("description") + kept + ":")
        else:
            self.say(view.word("contact") + ":")

    def line(self, text: str) -> Optional[LinkMessage]:
        """One line the merchant typed (not ``q``): the message to send, if any."""
        view = self.view
        text = text.rstrip("\r\n")
        if view.screen == "consent":
            if text.strip().lower() not in ("y", "n", "是", "否"):
                self.render(force=True)
                return None
            answer = view.answer(text.strip().lower() in ("y", "是"), self.clock())
            self.render(force=True)
            return answer
        if self.replying:
            self.replying = False
            msg = view.reply(next(self.ids), text.replace("\\n", "\n"))
            self.render(force=True)
            return msg
        if view.screen in ("ticket", "done"):
            key = text.strip().lower()
            if key == "n":  # a new request, with a fresh look at the till and an empty form
                view.new_request()
                view.findings = None
                self.step = 0
                self.form = ["", "", ""]
                self.render(force=True)
                return {"t": "link.diagnose", "id": next(self.ids)}
            elif key == "r" and view.screen == "ticket" and view.can_reply:
                self.replying = True
                self.say(view.word("reply_prompt") + ":")
            return None
        if view.screen == "rate":
            return self._rate_line(text)
        return self._ask_line(text)

    def _ask_line(self, text: str) -> Optional[LinkMessage]:
        view = self.view
        if self.step == 0:
            keys = [key for key, _ in view.categories()]
            if text.strip().isdigit() and 1 <= int(text) <= len(keys):
                self.form[0] = keys[int(text) - 1]
                self.step = 1
            else:
                view.error = view.word("pick_category")
            self.render()
            self.prompt()
            return None
        if self.step == 1:
            if text or not self.form[1]:
                self.form[1] = text.replace("\\n", "\n")  # "\n" typed starts a new line
            else:  # Enter on what was kept: without what could not be sent (invisible marks)
                self.form[1] = printable(self.form[1])
            problem = merchant_text_problem("description", self.form[1])
            if problem is not None:  # said now, not after the phone number
                view.error = zh_first(problem)
                self.render()
                self.prompt()
                return None
            self.step = 2
            self.prompt()
            return None
        self.form[2] = text
        msg = view.submit(next(self.ids), *self.form)
        if msg is None:  # refused: say why, ask that field again, keep what was typed
            bad_phone = view.error == view.word("bad_contact")
            self.step = 2 if bad_phone else 1 if view.category else 0
            self.render()
            self.prompt()
            return None
        self.say(view.word("sending"))
        self.step = 0
        return msg

    def _rate_line(self, text: str) -> Optional[LinkMessage]:
        view = self.view
        if not self.rating:
            if text.strip() in ("1", "2", "3", "4", "5"):
                self.rating = int(text)
                self.say(view.word("comment") + ":")
            else:
                self.say(view.word("pick_rating") + ":")
            return None
        msg = view.rate(next(self.ids), self.rating, text)
        if msg is None:
            self.render()
            self.say(view.word("comment") + ":")
        else:
            self.rating = 0
        return msg


async def _finish(
    client: LinkClient, view: HelpView, face: TextHelp, incoming: asyncio.Future[Any]
) -> int:
    """Quitting (or the input ended): first the answer to a request still in flight, so what
    was sent is never left unconfirmed on screen. ``incoming``: the pending receive."""
    deadline = time.monotonic() + 30.0
    while view.awaiting is not None:
        left = deadline - time.monotonic()
        done, _ = await asyncio.wait({incoming}, timeout=max(0.0, left))
        if not done or incoming.exception() is not None:
            break
        view.receive(incoming.result(), face.clock())
        face.render()
        incoming = asyncio.ensure_future(client.receive())
    incoming.cancel()
    return 0


RECONNECTING = "正在重新连接收银助手服务… (q 退出) / reconnecting to the agent… (q to quit)"
RECONNECTED = "已重新连接 / reconnected"
#: How long the window waits for the agent to come back, and how often it tries.
RECONNECT_FOR = 600.0
RECONNECT_EVERY = 2.0


async def _reconnect(data_dir: Path, typed: asyncio.Future[str]) -> Optional[LinkClient]:
    """The link again, once the agent is back; None if the merchant quits (or it never is)."""
    deadline = time.monotonic() + RECONNECT_FOR
    while time.monotonic() < deadline:
        if typed.done() and (typed.result() == "" or typed.result().strip().lower() in QUIT):
            return None
        try:
            return await LinkClient.connect(data_dir)
        except LinkError:
            await asyncio.wait({typed}, timeout=RECONNECT_EVERY)
    return None


def _read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str], source: TextIO) -> None:
    for line in iter(source.readline, ""):
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, "")  # end of input


def _opened(view: HelpView, face: TextHelp, client: LinkClient) -> None:
    """A link just made: the welcome and what came right behind it (the open tickets, a
    consent question), before anything is drawn: a reopened window opens on its ticket."""
    for msg in (client.welcome, *client.backlog):
        view.receive(msg, face.clock())


async def run_text(
    data_dir: Path, lang: str, source: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    """The text help window until ``q`` or the end of input; the exit status."""
    view = HelpView(lang)
    face = TextHelp(view, out)
    client = await LinkClient.connect(data_dir)
    _opened(view, face, client)
    await client.send({"t": "link.diagnose", "id": next(face.ids)})
    lines: asyncio.Queue[str] = asyncio.Queue()
    reader = threading.Thread(
        target=_read_lines, args=(asyncio.get_event_loop(), lines, source), daemon=True
    )
    reader.start()
    face.render(force=True)
    incoming = asyncio.ensure_future(client.receive())
    typed = asyncio.ensure_future(lines.get())
    try:
        while True:
            done, _ = await asyncio.wait(
                {incoming, typed}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
            )
            if incoming in done:
                try:
                    msg = incoming.result()
                except LinkError as exc:  # the agent restarted, or stopped: wait for it
                    face.say(f"! {exc}")
                    face.say(RECONNECTING)
                    await client.close()
                    found = await _reconnect(data_dir, typed)
                    if found is None:
                        return 1
                    client = found
                    _opened(view, face, client)
                    face.say(RECONNECTED)
                    face.render(force=True)
                    incoming = asyncio.ensure_future(client.receive())
                    if typed.done():  # typed while waiting: read again
                        typed = asyncio.ensure_future(lines.get())
                    continue
                view.receive(msg, face.clock())
                face.render()
                incoming = asyncio.ensure_future(client.receive())
            if typed in done:
                text = typed.result()
                if text == "" or text.strip().lower() in QUIT:  # end of input, or "q"
                    return await _finish(client, view, face, incoming)
                sent = face.line(text)
                if sent is not None:
                    await client.send(sent)
                typed = asyncio.ensure_future(lines.get())
            if view.screen == "consent" and view.consent_left(face.clock()) == 0:
                view.answer(False, face.clock())  # time is up: the agent said no already
                view.error = view.word("consent_expired")
                face.render(force=True)
    finally:
        for task in (incoming, typed):
            task.cancel()
        await client.close()
