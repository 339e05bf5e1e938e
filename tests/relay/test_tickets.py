"""Tickets over the real relay (aiohttp server, real websockets, SQLite): the agent's help
request, the technicians' API, the merchant's report, and every bad input of issue 12 that
reaches the relay. Storage-level races on both databases are in test_ticket_storage.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from aiohttp import ClientSession

from posassist.protocol import messages as m
from posassist.relay.handlers.tickets import (
    MAX_OPEN_PER_DEVICE,
    MISS_BURST,
    close_resolved,
    sweep_breaches,
)
from posassist.relay.hours import business_seconds, parse_hours
from posassist.relay.passwords import hash_password
from posassist.relay.storage import Role, Scope, ScopeKind
from posassist.relay.tickets import CODE_ALPHABET, normalise_code
from tests.relay.harness import PASSWORD, Agent, Relay, close_code, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

_HASH = hash_password(PASSWORD)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    storage = relay.state.storage
    now = relay.clock()
    other_org = (await storage.create_organisation("Other Service Co", now=now)).id
    other_merchant = (await storage.create_merchant(other_org, "Tea Shop", now=now)).id
    users = {
        "tech2": (Role.TECHNICIAN, Scope(ScopeKind.STORE, relay.store)),
        "boss": (Role.MERCHANT, Scope(ScopeKind.MERCHANT, relay.merchant)),
        "tea.boss": (Role.MERCHANT, Scope(ScopeKind.MERCHANT, other_merchant)),
    }
    for name, (role, scope) in users.items():
        await storage.create_user(name, _HASH, role, scope, now=now)
        status, body = await relay.post("/v1/login", {"username": name, "password": PASSWORD})
        assert status == 200, body
        relay.tokens[name] = str(body["token"])
    yield relay
    await relay.server.close()


async def call(
    relay: Relay, method: str, path: str, user: str, body: object = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {relay.tokens[user]}"}
    async with (
        ClientSession() as http,
        http.request(method, relay.http + path, json=body, headers=headers) as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def sign_in_again(relay: Relay, *users: str) -> None:
    for name in users:
        status, body = await relay.post("/v1/login", {"username": name, "password": PASSWORD})
        assert status == 200, body
        relay.tokens[name] = str(body["token"])


def help_request(device_id: str, **changes: Any) -> m.HelpRequested:
    fields: dict[str, Any] = {
        "id": 1,
        "device_id": device_id,
        "category": "printer",
        "description": "打印机不出纸",
        "contact": "13800138000",
        "diagnostics": {
            "findings": ({"code": "printer.paper_out", "severity": "critical", "zh": "缺纸"},)
        },
    }
    fields.update(changes)
    return m.HelpRequested(**fields)


async def ask_help(agent: Agent, **changes: Any) -> m.TicketOpened:
    await agent.reply(help_request(agent.device_id, **changes))
    (answer,) = await agent.next()
    assert isinstance(answer, m.TicketOpened), answer
    return answer


async def audit(relay: Relay) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (r.action, str(r.outcome), r.target, dict(r.detail))
        async for r in relay.state.storage.records()
    ]


# --- the agent's side ----------------------------------------------------------------------------


async def test_help_request_opens_a_ticket_a_technician_sees_accepts_and_resolves(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
        assert opened.status == "new"
        assert normalise_code(opened.support_code) == opened.support_code
        status, listed = await call(relay, "GET", "/v1/tickets", "tech")
        assert status == 200
        (row,) = listed["tickets"]
        assert (row["code"], row["device_id"], row["channel"]) == (
            opened.support_code,
            device_id,
            "agent",
        )
        assert row["description"] == "打印机不出纸"
        assert row["local"]["created_at"].endswith("+08:00")  # the store's zone (Shanghai)

        status, accepted = await call(
            relay, "POST", f"/v1/tickets/{opened.support_code}/accept", "tech"
        )
        assert status == 200, accepted
        assert (accepted["status"], accepted["technician"]) == ("accepted", "tech")
        (pushed,) = await agent.next()
        assert isinstance(pushed, m.TicketUpdated)
        assert (pushed.status, pushed.technician) == ("accepted", "tech")
        assert "tech" in pushed.message_zh

        code = opened.support_code.lower().replace("-", "")  # read out on the phone, typed loosely
        status, _ = await call(relay, "POST", f"/v1/tickets/{code}/note", "tech", {"text": "换纸"})
        assert status == 200
        status, resolved = await call(
            relay, "POST", f"/v1/tickets/{opened.support_code}/resolve", "tech", {"text": "好了"}
        )
        assert resolved["status"] == "resolved"
        (pushed,) = await agent.next()
        assert isinstance(pushed, m.TicketUpdated)
        assert pushed.status == "resolved"

        await agent.reply(m.TicketRate(id=2, ticket_id=opened.ticket_id, rating=5, comment="快"))
        answers = await agent.next()
        assert isinstance(answers[0], m.TicketRated)
        status, shown = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "tech")
        assert (shown["status"], shown["rating"], shown["rating_comment"]) == ("closed", 5, "快")
        kinds = [e["kind"] for e in shown["events"]]
        assert kinds == ["opened", "accepted", "note", "resolved", "rated"]
        assert all(isinstance(e["audit_seq"], int) for e in shown["events"])
    actions = [a for a, *_ in await audit(relay) if a.startswith("ticket.")]
    assert actions == [
        "ticket.open",
        "ticket.accept",
        "ticket.note",
        "ticket.resolve",
        "ticket.rate",
    ]


async def test_ticket_query_lists_the_devices_open_and_recent_tickets_only(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    other_id, other_key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Agent(relay, other_id, other_key) as other:
        first = await ask_help(agent)
        second = await ask_help(agent, category="network", description="网络断了")
        await ask_help(other)
        await agent.reply(m.TicketQuery(id=3))
        (listed,) = await agent.next()
        assert isinstance(listed, m.TicketList)
        assert {t["support_code"] for t in listed.tickets} == {
            first.support_code,
            second.support_code,
        }
        # resolved 8 days ago: no longer listed; still open: listed however old
        await call(relay, "POST", f"/v1/tickets/{first.support_code}/accept", "tech")
        await call(relay, "POST", f"/v1/tickets/{first.support_code}/resolve", "tech")
        await agent.next()
        await agent.next()
        relay.clock.offset += 8 * 86400
        await agent.reply(m.TicketQuery(id=4))
        (listed,) = await agent.next()
        assert isinstance(listed, m.TicketList)
        assert [t["support_code"] for t in listed.tickets] == [second.support_code]


async def test_the_same_request_sent_again_gets_the_same_ticket(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        first = await ask_help(agent)
        again = await ask_help(agent)  # its answer was lost, or "send" was pressed twice
        assert (again.ticket_id, again.support_code) == (first.ticket_id, first.support_code)
        other = await ask_help(agent, category="scanner")  # another problem: another ticket
        assert other.ticket_id != first.ticket_id
        relay.clock.offset += 16 * 60  # much later, the same words: a new request
        later = await ask_help(agent)
        assert later.ticket_id != first.ticket_id
    status, listed = await call(relay, "GET", "/v1/tickets", "tech")
    assert status == 200
    assert len(listed["tickets"]) == 3
    actions = [a for a, *_ in await audit(relay) if a.startswith("ticket.open")]
    assert actions == ["ticket.open", "ticket.open.repeat", "ticket.open", "ticket.open"]


async def test_a_device_can_rate_only_its_own_resolved_ticket(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    other_id, other_key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Agent(relay, other_id, other_key) as other:
        opened = await ask_help(agent)
        await other.reply(m.TicketRate(id=5, ticket_id=opened.ticket_id, rating=1))
        (answer,) = await other.next()
        assert isinstance(answer, m.ErrorReply)
        assert answer.code == "not_found"  # the same as a ticket that does not exist
        await agent.reply(m.TicketRate(id=6, ticket_id=opened.ticket_id, rating=1))
        (answer,) = await agent.next()
        assert isinstance(answer, m.ErrorReply)
        assert answer.code == "not_resolved"
    _status, shown = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "tech")
    assert (shown["status"], shown["rating"]) == ("new", None)  # nothing changed
    refused = [(a, d["reason"]) for a, o, _, d in await audit(relay) if o == "refused"]
    assert refused == [("ticket.rate", "unknown ticket"), ("ticket.rate", "not resolved")]


# --- bad input at the relay ----------------------------------------------------------------------


def _raw_help(device_id: str, description: str) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        {
            "t": "help.requested",
            "id": 7,
            "device_id": device_id,
            "category": "printer",
            "description": description,
            "contact": "",
            "language": "zh-CN",
            "diagnostics": {},
        }
    )


@pytest.mark.parametrize(
    "description",
    ["", "   \n ", "纸" * 2001, "x" * 100_000, "纸\x1b[2J卡住", "纸\u202egnp.exe", "a\x00b"],
    ids=["empty", "blank", "2001", "100KB", "escape", "rtl-override", "nul"],
)
async def test_a_bad_description_is_refused_audited_and_loses_nothing(
    relay: Relay, description: str
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        kept = await ask_help(agent)
        assert agent.ws is not None
        await agent.ws.send(_raw_help(device_id, description))
        assert await close_code(agent.ws) == 1007  # InvalidMessage: the agent's bug, named
    _status, listed = await call(relay, "GET", "/v1/tickets", "tech")
    assert [t["code"] for t in listed["tickets"]] == [kept.support_code]  # nothing new, none lost
    refusals = [d for a, o, _, d in await audit(relay) if a == "agent.message" and o == "refused"]
    assert refusals == [
        {
            "reason": "invalid message",
            "close_code": 1007,
            "peer": "127.0.0.1",
            "message": "help.requested",
        }
    ]
    async with Agent(relay, device_id, key) as agent:  # it comes back and finds its ticket
        await agent.reply(m.TicketQuery(id=1))
        (listed_again,) = await agent.next()
        assert isinstance(listed_again, m.TicketList)
        assert [t["support_code"] for t in listed_again.tickets] == [kept.support_code]


async def _updated(agent: Agent) -> m.TicketUpdated:
    (pushed,) = await agent.next()
    assert isinstance(pushed, m.TicketUpdated), pushed
    return pushed


async def test_the_merchant_reads_the_technicians_question_and_answers_from_the_till(
    relay: Relay,
) -> None:
    """README walk: "waiting for the merchant" was a dead end: the till saw neither the
    question nor a way to answer. The question now rides with the update (version 6) and the
    merchant's reply puts the ticket back in work, its clock running again."""
    status, _ = await call(
        relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "admin", {"resolve_seconds": 7200}
    )
    assert status == 200
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
        code = opened.support_code
        await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
        assert (await _updated(agent)).status == "accepted"
        ask = {"text": "纸卷装好了吗?\n装好后请告诉我们", "state": "waiting_merchant"}
        await call(relay, "POST", f"/v1/tickets/{code}/note", "tech", ask)
        asked = await _updated(agent)
        assert (asked.status, asked.question) == ("waiting_merchant", ask["text"])
        await agent.reply(m.TicketQuery(id=2))  # a window opened later reads it too
        (listed,) = await agent.next()
        assert isinstance(listed, m.TicketList)
        assert listed.tickets[0]["question"] == ask["text"]

        await agent.reply(m.TicketReply(id=3, ticket_id=opened.ticket_id, text="装好了\n可以打印"))
        answers = await agent.next()
        assert isinstance(answers[0], m.TicketReplied)
        assert answers[0].id == 3
        moved = answers[1] if len(answers) > 1 else await _updated(agent)
        assert isinstance(moved, m.TicketUpdated)
        assert (moved.status, moved.question) == ("in_progress", None)
        _, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
        assert (shown["status"], shown["sla_paused"]) == ("in_progress", False)
        assert shown["events"][-1]["actor"] == f"device:{device_id}"
        assert (shown["events"][-1]["kind"], shown["events"][-1]["text"]) == (
            "reply",
            "装好了\n可以打印",
        )
        # a second word while it is in work is a note; nothing moves
        await agent.reply(m.TicketReply(id=4, ticket_id=opened.ticket_id, text="谢谢"))
        assert isinstance((await agent.next())[0], m.TicketReplied)
        await call(relay, "POST", f"/v1/tickets/{code}/resolve", "tech")
        assert (await _updated(agent)).status == "resolved"
        await agent.reply(m.TicketReply(id=5, ticket_id=opened.ticket_id, text="还有问题"))
        (refused,) = await agent.next()
        assert isinstance(refused, m.ErrorReply)
        assert (refused.id, refused.code) == (5, "not_open")

    other_device, other_key = await relay.enrol()
    async with Agent(relay, other_device, other_key) as stranger:
        await stranger.reply(m.TicketReply(id=1, ticket_id=opened.ticket_id, text="我来回答"))
        (refused,) = await stranger.next()
        assert isinstance(refused, m.ErrorReply)
        assert refused.code == "not_found"
        assert stranger.ws is not None
        hostile = {"t": "ticket.reply", "id": 2, "ticket_id": opened.ticket_id, "text": "a\u200fb"}
        await stranger.ws.send(msgpack.packb(hostile))
        assert await close_code(stranger.ws) == 1007
    _status, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
    texts = [e["text"] for e in shown["events"]]
    assert "我来回答" not in texts
    assert "a\u200fb" not in texts
    refused_replies = [
        d for a, o, _, d in await audit(relay) if a == "ticket.reply" and o == "refused"
    ]
    assert {"reason": "unknown ticket"} in refused_replies


