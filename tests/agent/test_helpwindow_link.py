"""The help window's local link and the agent's help service: who may connect, what travels,
consent through the link, and tickets that survive a closed window and a restarted agent.

Real sockets (Unix and loopback TCP) in this process; the relay side is in test_helpwindow_e2e.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from posassist.agent.helpwindow.link import (
    MAX_LINE,
    LinkError,
    LinkRefusedError,
    decode_line,
    encode_line,
)
from posassist.agent.helpwindow.linkclient import LinkClient
from posassist.agent.helpwindow.service import HelpService
from posassist.agent.scripts.consent import (
    RESTARTED_DETAIL,
    ConsentDecision,
    Decided,
    LinkConsent,
)
from posassist.agent.scripts.results import ResultStore
from posassist.protocol import (
    ConsentAnswer,
    ConsentRequest,
    ErrorReply,
    TicketList,
    TicketQuery,
    TicketUpdated,
)
from posassist.protocol.manifest import Manifest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DEVICE = "dev_0123456789abcdef"


def manifest(*, unattended: bool = False, backup: tuple[str, ...] = ("${DATA}/x",)) -> Manifest:
    return Manifest(
        id="printer-status-test",
        version="1.0.0",
        title=("打印机状态与测试小票", "Printer status and test receipt"),
        description=("读取打印机状态", "Reads the printer's status"),
        changes=("打印一张测试小票", "Prints one test receipt"),
        platforms=("linux",),
        interpreter="python",
        entry="x.py",
        files=("x.py",),
        risk="B",
        consent=True,
        unattended=unattended,
        preconditions=(),
        params=(),
        timeout=60.0,
        max_output=65536,
        backup=backup,
        expected_duration=20.0,
    )


def update(ticket: str = "tkt_1", status: str = "accepted", at: float = 1000.0) -> TicketUpdated:
    return TicketUpdated(
        ticket_id=ticket,
        support_code="K7M-4QX",
        status=status,
        message_zh="技术员已接单",
        message_en="a technician took it",
        updated_at=at,
        technician="li.wei",
        response_due=at + 900,
    )


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[HelpService]:
    help_service = HelpService(tmp_path / "till", DEVICE, transport="unix")
    await help_service.start()
    yield help_service
    await help_service.close()


async def wait_for_window(service: HelpService, present: bool = True) -> None:
    for _ in range(500):
        if service.window_open is present:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the window never (dis)connected")


async def test_window_of_the_desktop_user_is_welcomed_on_a_private_unix_socket(
    service: HelpService, tmp_path: Path
) -> None:
    folder = tmp_path / "till" / "link"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "agent.sock").stat().st_mode) == 0o600
    client = await LinkClient.connect(tmp_path / "till")
    try:
        assert client.welcome["device_id"] == DEVICE
        assert client.welcome["timezone"] == "Asia/Shanghai"
        assert client.welcome["relay_connected"] is False
        assert client.welcome["user"]
        await wait_for_window(service)
    finally:
        await client.close()
    await wait_for_window(service, present=False)  # the agent goes on with no window


async def test_a_process_of_another_user_is_refused_and_cannot_answer_consent(
    tmp_path: Path,
) -> None:
    # The allowed desktop user is someone else: this test's own process stands for "not the
    # desktop user" (SO_PEERCRED gives the kernel's word for who connected).
    other = HelpService(
        tmp_path / "till", DEVICE, transport="unix", allowed_uids=frozenset({os.getuid() + 4242})
    )
    await other.start()
    try:
        with pytest.raises(LinkRefusedError, match="not_desktop_user"):
            await LinkClient.connect(tmp_path / "till")
        assert not other.window_open
        decided = await LinkConsent(other, timeout=5.0, unattended_policy="ask").ask(manifest(), {})
        assert decided == Decided(ConsentDecision.NO_WINDOW)
    finally:
        await other.close()


async def test_tcp_link_listens_on_loopback_only_and_wants_the_secret(tmp_path: Path) -> None:
    data = tmp_path / "till"
    help_service = HelpService(data, DEVICE, transport="tcp")
    await help_service.start()
    try:
        secret_file = data / "link" / "secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        port = int((data / "link" / "port").read_text())
        assert help_service.link._server is not None
        assert {s.getsockname()[0] for s in help_service.link._server.sockets} == {"127.0.0.1"}
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_line({"t": "link.hello", "secret": "0" * 64}))
        refused = decode_line(await reader.readline(), {"error": ErrorReply})
        assert isinstance(refused, ErrorReply)
        assert refused.code == "bad_secret"
        assert await reader.readline() == b""  # closed
        writer.close()
        client = await LinkClient.connect(data)  # reads the secret file, as the window does
        assert client.welcome["user"] == "desktop"
        await client.close()
    finally:
        await help_service.close()


async def test_bad_lines_get_a_clear_error_and_the_window_stays(
    service: HelpService, tmp_path: Path
) -> None:
    client = await LinkClient.connect(tmp_path / "till")
    try:
        agents_own = (  # the agent's link-only messages, and a second hello (outside attack)
            b'{"t":"link.welcome","device_id":"d","timezone":"UTC","user":"u",'
            b'"relay_connected":true,"follows":0}\n',
            b'{"t":"link.hello","secret":""}\n',
            b'{"t":"link.summary","id":4,"findings":[],"error":""}\n',
        )
        for bad in (
            b"not json\n",
            b'{"t":"script.run","id":3}\n',
            b'{"t":"ticket.query"}\n',
            *agents_own,
        ):
            client.writer.write(bad)
            reply = await client.receive(5)
            assert isinstance(reply, ErrorReply)
            assert reply.code == "bad_request", (bad, reply)
        await client.send(TicketQuery(id=9))  # the link still works
        listed = await client.receive(5)
        assert isinstance(listed, TicketList)
        assert listed.id == 9
        # a line over the limit: refused, and this window is closed (it broke the framing)
        client.writer.write(b'{"t":"ticket.query","pad":"' + b"x" * MAX_LINE + b'"}\n')
        reply = await client.receive(5)
        assert isinstance(reply, ErrorReply)
        assert "over" in reply.message
        with pytest.raises(LinkError):
            await client.receive(5)
    finally:
        await client.close()


def test_link_lines_refuse_control_and_bidi_in_a_description() -> None:
    line = {
        "t": "help.requested",
        "id": 1,
        "device_id": DEVICE,
        "category": "printer",
        "description": "打印机\u202e坏了",
        "contact": "",
        "language": "zh-CN",
        "diagnostics": {},
    }
    from posassist.agent.helpwindow.link import FROM_WINDOW

    with pytest.raises(LinkError, match="control characters"):
        decode_line(json.dumps(line).encode() + b"\n", FROM_WINDOW)
    line["description"] = "打印机\x1b[2J坏了"
    with pytest.raises(LinkError, match="control characters"):
        decode_line(json.dumps(line).encode() + b"\n", FROM_WINDOW)


async def test_consent_is_asked_through_the_window_and_answered_by_its_user(
    service: HelpService, tmp_path: Path
) -> None:
    client = await LinkClient.connect(tmp_path / "till")
    try:
        await wait_for_window(service)
        consent = LinkConsent(service, timeout=30.0)
        params = {"action": "status", "host": "10.0.0.9"}
        asking = asyncio.ensure_future(consent.ask(manifest(), params))
        question = await client.receive(5)
        while not isinstance(question, ConsentRequest):
            question = await client.receive(5)
        assert question.script == "printer-status-test"
        assert question.title_zh == "打印机状态与测试小票"
        assert "备份" in question.changes_zh
        assert "backed up" in question.changes_en
        # this run's own settings, not only what the script does in general (README walk)
        assert "本次设置: action=status, host=10.0.0.9" in question.changes_zh
        assert "This run: action=status, host=10.0.0.9" in question.changes_en
        assert (question.expected_duration, question.timeout) == (20.0, 30.0)
        pending = json.loads((tmp_path / "till" / "help" / "consent-pending.json").read_text())
        assert [p["script"] for p in pending] == ["printer-status-test"]
        # the window claims to be someone; the agent records who the link says it is
        await client.send(ConsentAnswer(id=question.id, granted=True, answered_by="mallory"))
        decided = await asyncio.wait_for(asking, 5)
        assert decided.decision is ConsentDecision.GRANTED
        assert decided.answered_by == client.welcome["user"] != "mallory"
        pending = json.loads((tmp_path / "till" / "help" / "consent-pending.json").read_text())
        assert pending == []
        # a second answer to the same question: refused, changes nothing
        await client.send(ConsentAnswer(id=question.id, granted=False))
        late = await client.receive(5)
        assert isinstance(late, ErrorReply)
        assert late.code == "consent_expired"
    finally:
        await client.close()


async def test_an_answer_after_the_timeout_is_refused(service: HelpService, tmp_path: Path) -> None:
    client = await LinkClient.connect(tmp_path / "till")
    try:
        await wait_for_window(service)
        consent = LinkConsent(service, timeout=1.0)
        asking = asyncio.ensure_future(asyncio.wait_for(consent.ask(manifest(), {}), 1.0))
        question = await client.receive(5)
        while not isinstance(question, ConsentRequest):
            question = await client.receive(5)
        with pytest.raises(asyncio.TimeoutError):
            await asking  # the runner's bound: TIMED_OUT
        closed = await client.receive(5)  # the window is told to stop asking
        assert closed == {"t": "link.consent_closed", "id": question.id, "reason": "expired"}
        await client.send(ConsentAnswer(id=question.id, granted=True))
        late = await client.receive(5)
        assert isinstance(late, ErrorReply)
        assert late.code == "consent_expired"
    finally:
        await client.close()


async def test_store_policy_for_scripts_allowed_unattended(service: HelpService) -> None:
    assert not service.window_open
    ask = LinkConsent(service, 5.0, "ask")
    assert (await ask.ask(manifest(unattended=True), {})).decision is ConsentDecision.GRANTED
    assert (await ask.ask(manifest(), {})).decision is ConsentDecision.NO_WINDOW
    require = LinkConsent(service, 5.0, "require")
    assert (await require.ask(manifest(unattended=True), {})).decision is (
        ConsentDecision.NO_WINDOW
    )
    allow = LinkConsent(service, 5.0, "allow")
    assert (await allow.ask(manifest(unattended=True), {})) == Decided(
        ConsentDecision.GRANTED, "store policy"
    )


async def test_agent_restarted_with_consent_pending_denies_it_for_the_relay(
    tmp_path: Path,
) -> None:
    data = tmp_path / "till"
    results = ResultStore(data / "scripts" / "results.json")
    results.received("job_7")
    results.started("job_7")
    first = HelpService(data, DEVICE, transport="unix", results=results)
    await first.start()
    client = await LinkClient.connect(data)
    from posassist.agent.scripts.consent import CURRENT_JOB

    CURRENT_JOB.set("job_7")
    asking = asyncio.ensure_future(first.consent.ask(manifest(), {}))
    question = await client.receive(5)
    while not isinstance(question, ConsentRequest):
        question = await client.receive(5)
    # the agent dies here: nothing of it runs on (no close, no finally)
    asking.cancel()
    pending = (data / "help" / "consent-pending.json").read_text()
    await client.close()
    await first.link.close()
    (data / "help" / "consent-pending.json").write_text(pending)  # as a SIGKILL leaves it

    again = HelpService(data, DEVICE, transport="unix", results=ResultStore(results.path))
    await again.start()
    try:
        [result] = ResultStore(results.path).lookup(["job_7"])
        assert result["status"] == "refused"
        assert result["detail"] == RESTARTED_DETAIL
        assert json.loads((data / "help" / "consent-pending.json").read_text()) == []
    finally:
        await again.close()


async def test_tickets_survive_a_closed_window_and_a_restarted_agent(tmp_path: Path) -> None:
    data = tmp_path / "till"
    first = HelpService(data, DEVICE, transport="unix")
    await first.start()
    window = await LinkClient.connect(data)
    assert first.relay_message(update(status="accepted"))
    pushed = await window.receive(5)
    assert isinstance(pushed, TicketUpdated)
    assert pushed.technician == "li.wei"
    await window.close()  # the merchant closes the window mid-ticket
    assert first.relay_message(update(status="in_progress", at=1100.0))
    await first.close()  # and the agent restarts

    again = HelpService(data, DEVICE, transport="unix", clock=lambda: 2000.0)
    await again.start()
    try:
        reopened = await LinkClient.connect(data)
        assert reopened.welcome["follows"] == 1  # read with the welcome, before any drawing
        [shown] = reopened.backlog
        assert isinstance(shown, TicketUpdated)
        assert (shown.ticket_id, shown.status, shown.updated_at) == ("tkt_1", "in_progress", 1100)
        await reopened.send(TicketQuery(id=4))  # offline: answered from the till's note
        listed = await reopened.receive(5)
        assert isinstance(listed, TicketList)
        assert [t["status"] for t in listed.tickets] == ["in_progress"]
        await reopened.close()
    finally:
        await again.close()


async def test_unknown_window_message_never_reaches_the_service(
    service: HelpService, tmp_path: Path
) -> None:
    client = await LinkClient.connect(tmp_path / "till")
    try:
        # a window may not push ticket updates or consent questions to the agent
        await client.send(update())
        reply: Any = await client.receive(5)
        assert isinstance(reply, ErrorReply)
        assert "does not travel" in reply.message
    finally:
        await client.close()


async def test_help_request_without_the_relay_says_so_and_a_foreign_device_is_refused(
    service: HelpService, tmp_path: Path
) -> None:
    from posassist.protocol import HelpRequested

    client = await LinkClient.connect(tmp_path / "till")
    try:
        asked = HelpRequested(id=5, device_id=DEVICE, category="printer", description="没纸了")
        await client.send(asked)
        reply = await client.receive(15)
        assert isinstance(reply, ErrorReply)
        assert (reply.id, reply.code) == (5, "offline")
        assert "已保留" in reply.message  # the window keeps the text; it says so
        foreign = HelpRequested(
            id=6, device_id="dev_someone_else", category="printer", description="没纸了"
        )
        await client.send(foreign)
        refused = await client.receive(15)
        assert isinstance(refused, ErrorReply)
        assert (refused.id, refused.code) == (6, "bad_request")
    finally:
        await client.close()


async def test_nothing_in_time_is_a_timeout_not_a_closed_link(
    service: HelpService, tmp_path: Path
) -> None:
    client = await LinkClient.connect(tmp_path / "till")
    try:
        with pytest.raises(asyncio.TimeoutError):
            await client.receive(0.2)  # on 3.11 a TimeoutError is an OSError too
        await client.send(TicketQuery(id=3))
        assert isinstance(await client.receive(5), TicketList)  # still open
    finally:
        await client.close()


async def test_a_desktop_user_other_than_the_agent_can_reach_the_socket_the_check_still_gates(
    tmp_path: Path,
) -> None:
    data = tmp_path / "till"
    other = HelpService(
        data, DEVICE, transport="unix", allowed_uids=frozenset({os.getuid() + 4242})
    )
    await other.start()
    try:
        assert stat.S_IMODE((data / "link").stat().st_mode) == 0o711
        assert stat.S_IMODE((data / "link" / "agent.sock").stat().st_mode) == 0o666
        with pytest.raises(LinkRefusedError):  # reachable, yet not the allowed user
            await LinkClient.connect(data)
    finally:
        await other.close()
    again = HelpService(data, DEVICE, transport="unix")  # back to the agent's own user only
    await again.start()
    try:
        assert stat.S_IMODE((data / "link").stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "link" / "agent.sock").stat().st_mode) == 0o600
    finally:
        await again.close()


async def test_a_window_opened_during_a_consent_question_gets_it_with_the_time_left(
    service: HelpService, tmp_path: Path
) -> None:
    first = await LinkClient.connect(tmp_path / "till")
    await wait_for_window(service)
    asking = asyncio.ensure_future(LinkConsent(service, timeout=60.0).ask(manifest(), {}))
    question = await first.receive(5)
    assert isinstance(question, ConsentRequest)
    await first.close()  # the merchant closes the window with the question on it
    await wait_for_window(service, present=False)
    second = await LinkClient.connect(tmp_path / "till")
    try:
        [again] = second.backlog  # with the welcome: the window opens on the question
        assert isinstance(again, ConsentRequest)
        assert again.id == question.id
        assert 1.0 <= again.timeout < 60.0
        await second.send(ConsentAnswer(id=again.id, granted=False))
        decided = await asyncio.wait_for(asking, 5)
        assert decided.decision is ConsentDecision.DENIED
    finally:
        await second.close()


async def test_a_slow_request_never_holds_up_the_consent_answer(tmp_path: Path) -> None:
    """The window's help request waits on the relay; the merchant's click meanwhile is heard."""
    from posassist.agent.helpwindow.link import LinkEndpoint, LinkServer

    answered = asyncio.Event()
    order: list[str] = []

    async def handle(peer: Any, msg: Any) -> None:
        if isinstance(msg, TicketQuery):
            await asyncio.wait_for(answered.wait(), 5)  # only the answer below can end this
            order.append("query")
        elif isinstance(msg, ConsentAnswer):
            order.append("answer")
            answered.set()

    server = LinkServer(LinkEndpoint.default(tmp_path, "unix"), _welcome, handle)
    await server.start()
    client = await LinkClient.connect(tmp_path)
    try:
        await client.send(TicketQuery(id=1))
        await client.send(ConsentAnswer(id=2, granted=True))
        for _ in range(500):
            if len(order) == 2:
                break
            await asyncio.sleep(0.01)
        assert order == ["answer", "query"]
    finally:
        await client.close()
        await server.close()


async def test_a_data_folder_too_deep_for_a_socket_address_still_gets_a_link(
    tmp_path: Path,
) -> None:
    data = tmp_path / ("deep-" * 20) / "till"  # <data>/link/agent.sock over 100 bytes
    help_service = HelpService(data, DEVICE, transport="unix")
    await help_service.start()
    try:
        path = help_service.link.endpoint.socket_path
        assert len(str(path)) < 100
        assert path.parent.name == f"posassist-{os.getuid()}"
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        client = await LinkClient.connect(data)  # the window finds it from the data folder
        assert client.welcome["device_id"] == DEVICE
        await client.close()
    finally:
        await help_service.close()
    assert not path.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a folder another user owns")
async def test_a_stand_in_folder_another_user_made_first_is_not_used_nor_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside attack: with a deep data folder the socket stands in the shared temporary
    folder, where another local user can make ``posassist-<uid>`` first. The agent then takes a
    fresh private folder and records it; the window follows the record, and refuses a recorded
    socket in a folder that is not the agent's (a fake agent's)."""
    import shutil
    import socket as socketlib
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="pa-", dir="/tmp"))  # short: a socket address fits
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    try:
        await _squatted_stand_in(tmp_path, shared, socketlib)
    finally:
        shutil.rmtree(shared)


