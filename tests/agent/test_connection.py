"""The agent against a real in-process relay: enrolment, handshake, heartbeats, requests."""

from __future__ import annotations

import asyncio
import platform
from typing import TYPE_CHECKING, Any

import pytest

from posassist.agent import __version__ as agent_version
from posassist.agent.config import load_identity
from posassist.agent.connection import SOFTWARE, AgentConnection, agent_url, connect_once
from posassist.agent.diagnostics import DiagContext
from posassist.agent.enrol import enrol
from posassist.agent.errors import ConfigError, RelayRefusedError
from posassist.agent.profile import PosProfile
from posassist.agent.settings import PrinterConfig, Settings
from posassist.client.connection import open_connection
from posassist.protocol import SUPPORTED_VERSIONS, Codec, Role, Session, SessionState
from posassist.protocol import messages as m
from posassist.protocol.enrolment import EnrolmentInvite, InvalidEnrolmentToken
from tests.relay.harness import Relay, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

CODEC = Codec()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path, heartbeat_interval=1.0)
    yield relay
    await relay.server.close()


async def test_enrol_then_handshake(relay: Relay, tmp_path: Path) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    assert load_identity(tmp_path / "till").device_id == identity.device_id
    opened = await connect_once(identity, serve=False)
    assert opened.relay_id == relay.state.config.relay_id
    assert (opened.version, opened.heartbeat_interval) == (max(SUPPORTED_VERSIONS), 1.0)


async def test_enrol_refusals_leave_no_identity_behind(relay: Relay, tmp_path: Path) -> None:
    text = await relay.invite()
    await asyncio.to_thread(enrol, text, tmp_path / "first")
    with pytest.raises(RelayRefusedError) as info:
        await asyncio.to_thread(enrol, text, tmp_path / "second")
    # readme-walk F26: the relay's class name is a code, never shown; the words say what to do
    assert info.value.code == "EnrolmentTokenUsed"
    assert str(info.value) == "this enrolment token was already used: ask support for a new one"
    assert info.value.words_zh == "此登记码已被使用, 请向技术支持索取新的登记码"
    assert not (tmp_path / "second" / "agent.key").exists()
    with pytest.raises(InvalidEnrolmentToken):
        await asyncio.to_thread(enrol, "PA1-garbage", tmp_path / "third")
    with pytest.raises(ConfigError, match="exists already"):
        await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "first")


async def test_enrol_refuses_a_relay_that_is_not_the_one_named(
    relay: Relay, tmp_path: Path
) -> None:
    real = EnrolmentInvite.decode(await relay.invite())
    forged = EnrolmentInvite(relay_url=real.relay_url, relay_id="relay-other", secret=real.secret)
    with pytest.raises(ConfigError, match="not the one the token names"):
        await asyncio.to_thread(enrol, forged.encode(), tmp_path / "till")
    assert not (tmp_path / "till" / "agent.key").exists()


async def test_revoked_agent_gets_refusal_code(relay: Relay, tmp_path: Path) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    await relay.state.storage.revoke_device(identity.device_id, now=relay.clock())
    with pytest.raises(RelayRefusedError) as info:
        await connect_once(identity, serve=False)
    assert info.value.code == "revoked"
    assert "请联系技术支持" in info.value.words_zh  # readme-walk F15: what to do, in Chinese
    assert "revoked; call support" in info.value.words_en


async def test_agent_sends_heartbeats_and_stays_connected(relay: Relay, tmp_path: Path) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    task = asyncio.ensure_future(connect_once(identity))
    await asyncio.sleep(4)  # the relay drops agents silent for 1.5 intervals (1.5 s here)
    assert relay.state.router.agent(identity.device_id) is not None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _open(conn: AgentConnection) -> Any:
    """The driver's connection for ``conn``, handshake done (signed with its identity)."""
    return open_connection(
        agent_url(conn.identity.relay_url),
        Role.AGENT,
        SOFTWARE,
        conn.authenticate,
        session=conn.session,
        on_message=conn.on_message,
        on_heartbeat_ack=conn.on_heartbeat_ack,
    )


