"""The issue-12 messages: help requests, tickets, ratings (docs/protocol.md#help-and-tickets)."""

from __future__ import annotations

from typing import Any

import pytest

from posassist.protocol import Codec
from posassist.protocol import messages as m
from posassist.protocol.errors import LocalProtocolError

CODEC = Codec()


def _help(**changes: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "t": "help.requested",
        "id": 1,
        "device_id": "dev-1",
        "category": "printer",
        "description": "打印机不出纸",
        "contact": "",
        "language": "zh-CN",
        "diagnostics": {},
    }
    wire.update(changes)
    return wire


BAD_HELP = [
    ("empty description", _help(description=""), "empty"),
    ("blank description", _help(description=" \n\t "), "empty"),
    ("description one past the limit", _help(description="纸" * 2001), None),
    ("100 KB description", _help(description="x" * 100_000), None),
    ("escape in description", _help(description="纸\x1b[2J"), None),
    ("NUL in description", _help(description="纸\x00"), None),
    ("right-to-left override", _help(description="纸\u202egnp.exe"), None),
    ("bidi isolate", _help(description="纸\u2067x"), None),
    ("unknown category", _help(category="coffee"), None),
    ("unknown language", _help(language="fr"), None),
    ("contact too long", _help(contact="1" * 33), None),
    ("contact with a newline", _help(contact="138\n0013"), None),
    ("raw report as diagnostics", _help(diagnostics={"sections": {"a": {"b": {"c": 1}}}}), None),
    ("diagnostics with bytes", _help(diagnostics={"raw": b"\x00"}), None),
]


@pytest.mark.parametrize(("what", "wire", "words"), BAD_HELP, ids=[b[0] for b in BAD_HELP])
def test_a_bad_help_request_can_be_neither_built_nor_decoded(
    what: str, wire: dict[str, Any], words: str | None
) -> None:
    fields = {k: v for k, v in wire.items() if k != "t"}
    with pytest.raises(LocalProtocolError) as built:
        m.HelpRequested(**fields)
    with pytest.raises(LocalProtocolError):
        m.HelpRequested.from_wire(wire)
    if words is not None:
        assert words in str(built.value)


def test_description_limits_are_exact_and_newlines_stay() -> None:
    at_limit = m.HelpRequested(
        **{k: v for k, v in _help(description="纸" * 2000).items() if k != "t"}
    )
    assert CODEC.decode(CODEC.encode(at_limit)) == at_limit
    lines = m.HelpRequested(
        id=1, device_id="d", category="other", description="第一行\n\t第二行 (ZWJ \u200d ok)"
    )
    assert "\n" in lines.description


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("x" * 2001, "2001 characters, at most 2000"),
        ("a\x07b", "control characters"),
        ("a\u202eb", "bidi"),
        ("a\u200fb", "bidi"),  # RLM: the issue's "right-to-left marks"
        ("a\u200eb", "bidi"),
        ("a\u061cb", "bidi"),
        ("a\u2028b", "control"),  # a line break in disguise
        ("\ufeffa", "control"),
        ("a\u200bb", "control"),
    ],
)
def test_merchant_text_problem_says_what_is_wrong_in_both_languages(text: str, words: str) -> None:
    problem = m.merchant_text_problem("description", text)
    assert problem is not None
    assert words in problem
    assert any("\u4e00" <= ch <= "\u9fff" for ch in problem)  # and in Chinese


def test_a_rating_outside_one_to_five_or_a_hostile_comment_is_refused() -> None:
    for rating in (0, 6, -1):
        with pytest.raises(LocalProtocolError):
            m.TicketRate(id=1, ticket_id="t", rating=rating)
    with pytest.raises(LocalProtocolError):
        m.TicketRate(id=1, ticket_id="t", rating=3, comment="x" * 2001)
    with pytest.raises(LocalProtocolError):
        m.TicketRate(id=1, ticket_id="t", rating=3, comment="\u202e")
    assert m.TicketRate(id=1, ticket_id="t", rating=1).comment == ""  # comment optional


@pytest.mark.parametrize(
    "code", ["", "abc", "k7q2-xm9p", "K7Q2 XM9P", "-K7Q2", "K7Q2-", "K" * 17, "K7Q2\x1b"]
)
def test_a_support_code_that_is_not_one_is_refused(code: str) -> None:
    with pytest.raises(LocalProtocolError):
        m.TicketUpdated(
            ticket_id="t",
            support_code=code,
            status="new",
            message_zh="",
            message_en="",
            updated_at=1.0,
        )


def _entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ticket_id": "t-1",
        "support_code": "K7Q2-XM9P",
        "status": "new",
        "message_zh": "",
        "message_en": "",
        "updated_at": 1.0,
        "technician": None,
        "response_due": None,
        "resolve_due": None,
    }
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    "entry",
    [
        {k: v for k, v in _entry().items() if k != "resolve_due"},
        _entry(extra=1),
        _entry(status="reported"),  # an old state name
        _entry(t="ticket.updated"),
        "t-1",
    ],
)
def test_a_ticket_list_entry_must_be_a_ticket_updated(entry: Any) -> None:
    with pytest.raises(LocalProtocolError):
        m.TicketList(id=1, tickets=(entry,))
    with pytest.raises(LocalProtocolError):
        m.TicketList.from_wire({"t": "ticket.list", "id": 1, "tickets": (entry,)})


def test_a_ticket_list_is_bounded() -> None:
    entries = tuple(_entry(ticket_id=f"t-{i}") for i in range(m.MAX_TICKET_LIST + 1))
    with pytest.raises(LocalProtocolError):
        m.TicketList(id=1, tickets=entries)
    assert len(m.TicketList(id=1, tickets=entries[:-1]).tickets) == m.MAX_TICKET_LIST


def test_ticket_states_are_the_issues() -> None:
    assert m.TICKET_STATUSES == (
        "new",
        "accepted",
        "in_progress",
        "waiting_merchant",
        "resolved",
        "closed",
        "reopened",
    )


def test_a_merchants_reply_is_merchant_text() -> None:
    for text in ("", "   ", "x" * 2001, "纸\u202e", "a\x1b[2Jb"):
        with pytest.raises(LocalProtocolError):
            m.TicketReply(id=1, ticket_id="t", text=text)
    reply = m.TicketReply(id=1, ticket_id="t", text="纸已装好\n可以打印了")
    assert CODEC.decode(CODEC.encode(reply)) == reply


def test_the_question_rides_only_when_asked_and_from_version_6() -> None:
    from posassist.protocol.states import SINCE_VERSION

    base = {
        "ticket_id": "t",
        "support_code": "K7Q2-XM9P",
        "status": "waiting_merchant",
        "message_zh": "技术员需要您的回复",
        "message_en": "needs an answer",
        "updated_at": 1.0,
    }
    plain = m.TicketUpdated(**base)
    assert "question" not in plain.to_wire()  # a version-5 peer gets the map it knows
    asked = m.TicketUpdated(**base, question="纸卷装好了吗?")
    assert asked.to_wire()["question"] == "纸卷装好了吗?"
    assert CODEC.decode(CODEC.encode(asked)) == asked
    with pytest.raises(LocalProtocolError):
        m.TicketUpdated(**base, question="\x1b[31m")
    assert SINCE_VERSION["ticket.reply"] == SINCE_VERSION["ticket.replied"] == 6