async def _squatted_stand_in(tmp_path: Path, shared: Path, socketlib: Any) -> None:
    squatted = shared / f"posassist-{os.getuid()}"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, 65534, 65534)  # nobody's, made before the agent started
    data = tmp_path / ("deep-" * 20) / "till"
    help_service = HelpService(data, DEVICE, transport="unix")
    await help_service.start()
    try:
        path = help_service.link.endpoint.socket_path
        assert path.parent != squatted
        assert path.parent.parent == shared
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert list(squatted.iterdir()) == []  # nothing of ours in it
        client = await LinkClient.connect(data)
        assert client.welcome["device_id"] == DEVICE
        await client.close()
    finally:
        await help_service.close()
    assert not path.parent.exists()  # the fresh folder goes with the agent

    # a fake agent's socket, recorded where the window looks, in a folder nobody trusted made
    fake = squatted / "fake.sock"
    listener = socketlib.socket(socketlib.AF_UNIX)
    listener.bind(str(fake))
    listener.listen(1)
    try:
        (data / "link").mkdir(parents=True, exist_ok=True)
        (data / "link" / "socket-path").write_text(str(fake))
        with pytest.raises(LinkRefusedError, match="not the agent's own folder"):
            await LinkClient.connect(data)
    finally:
        listener.close()