async def test_agent_answers_unknown_request_with_clear_error(relay: Relay, tmp_path: Path) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    conn = AgentConnection(identity)
    async with _open(conn):
        conn.session.receive_data(
            CODEC.encode(
                m.ConsentRequest(
                    id=7,
                    device_id=identity.device_id,
                    script="s",
                    title_zh="标题",
                    title_en="t",
                    changes_zh="",
                    changes_en="",
                    expected_duration=1.0,
                    timeout=5.0,
                )
            )
        )
        for event in conn.session.events_received():
            conn._answer(event, lambda: 1.0)
        (reply_frame,) = conn.session.data_to_send()
        reply = CODEC.decode(reply_frame)
        assert isinstance(reply, m.ErrorReply)
        assert (reply.id, reply.code) == (7, "unsupported")
        assert reply.message.startswith("consent.request not supported by posassist-agent/")


async def test_a_diag_request_with_nothing_to_probe_is_answered_as_it_is_read(
    relay: Relay, tmp_path: Path
) -> None:
    # printers with none configured answer at once (Collector.at_once): the report is queued
    # on the session by the time the request's frame is handled, no task is started for it
    # (the driver writes it after the frame); a collector that does I/O still runs in a task.
    from posassist.agent.diagnostics import Collector, default_collectors

    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    ctx = DiagContext(Settings())
    conn = AgentConnection(identity, ctx)
    async with _open(conn):
        ask = m.DiagnosticsRequest(id=3, device_id=identity.device_id, collectors=("printers",))
        conn.session.receive_data(CODEC.encode(ask))
        for event in conn.session.events_received():
            conn._answer(event, lambda: 1.0)
        assert not conn._tasks
        (frame,) = conn.session.data_to_send()
        report = CODEC.decode(frame)
        assert isinstance(report, m.DiagnosticsReport)
        assert (report.id, report.device_id, report.collected_at) == (3, identity.device_id, 1.0)
        assert report.sections["printers"]["ok"] is True
        assert "status" in report.sections["printers"]  # annotated, as from a task

        conn.collectors = [*default_collectors(), Collector("disk", lambda c: {"free": 1})]
        disk = m.DiagnosticsRequest(id=4, device_id=identity.device_id, collectors=("disk",))
        conn.session.receive_data(CODEC.encode(disk))
        for event in conn.session.events_received():
            conn._answer(event, lambda: 2.0)
        assert conn.session.data_to_send() == []
        (task,) = conn._tasks
        await asyncio.wait_for(task, 10)  # (it sends on the driver's connection: none here)


class _Recorder:
    """What an agent's session sends once open, and in which state it was (``Session.send``
    wrapped on the class for this session only: sessions have slots, no dict to patch)."""

    def __init__(self, conn: AgentConnection, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[SessionState, m.Message]] = []
        send = Session.send
        mine = conn.session

        def record(session: Session, msg: m.Message) -> None:
            if session is mine:
                self.sent.append((session.state, msg))
            send(session, msg)

        monkeypatch.setattr(Session, "send", record)

    def facts(self) -> list[tuple[SessionState, m.DeviceFacts]]:
        return [(state, msg) for state, msg in self.sent if isinstance(msg, m.DeviceFacts)]