async def test_a_version_5_till_gets_no_question_and_cannot_reply(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key, versions=(1, 2, 3, 4, 5)) as agent:
        opened = await ask_help(agent)
        code = opened.support_code
        await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
        await _updated(agent)
        ask = {"text": "纸卷装好了吗?", "state": "waiting_merchant"}
        await call(relay, "POST", f"/v1/tickets/{code}/note", "tech", ask)
        asked = await _updated(agent)
        assert (asked.status, asked.question) == ("waiting_merchant", None)
        assert agent.session is not None
        from posassist.protocol.errors import LocalProtocolError

        with pytest.raises(LocalProtocolError):  # the session refuses a v6 tag in a v5 session
            agent.session.send(m.TicketReply(id=3, ticket_id=opened.ticket_id, text="好"))


async def test_a_description_of_2000_characters_with_newlines_is_kept_whole(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    text = ("第一行\n\t" + "纸" * 2000)[:2000]
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent, description=text)
    _status, shown = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "tech")
    assert shown["description"] == text


async def test_help_for_another_device_is_refused(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    other_id, _ = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(help_request(other_id))
        (answer,) = await agent.next()
        assert isinstance(answer, m.ErrorReply)
        assert answer.code == "forbidden"
    _status, listed = await call(relay, "GET", "/v1/tickets", "tech")
    assert listed["tickets"] == []


async def test_a_till_with_too_many_open_tickets_is_told_so(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        for i in range(MAX_OPEN_PER_DEVICE):
            await ask_help(agent, description=f"问题 {i}")
        await agent.reply(help_request(device_id))
        (answer,) = await agent.next()
        assert isinstance(answer, m.ErrorReply)
        assert answer.code == "too_many_tickets"
        assert "个未完成的工单" in answer.message
    _status, listed = await call(relay, "GET", "/v1/tickets", "tech")
    assert len(listed["tickets"]) == MAX_OPEN_PER_DEVICE


async def test_unknown_guessed_and_foreign_codes_get_one_answer_and_are_rate_limited(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    guessed = "2345-6789"
    assert guessed != opened.support_code
    answers = set()
    for code in (guessed, "not-a-code", "0000-OOOO", "K" * 40):
        status, body = await call(relay, "GET", f"/v1/tickets/{code}", "tea.boss")
        answers.add((status, body["error"], body["message"]))
    # another merchant's real ticket: the same answer as a code that does not exist
    status, body = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "tea.boss")
    answers.add((status, body["error"], body["message"]))
    assert answers == {(404, "NotFound", "not found")}
    for i in range(int(MISS_BURST)):
        code = "".join(CODE_ALPHABET[(i + k) % len(CODE_ALPHABET)] for k in range(8))
        status, body = await call(relay, "GET", f"/v1/tickets/{code}", "tea.boss")
        if status == 429:
            break
    assert status == 429
    # limited even for a code that exists: the limit can't be used to tell codes apart
    status, _ = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "tea.boss")
    assert status == 429
    status, _shown = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "tech")
    assert status == 200  # other users are not slowed down
    reasons = [d.get("reason") for a, o, _, d in await audit(relay) if a == "ticket.show"]
    assert reasons[:5] == [
        "unknown code",
        "malformed code",
        "malformed code",
        "malformed code",
        "out of scope",
    ]
    assert "rate limited" in reasons