async def test_a_reply_through_a_relay_of_version_5_says_to_phone(
    service: HelpService, tmp_path: Path
) -> None:
    """A relay that speaks only version 5 can't take ``ticket.reply``: the window is told to
    phone, nothing is sent; with no relay at all the reply is kept as offline."""
    from types import SimpleNamespace

    from posassist.protocol import TicketReply

    sent: list[Any] = []
    old_relay = SimpleNamespace(
        session=SimpleNamespace(version=5, next_id=lambda: 1),
        request=lambda *a, **k: sent.append(a),
    )
    service.attach(old_relay)  # type: ignore[arg-type]
    client = await LinkClient.connect(tmp_path / "till")
    try:
        await client.send(TicketReply(id=3, ticket_id="tkt_1", text="装好了"))
        reply = await client.receive(5)
        assert isinstance(reply, ErrorReply)
        assert (reply.id, reply.code) == (3, "not_supported")
        assert "请致电技术员" in reply.message
        assert not any(isinstance(args[0], TicketReply) for args in sent)  # nothing went out
        service.detach(old_relay)  # type: ignore[arg-type]
        status = await client.receive(5)  # the windows hear the relay is gone
        assert isinstance(status, dict)
        assert status["relay_connected"] is False
        await client.send(TicketReply(id=4, ticket_id="tkt_1", text="装好了"))
        reply = await client.receive(15)
        assert isinstance(reply, ErrorReply)
        assert (reply.id, reply.code) == (4, "offline")
    finally:
        await client.close()