async def test_agent_sends_its_facts_once_after_accepted(
    relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    ctx = DiagContext(
        Settings(printers=(PrinterConfig(name="receipt", host="127.0.0.1", port=9),)),
        profile=PosProfile(name="demo", display_name="Demo POS"),
    )
    conn = AgentConnection(identity, ctx)
    recorder = _Recorder(conn, monkeypatch)
    async with _open(conn) as connection:
        conn.connection = connection
        serving = asyncio.ensure_future(conn.serve(connection, conn.opened()))
        try:
            await wait_until(lambda: bool(_pending_facts(relay, identity.device_id)))
            facts = _pending_facts(relay, identity.device_id)  # what the relay received
            assert facts is not None
            await asyncio.sleep(1.5)  # a heartbeat later: still only the one
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    ((state, sent),) = recorder.facts()
    assert state is SessionState.OPEN  # after auth.accepted, never during the handshake
    assert [msg.TAG for _, msg in recorder.sent][:2] == ["hello", "auth.response"]
    received = CODEC.decode(CODEC.encode(sent))
    assert isinstance(received, m.DeviceFacts)
    assert facts == received.facts  # arrays arrive as tuples
    assert facts["hostname"] == platform.node()
    assert facts["agent_version"] == agent_version
    assert (facts["pos_profile"], facts["pos_name"]) == ("demo", "Demo POS")
    assert facts["printers"] == ({"name": "receipt", "target": "tcp://127.0.0.1:9", "model": None},)
    await relay.state.flush_presence()
    stored = await relay.state.storage.get_device(identity.device_id)
    assert stored.facts["hostname"] == platform.node()


def _pending_facts(relay: Relay, device_id: str) -> Mapping[str, Any] | None:
    entry = relay.state.presence.get(device_id)
    return None if entry is None else entry[2]


async def test_agent_sends_no_facts_to_a_relay_speaking_only_version_1(
    relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    # as a relay without v2 would agree
    conn = AgentConnection(identity, session=Session(Role.AGENT, versions=(1,)))
    recorder = _Recorder(conn, monkeypatch)
    async with _open(conn) as connection:
        conn.connection = connection
        opened = conn.opened()
        assert opened.version == 1
        serving = asyncio.ensure_future(conn.serve(connection, opened))
        try:
            await asyncio.sleep(1.5)
            assert not serving.done()  # still connected, nothing refused
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    assert recorder.facts() == []
    assert "heartbeat" in [msg.TAG for _, msg in recorder.sent]
    actions = [a for a, _, _ in await relay.audit_actions()]
    assert "agent.message" not in actions


@pytest.mark.parametrize(
    ("versions", "said"), [(SUPPORTED_VERSIONS, "never_received"), ((1, 2, 3), "unknown")]
)
async def test_a_job_the_till_never_received_is_answered_in_words_the_relay_knows(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    versions: tuple[int, ...],
    said: str,
) -> None:
    # docs/protocol.md#request-lifetime-relay: never_received is v4; a v3 relay hears unknown
    from posassist.agent.scripts.service import ScriptService
    from posassist.relay.storage import JobStatus

    identity = await asyncio.to_thread(enrol, await relay.invite(), tmp_path / "till")
    storage = relay.state.storage
    job = await storage.create_job(identity.device_id, "script.run", "tech", now=relay.clock())
    await storage.finish_job(job.id, JobStatus.UNKNOWN, now=relay.clock())
    reconciled = asyncio.Event()
    reconcile_job = storage.reconcile_job

    async def reconcile_and_tell(*args: Any, **kwargs: Any) -> Any:
        try:
            return await reconcile_job(*args, **kwargs)
        finally:
            reconciled.set()

    monkeypatch.setattr(storage, "reconcile_job", reconcile_and_tell)
    scripts = ScriptService(tmp_path / "till", identity.relay_url, None)  # type: ignore[arg-type]
    conn = AgentConnection(
        identity, scripts=scripts, session=Session(Role.AGENT, versions=versions)
    )
    recorder = _Recorder(conn, monkeypatch)
    async with _open(conn) as connection:
        conn.connection = connection
        serving = asyncio.ensure_future(conn.serve(connection, conn.opened()))
        try:
            await wait_until(lambda: any(isinstance(s, m.JobResults) for _, s in recorder.sent))
            (answer,) = [msg for _, msg in recorder.sent if isinstance(msg, m.JobResults)]
            assert [(r["job_id"], r["status"]) for r in answer.results] == [(job.id, said)]
            if said == "never_received":  # proof: the relay fails it as never delivered
                async with asyncio.timeout(10):
                    await reconciled.wait()
                failed = await storage.get_job(job.id)
                assert (failed.status, failed.error) == (
                    JobStatus.FAILED,
                    "never_delivered: the device never received this job",
                )
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await scripts.close()