async def test_technician_notes_and_phone_tickets_refuse_control_characters(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    code = opened.support_code
    await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
    for text in ("", "\u202e", "a\x1b[31m", "x" * 2001):
        status, body = await call(relay, "POST", f"/v1/tickets/{code}/note", "tech", {"text": text})
        assert (status, body["error"]) == (400, "BadTicketText"), body
    status, body = await call(
        relay,
        "POST",
        "/v1/tickets",
        "tech",
        {"store_id": relay.store, "description": "\u2067伪造", "category": "printer"},
    )
    assert (status, body["error"]) == (400, "BadTicketText")
    assert "control characters" in body["message"]
    assert "控制字符" in body["message_zh"]
    status, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
    assert [e["kind"] for e in shown["events"]] == ["opened", "accepted"]
    status, listed = await call(relay, "GET", "/v1/tickets", "tech")
    assert len(listed["tickets"]) == 1


async def test_two_technicians_accepting_at_once_exactly_one_wins(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
        path = f"/v1/tickets/{opened.support_code}/accept"
        results = await asyncio.gather(
            call(relay, "POST", path, "tech"), call(relay, "POST", path, "tech2")
        )
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 409]
        winner = next(body["technician"] for status, body in results if status == 200)
        loser = next(body for status, body in results if status == 409)
        assert loser["technician"] == winner
        assert winner in loser["message"]
        (pushed,) = await agent.next()  # the device hears of one acceptance only
        assert isinstance(pushed, m.TicketUpdated)
        assert pushed.technician == winner
    accepts = [(o, d) for a, o, _, d in await audit(relay) if a == "ticket.accept"]
    assert sorted(o for o, _ in accepts) == ["ok", "refused"]


# --- roles and scope -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["accept", "note", "resolve", "reopen", "work"])
async def test_a_merchant_trying_a_technician_command_is_refused_and_audited(
    relay: Relay, command: str
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    status, body = await call(
        relay, "POST", f"/v1/tickets/{opened.support_code}/{command}", "boss", {"text": "x"}
    )
    assert status == 403, body
    status, shown = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "boss")
    assert status == 200  # their own ticket: they may read it
    assert [e["kind"] for e in shown["events"]] == ["opened"]
    refused = [(o, d["reason"]) for a, o, _, d in await audit(relay) if a == f"ticket.{command}"]
    assert refused == [("refused", "role merchant")]


async def test_merchants_see_their_own_tickets_and_reports_only(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    status, mine = await call(relay, "GET", "/v1/tickets", "boss")
    assert [t["code"] for t in mine["tickets"]] == [opened.support_code]
    status, theirs = await call(relay, "GET", "/v1/tickets", "tea.boss")
    assert theirs["tickets"] == []
    status, _answer = await call(relay, "GET", f"/v1/reports?store={relay.store}", "tea.boss")
    assert status == 403
    status, _body = await call(relay, "GET", f"/v1/tickets?store={relay.store}", "tea.boss")
    assert status == 403
    status, export = await call(relay, "GET", "/v1/reports", "boss")  # full history export
    assert status == 200
    assert {s["id"] for s in export["stores"]} == {relay.store, relay.other_store}
    refused = [(a, d["reason"]) for a, o, _, d in await audit(relay) if o == "refused"]
    assert refused == [("report.fetch", "out of scope"), ("ticket.list", "out of scope")]


# --- SLA -----------------------------------------------------------------------------------------


async def test_sla_due_times_count_business_hours_and_a_breach_is_recorded_once(
    relay: Relay,
) -> None:
    relay.clock.stop()  # the SLA clock is checked to the second
    hours = {"weekly": {"mon": [["09:00", "18:00"]]}}
    status, body = await call(
        relay,
        "PATCH",
        f"/v1/stores/{relay.store}",
        "admin",
        {"timezone": "Asia/Shanghai", "hours": hours},
    )
    assert status == 200, body
    status, body = await call(
        relay,
        "POST",
        f"/v1/merchants/{relay.merchant}/sla",
        "admin",
        {"response_seconds": 1800, "resolve_seconds": 4 * 3600},
    )
    assert status == 200, body
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    assert opened.response_due is not None
    status, shown = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "tech")
    # open Mondays 09:00-18:00 only: half an hour of business time ends on a Monday, in hours
    due = dt.datetime.fromisoformat(shown["local"]["response_due"])
    assert due.utcoffset() == dt.timedelta(hours=8)
    assert due.weekday() == 0
    assert dt.time(9, 0) < due.time() <= dt.time(18, 0)
    assert business_seconds(parse_hours(hours), shown["created_at"], shown["response_due"]) == 1800
    relay.clock.offset += 8 * 86400  # past both due times
    await sign_in_again(relay, "tech", "boss")  # their tokens expired meanwhile
    assert await sweep_breaches(relay.state) == 2
    assert await sweep_breaches(relay.state) == 0  # recorded once
    status, breached = await call(relay, "GET", "/v1/tickets?breached=1", "tech")
    assert [t["code"] for t in breached["tickets"]] == [opened.support_code]
    assert breached["tickets"][0]["breach_recorded"] == {"response": True, "resolution": True}
    status, report = await call(relay, "GET", f"/v1/reports?store={relay.store}", "boss")
    assert report["summary"]["response_missed"] == 1
    assert report["summary"]["breaches_recorded"] == 2


async def _wait_and_move(relay: Relay, code: str, hours: float, state: str) -> dict[str, Any]:
    """``hours`` later (signed in again), a technician's note moving the ticket to ``state``."""
    relay.clock.offset += hours * 3600
    await sign_in_again(relay, "tech", "boss")
    body = {"text": f"-> {state}", "state": state}
    status, moved = await call(relay, "POST", f"/v1/tickets/{code}/note", "tech", body)
    assert (status, moved["status"]) == (200, state), moved
    return dict(moved)


async def test_the_resolution_clock_stops_while_the_ticket_waits_for_the_merchant(
    relay: Relay,
) -> None:
    """Open all day: a 4 h resolution target, 2 h of work, 5 h waiting for the merchant (past
    the first due time: no breach), then 1 h more: resolved within target, having taken 3 h."""
    relay.clock.stop()  # the SLA clock is checked to the second
    sla = {"response_seconds": 1800, "resolve_seconds": 4 * 3600}
    status, _ = await call(relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "admin", sla)
    assert status == 200
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    code = opened.support_code
    status, _ = await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
    assert status == 200
    first_due = opened.created_at + 4 * 3600
    waiting = await _wait_and_move(relay, code, 2, "waiting_merchant")
    assert waiting["sla_paused"] is True
    assert waiting["resolve_due"] == first_due  # kept while it stands still

    relay.clock.offset += 5 * 3600  # 7 h after opening: past the first due time
    await sign_in_again(relay, "tech", "boss")
    assert await sweep_breaches(relay.state) == 0
    status, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
    assert shown["breached"] == {"response": False, "resolution": False}
    assert shown["breach_recorded"] == {"response": False, "resolution": False}
    status, listed = await call(relay, "GET", "/v1/tickets?breached=1", "tech")
    assert listed["tickets"] == []
    status, report = await call(relay, "GET", f"/v1/reports?store={relay.store}", "boss")
    clock = report["stores"][0]["tickets"][0]["resolution"]
    assert (clock["paused"], clock["missed"]) == (True, False)
    assert clock["business_seconds"] == pytest.approx(7200, abs=1e-3)  # to the report's time

    working = await _wait_and_move(relay, code, 0, "in_progress")
    assert working["sla_paused"] is False
    assert working["sla_paused_seconds"] == pytest.approx(5 * 3600, abs=1e-3)
    assert working["resolve_due"] == pytest.approx(first_due + 5 * 3600, abs=1e-3)  # 2 h were left
    relay.clock.offset += 3600
    await sign_in_again(relay, "tech", "boss")
    status, resolved = await call(relay, "POST", f"/v1/tickets/{code}/resolve", "tech")
    assert resolved["status"] == "resolved"
    assert await sweep_breaches(relay.state) == 0
    status, report = await call(relay, "GET", f"/v1/reports?store={relay.store}", "boss")
    (ticket,) = report["stores"][0]["tickets"]
    assert ticket["resolution"]["met"] is True
    assert ticket["resolution"]["business_seconds"] == pytest.approx(3 * 3600, abs=1e-3)
    assert ticket["resolution"]["paused_seconds"] == pytest.approx(5 * 3600, abs=1e-3)
    assert report["summary"]["resolution_met"] == 1
    assert report["summary"]["waited_for_merchant"] == 1
    assert report["summary"]["waited_for_merchant_seconds"] == pytest.approx(5 * 3600, abs=1e-3)
    status, page = await call(relay, "GET", f"/v1/reports?store={relay.store}&format=html", "boss")
    assert "waiting for the merchant: 300 min" in page
    assert "waited for the merchant (clock stopped)</th><td>1 ticket(s), 300 min" in page
    # the merchant's document reads in words (README walk): no codes, reprs or bare seconds
    for words in (
        "服务承诺 / SLA: 响应 / response 30 分钟 / 30 min",
        "解决 / resolution 4 小时 / 4 h",
        "已解决 / resolved · 打印机 / printer · 收银机求助 / from the till",
        "技术员 / technician tech",
        "提问商户 / asked the merchant",
        "营业时间 / hours: 全天营业 / always open",
        "生成 / generated 20",
    ):
        assert words in page, words
    assert "{'" not in page


async def test_the_clock_counts_only_business_hours_while_it_waits_and_a_miss_stays_missed(
    relay: Relay,
) -> None:
    """Open Mon-Fri 09:00-18:00 Shanghai. A ticket opened Monday 10:00 with a 9 h target is due
    Tuesday 10:00; it waits from Monday 17:00 to Tuesday 10:00 (2 open hours stood still), so
    it is due Tuesday 12:00. A ticket whose 1 h target was missed before it started waiting
    keeps its miss, and its due time."""
    relay.clock.stop()  # the SLA clock is checked to the second
    hours = {"weekly": {d: [["09:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}}
    status, _ = await call(relay, "PATCH", f"/v1/stores/{relay.store}", "admin", {"hours": hours})
    assert status == 200
    sla = {"resolve_seconds": 9 * 3600}
    status, _ = await call(relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "admin", sla)
    assert status == 200
    zone = dt.timezone(dt.timedelta(hours=8))
    monday = dt.datetime(2027, 1, 4, 10, 0, tzinfo=zone)  # a Monday, 10:00 in Shanghai
    relay.clock.offset += monday.timestamp() - relay.clock()
    await sign_in_again(relay, "tech", "boss", "admin")
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    code = opened.support_code
    status, _ = await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
    tuesday_ten = dt.datetime(2027, 1, 5, 10, 0, tzinfo=zone).timestamp()
    status, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
    assert shown["resolve_due"] == pytest.approx(
        tuesday_ten, abs=1e-3
    )  # 9 open hours: Mon 10-18, Tue 9-10
    await _wait_and_move(relay, code, 7, "waiting_merchant")  # Monday 17:00
    working = await _wait_and_move(relay, code, 17, "in_progress")  # Tuesday 10:00
    assert working["sla_paused_seconds"] == pytest.approx(2 * 3600, abs=1e-3)  # Mon 17-18, Tue 9-10
    # 2 open hours were left at Monday 17:00 (17-18, 9-10): from Tuesday 10:00 that is 12:00
    assert working["resolve_due"] == pytest.approx(tuesday_ten + 2 * 3600, abs=1e-3)
    status, resolved = await call(relay, "POST", f"/v1/tickets/{code}/resolve", "tech")
    assert (status, resolved["breached"]["resolution"]) == (200, False)  # at 10:00, due 12:00

    await sign_in_again(relay, "admin")
    status, _ = await call(
        relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "admin", {"resolve_seconds": 3600}
    )
    assert status == 200
    async with Agent(relay, device_id, key) as agent:
        late = await ask_help(agent, description="扫码枪没反应", category="scanner")
    status, _ = await call(relay, "POST", f"/v1/tickets/{late.support_code}/accept", "tech")
    await _wait_and_move(relay, late.support_code, 2, "waiting_merchant")  # 1 h after its due
    assert await sweep_breaches(relay.state) == 1
    status, shown = await call(relay, "GET", f"/v1/tickets/{late.support_code}", "tech")
    assert shown["breached"]["resolution"] is True
    assert shown["breach_recorded"]["resolution"] is True
    moved = await _wait_and_move(relay, late.support_code, 1, "in_progress")
    assert moved["resolve_due"] == shown["resolve_due"]  # a missed target is not moved


async def test_racing_changes_never_leave_the_clock_stopped_on_a_ticket_in_work(
    relay: Relay,
) -> None:
    """Outside attack: "wait for the merchant" racing "work" (or "resolve") left a ticket in
    progress with its clock stopped, so it could never breach. Each change now insists on the
    state it read; whatever wins, the clock stands still exactly while the ticket waits."""
    status, _ = await call(
        relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "admin", {"resolve_seconds": 3600}
    )
    device_id, key = await relay.enrol()
    for round_ in range(12):
        async with Agent(relay, device_id, key) as agent:
            opened = await ask_help(agent, description=f"第 {round_} 次")
        code = opened.support_code
        status, _ = await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
        status, _ = await call(relay, "POST", f"/v1/tickets/{code}/work", "tech")
        assert status == 200
        other = "resolve" if round_ % 2 else "work"
        wait = {"text": "请装纸", "state": "waiting_merchant"}
        answers = await asyncio.gather(
            call(relay, "POST", f"/v1/tickets/{code}/note", "tech", wait),
            call(relay, "POST", f"/v1/tickets/{code}/{other}", "tech", {"text": ""}),
        )
        assert {s for s, _ in answers} <= {200, 409}, answers
        status, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
        assert shown["sla_paused"] == (shown["status"] == "waiting_merchant"), shown
        status, _ = await call(relay, "POST", f"/v1/tickets/{code}/resolve", "tech")
        status, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
        assert (shown["status"], shown["sla_paused"]) == ("resolved", False)


async def test_only_the_tickets_technician_stops_its_clock(relay: Relay) -> None:
    """Outside attack: any technician of the store could make another's ticket wait for the
    merchant, stopping its SLA clock. Only its technician (or an admin) says so now; the
    other is refused, told who has it, and nothing changes."""
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    code = opened.support_code
    status, _ = await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
    wait = {"text": "请装纸", "state": "waiting_merchant"}
    status, refused = await call(relay, "POST", f"/v1/tickets/{code}/note", "tech2", wait)
    assert status == 409, refused
    assert "(tech)" in refused["message"]
    status, shown = await call(relay, "GET", f"/v1/tickets/{code}", "tech")
    assert (shown["status"], shown["sla_paused"]) == ("accepted", False)
    status, _ = await call(relay, "POST", f"/v1/tickets/{code}/note", "tech2", {"text": "看过"})
    assert status == 200  # a note alone is anyone's
    status, moved = await call(relay, "POST", f"/v1/tickets/{code}/note", "admin", wait)
    assert (status, moved["sla_paused"]) == (200, True)


async def test_sla_targets_are_checked(relay: Relay) -> None:
    for body in (
        {"response_seconds": -1},
        {"response_seconds": "1h"},
        {"resolve_seconds": 10**12},
        {"response_seconds": True},
    ):
        status, answer = await call(
            relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "admin", body
        )
        assert (status, answer["error"]) == (400, "BadSla"), answer
    status, _ = await call(relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "tech", {})
    assert status == 403


async def test_a_misspelt_sla_field_is_refused_and_a_missing_one_keeps_its_value(
    relay: Relay,
) -> None:
    path = f"/v1/merchants/{relay.merchant}/sla"
    status, _ = await call(
        relay, "POST", path, "admin", {"response_seconds": 1800, "resolve_seconds": 14400}
    )
    assert status == 200
    for body in ({"response": None}, {"resolve_seconds": 3600, "resolve": 60}):
        status, answer = await call(relay, "POST", path, "admin", body)
        assert (status, answer["error"]) == (400, "BadSla"), answer
        status, kept = await call(relay, "GET", path, "admin")
        assert (kept["response_seconds"], kept["resolve_seconds"]) == (1800, 14400)
    status, changed = await call(relay, "POST", path, "admin", {"resolve_seconds": 7200})
    assert (status, changed["response_seconds"], changed["resolve_seconds"]) == (200, 1800, 7200)
    status, cleared = await call(relay, "POST", path, "admin", {"response_seconds": None})
    assert (status, cleared["response_seconds"], cleared["resolve_seconds"]) == (200, None, 7200)


# --- reports -------------------------------------------------------------------------------------


async def test_report_html_escapes_what_peers_typed_and_lists_audit_hashes(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent, description="<script>alert(1)</script>\n纸")
    status, page = await call(
        relay, "GET", f"/v1/reports?store={relay.store}&since=2000-01-01&format=html", "boss"
    )
    assert status == 200
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert opened.support_code in page
    assert "@media print" in page
    status, report = await call(relay, "GET", f"/v1/reports?store={relay.store}", "boss")
    (ticket,) = report["stores"][0]["tickets"]
    listed = {r["seq"]: r["hash"] for r in report["audit"]["records"]}
    assert {e["audit_seq"] for e in ticket["events"]} <= listed.keys()
    stored = {r.seq: r.hash.hex() async for r in relay.state.storage.records()}
    assert all(stored[seq] == digest for seq, digest in listed.items())
    # the head when the report was made: only the record of this fetch came after it
    assert report["audit"]["head"]["seq"] == max(stored) - 1
    assert report["audit"]["head"]["hash"] == stored[max(stored) - 1]


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "2026-1-1"])
async def test_report_refuses_a_bad_date(relay: Relay, since: str) -> None:
    status, body = await call(
        relay, "GET", f"/v1/reports?store={relay.store}&since={since}", "boss"
    )
    assert (status, body["error"]) == (400, "BadTicketQuery"), body
    assert "2026-12-01" in body["message"]


async def test_a_store_changing_its_zone_keeps_open_tickets_due_times_and_shows_its_new_clock(
    relay: Relay,
) -> None:
    status, _ = await call(
        relay, "POST", f"/v1/merchants/{relay.merchant}/sla", "admin", {"response_seconds": 3600}
    )
    assert status == 200
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        first = await ask_help(agent)
        status, body = await call(
            relay, "PATCH", f"/v1/stores/{relay.store}", "admin", {"timezone": "Europe/London"}
        )
        assert status == 200, body
        second = await ask_help(agent)
    status, shown = await call(relay, "GET", f"/v1/tickets/{first.support_code}", "tech")
    assert shown["response_due"] == first.response_due  # the same instant as promised
    assert shown["timezone"] == "Europe/London"
    assert shown["local"]["response_due"][-6:] in ("+00:00", "+01:00")  # London, not +08:00
    assert second.response_due is not None
    assert second.response_due - second.created_at == 3600  # always open: an hour later


async def test_phone_tickets_are_for_technicians_on_their_stores_devices(relay: Relay) -> None:
    other_device, _ = await relay.enrol(await relay.invite(relay.other_store))
    body = {"store_id": relay.store, "description": "客户来电", "category": "scanner"}
    status, answer = await call(relay, "POST", "/v1/tickets", "boss", body)
    assert status == 403, answer  # a merchant calls; a technician opens the ticket
    status, answer = await call(
        relay, "POST", "/v1/tickets", "tech", {**body, "device_id": other_device}
    )
    assert status == 400, answer  # that till is in another store
    status, answer = await call(relay, "POST", "/v1/tickets", "tech", {**body, "category": "x"})
    assert status == 400
    status, answer = await call(
        relay, "POST", "/v1/tickets", "tech", {**body, "store_id": relay.other_store}
    )
    assert status == 403  # tech's scope is the Main St store only
    status, listed = await call(relay, "GET", "/v1/tickets", "admin")
    assert listed["tickets"] == []  # nothing was opened by any of those
    status, opened = await call(relay, "POST", "/v1/tickets", "tech", body)
    assert status == 201, opened
    assert (opened["channel"], opened["status"], opened["technician"]) == (
        "phone",
        "accepted",
        "tech",
    )
    assert opened["first_response_at"] == opened["created_at"]  # the call was the response
    refused = [(a, d["reason"]) for a, o, _, d in await audit(relay) if o == "refused"]
    assert refused == [("ticket.open", "role merchant"), ("ticket.open", "out of scope")]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/tickets?state=fixed", None),  # an old state name
        ("GET", "/v1/tickets?breached=maybe", None),
        ("POST", "/v1/tickets/{code}/note", {"text": "x", "state": "closed"}),
        ("POST", "/v1/tickets/{code}/note", {"text": 5}),
        ("POST", "/v1/tickets/{code}/note", [1, 2]),
        ("GET", "/v1/reports?format=pdf", None),
    ],
)
async def test_bad_api_input_is_a_clear_400_and_changes_nothing(
    relay: Relay, method: str, path: str, body: object
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
    await call(relay, "POST", f"/v1/tickets/{opened.support_code}/accept", "tech")
    status, answer = await call(relay, method, path.format(code=opened.support_code), "tech", body)
    assert status == 400, answer
    assert answer["error"] in ("BadRequest", "BadTicketQuery", "BadTicketField", "BadTicketText")
    assert answer["message"] != "bad request" or body == [1, 2]  # says what is wrong
    status, shown = await call(relay, "GET", f"/v1/tickets/{opened.support_code}", "tech")
    assert [e["kind"] for e in shown["events"]] == ["opened", "accepted"]
    assert shown["status"] == "accepted"


async def test_a_resolved_ticket_nobody_rated_closes_after_seven_days(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        opened = await ask_help(agent)
        code = opened.support_code
        await call(relay, "POST", f"/v1/tickets/{code}/accept", "tech")
        await call(relay, "POST", f"/v1/tickets/{code}/resolve", "tech")
        await agent.next()
        await agent.next()
        assert await close_resolved(relay.state) == 0  # not yet
        relay.clock.offset += 7 * 86400 + 1
        assert await close_resolved(relay.state) == 1
        (pushed,) = await agent.next()
        assert isinstance(pushed, m.TicketUpdated)
        assert pushed.status == "closed"
        assert await close_resolved(relay.state) == 0  # once
        await agent.reply(m.TicketQuery(id=8))
        (listed,) = await agent.next()
        assert isinstance(listed, m.TicketList)
        assert listed.tickets == ()  # resolved 7 days ago: off the till's list, closed or not
        # the merchant may still rate it
        await agent.reply(m.TicketRate(id=9, ticket_id=opened.ticket_id, rating=4))
        answers = await agent.next()
        assert isinstance(answers[0], m.TicketRated)
    closes = [(o, t) for a, o, t, _ in await audit(relay) if a == "ticket.close"]
    assert closes == [("ok", f"ticket:{opened.ticket_id}")]


async def test_a_report_too_big_to_be_complete_is_refused_not_cut_short(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posassist.relay.handlers import reports, tickets

    monkeypatch.setattr(reports, "MAX_TICKETS", 2)
    monkeypatch.setattr(tickets, "MAX_LIST", 2)
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        for i in range(3):
            await ask_help(agent, description=f"问题 {i}")
    status, body = await call(relay, "GET", f"/v1/reports?store={relay.store}", "boss")
    assert (status, body["error"]) == (400, "ReportTooLarge")
    assert "later since date" in body["message"]
    status, listed = await call(relay, "GET", "/v1/tickets", "tech")
    assert (len(listed["tickets"]), listed["truncated"]) == (2, True)