async def test_the_window_shows_times_in_the_stores_zone_the_relay_names(
    service: HelpService, tmp_path: Path
) -> None:
    """README walk: the window used settings.json's zone while the console used the store's.
    The relay's ``policy.updated`` names the store's zone; open windows hear it at once."""
    client = await LinkClient.connect(tmp_path / "till")
    try:
        assert client.welcome["timezone"] == "Asia/Shanghai"  # the settings' zone, until told
        for bad in ("", "../../etc/passwd", "Europe/Berlin\n", 42, None, "x" * 65):
            service.store_timezone(bad)
        service.store_timezone("Europe/Berlin")
        status = await client.receive(5)  # no word of the bad ones came first
        assert isinstance(status, dict)
        assert status["timezone"] == "Europe/Berlin"
        service.store_timezone("Europe/Berlin")  # the same again: nothing to say
        assert service.timezone == "Europe/Berlin"
    finally:
        await client.close()
    again = await LinkClient.connect(tmp_path / "till")  # a window opened later knows it too
    try:
        assert again.welcome["timezone"] == "Europe/Berlin"
    finally:
        await again.close()


async def test_a_question_cancelled_while_asked_is_taken_off_every_window(
    service: HelpService, tmp_path: Path
) -> None:
    """``script.cancel`` during the consent wait: the runner cancels the ask; each window is told
    the question is withdrawn (not expired), the pending file is empty, a late answer refused."""
    first = await LinkClient.connect(tmp_path / "till")
    second = await LinkClient.connect(tmp_path / "till")
    try:
        for _ in range(500):
            if len(service.link.peers) == 2:
                break
            await asyncio.sleep(0.01)
        asking = asyncio.ensure_future(LinkConsent(service, timeout=600.0).ask(manifest(), {}))
        question, other = await first.receive(5), await second.receive(5)
        assert isinstance(question, ConsentRequest)
        assert isinstance(other, ConsentRequest)
        question_id = question.id
        asking.cancel()  # what the runner does when the relay's script.cancel arrives
        with pytest.raises(asyncio.CancelledError):
            await asking
        withdrawn = {"t": "link.consent_closed", "id": question_id, "reason": "withdrawn"}
        assert await first.receive(5) == withdrawn
        assert await second.receive(5) == withdrawn
        pending = json.loads((tmp_path / "till" / "help" / "consent-pending.json").read_text())
        assert pending == []
        await first.send(ConsentAnswer(id=question_id, granted=True))
        late = await first.receive(5)
        assert isinstance(late, ErrorReply)
        assert late.code == "consent_expired"
    finally:
        await first.close()
        await second.close()


async def test_an_answer_in_one_window_takes_the_question_off_the_others(
    service: HelpService, tmp_path: Path
) -> None:
    first = await LinkClient.connect(tmp_path / "till")
    second = await LinkClient.connect(tmp_path / "till")
    try:
        for _ in range(500):
            if len(service.link.peers) == 2:
                break
            await asyncio.sleep(0.01)
        asking = asyncio.ensure_future(LinkConsent(service, timeout=600.0).ask(manifest(), {}))
        question = await first.receive(5)
        assert isinstance(question, ConsentRequest)
        assert isinstance(await second.receive(5), ConsentRequest)
        await first.send(ConsentAnswer(id=question.id, granted=False))
        decided = await asyncio.wait_for(asking, 5)
        assert decided.decision is ConsentDecision.DENIED
        assert await second.receive(5) == {
            "t": "link.consent_closed",
            "id": question.id,
            "reason": "answered",
        }
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    ("follows", "then", "said"),
    [
        (-1, [], "names -1 messages"),
        (1001, [], "names 1001 messages"),
        (2, [update()], "did not answer"),  # one of two, then silence
        (2, [update(), None], "closed the link"),  # one of two, then the agent goes away
        (1, [{"t": "link.hello", "secret": ""}], "a window's message"),
        (1, [{"t": "link.diagnose", "id": 1}], "a window's message"),
    ],
)
async def test_a_welcome_that_promises_what_never_comes_is_a_link_error(
    tmp_path: Path, follows: int, then: list[Any], said: str
) -> None:
    """``follows`` is the agent's word on how many messages are behind the welcome: a
    window reads that many before it draws, within its time, and no more than the bound."""

    def welcome(peer: Any) -> dict[str, Any]:
        loop = asyncio.get_event_loop()
        for msg in then:  # None: the agent closes the link there
            if msg is None:
                loop.call_soon(peer.close)
            else:
                loop.call_soon(peer.send_nowait, msg)
        return _welcome(peer, follows)

    await _connect_refused(tmp_path, welcome, said)


async def test_a_trickle_behind_the_welcome_is_bounded_as_a_whole(tmp_path: Path) -> None:
    """One message every 0.2 s, each within the 0.5 s a message may take, yet five of them
    are not all there in 0.5 s: the window stops waiting (the bound is for all of them)."""

    def welcome(peer: Any) -> dict[str, Any]:
        loop = asyncio.get_event_loop()
        for i in range(5):  # the stand-in agent's own pace
            loop.call_later(0.2 * (i + 1), peer.send_nowait, update(at=1000.0 + i))
        return _welcome(peer, 5)

    await _connect_refused(tmp_path, welcome, "did not answer")


def _welcome(peer: Any, follows: int = 0) -> dict[str, Any]:
    """A stand-in agent's welcome: ``follows`` messages behind it."""
    return {
        "t": "link.welcome",
        "device_id": DEVICE,
        "timezone": "UTC",
        "user": peer.user,
        "relay_connected": True,
        "follows": follows,
    }


async def _connect_refused(tmp_path: Path, welcome: Any, said: str) -> None:
    """A window connecting to a stand-in agent that welcomes it so gets a LinkError ``said``."""
    from posassist.agent.helpwindow.link import LinkEndpoint, LinkServer

    async def handle(peer: Any, msg: Any) -> None:
        return None

    server = LinkServer(LinkEndpoint.default(tmp_path, "unix"), welcome, handle)
    await server.start()
    try:
        with pytest.raises(LinkError, match=said):
            await LinkClient.connect(tmp_path, timeout=0.5)
    finally:
        await server.close()
