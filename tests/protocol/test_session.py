"""The Session state machine: both handshakes, requests and replies, and every illegal move."""

from __future__ import annotations

import pytest

from posassist.protocol import (
    SUPPORTED_VERSIONS,
    Codec,
    LocalProtocolError,
    ProtocolError,
    Role,
    Session,
    SessionState,
    TooManyRequests,
    UnexpectedMessage,
    UnknownReply,
    UnsupportedVersion,
)
from posassist.protocol import messages as m
from posassist.protocol.session import MAX_ABANDONED, SILENCE_FACTOR
from posassist.protocol.states import SINCE_VERSION

NONCE = b"n" * 32
SIG = b"s" * 64
CODEC = Codec()


def pump(src: Session, dst: Session) -> list[m.Message]:
    for frame in src.data_to_send():
        dst.receive_data(frame)
    return dst.events_received()


def open_agent_pair(versions: tuple[int, ...] = SUPPORTED_VERSIONS) -> tuple[Session, Session]:
    agent, relay = Session(Role.AGENT, versions=versions), Session(Role.RELAY_FOR_AGENT)
    agent.send_hello("agent/1")
    (hello,) = pump(agent, relay)
    assert isinstance(hello, m.Hello)
    assert relay.version == max(versions)
    assert relay.peer_hello == hello
    relay.send_welcome("relay-1", "relay/1")
    relay.send_challenge(NONCE)
    welcome, challenge = pump(relay, agent)
    assert isinstance(welcome, m.Welcome)
    assert agent.peer_welcome == welcome
    assert isinstance(challenge, m.AuthChallenge)
    assert agent.state is SessionState.CHALLENGED
    agent.send_auth_response("dev-1", SIG)
    (response,) = pump(agent, relay)
    assert isinstance(response, m.AuthResponse)
    relay.send_accepted("dev-1", 20.0)
    (accepted,) = pump(relay, agent)
    assert isinstance(accepted, m.AuthAccepted)
    assert (agent.state, relay.state) == (SessionState.OPEN, SessionState.OPEN)
    return agent, relay


def open_console_pair() -> tuple[Session, Session]:
    console, relay = Session(Role.CONSOLE), Session(Role.RELAY_FOR_CONSOLE)
    console.send_hello("console/1")
    pump(console, relay)
    relay.send_welcome("relay-1", "relay/1")
    pump(relay, console)
    console.send_token("tok")
    (token,) = pump(console, relay)
    assert isinstance(token, m.TokenAuth)
    relay.send_accepted("li.wei", 20.0)
    pump(relay, console)
    assert console.state is relay.state is SessionState.OPEN
    return console, relay


def test_agent_handshake_opens_both_sides() -> None:
    open_agent_pair()


def test_console_handshake_opens_both_sides() -> None:
    open_console_pair()


def test_refused_agent_session_closes() -> None:
    agent, relay = Session(Role.AGENT), Session(Role.RELAY_FOR_AGENT)
    agent.send_hello("a")
    pump(agent, relay)
    relay.send_welcome("r", "r")
    relay.send_challenge(NONCE)
    pump(relay, agent)
    agent.send_auth_response("dev-1", SIG)
    pump(agent, relay)
    relay.send_refused("revoked")
    (refused,) = pump(relay, agent)
    assert isinstance(refused, m.AuthRefused)
    assert agent.state is relay.state is SessionState.CLOSED
    with pytest.raises(LocalProtocolError):
        agent.send_heartbeat(1, 1.0)
    with pytest.raises(UnexpectedMessage):
        agent.receive_data(CODEC.encode(m.Heartbeat(seq=1, sent_at=1.0)))


def test_version_negotiation_picks_highest_common() -> None:
    agent = Session(Role.AGENT, versions=(1, 2, 3))
    relay = Session(Role.RELAY_FOR_AGENT, versions=(1, 2))
    agent.send_hello("a")
    pump(agent, relay)
    assert relay.version == 2
    relay.send_welcome("r", "r")
    pump(relay, agent)
    assert agent.version == 2


def test_relay_refuses_hello_with_no_common_version() -> None:
    agent = Session(Role.AGENT, versions=(8, 9))
    relay = Session(Role.RELAY_FOR_AGENT)
    agent.send_hello("a")
    with pytest.raises(UnsupportedVersion) as info:
        pump(agent, relay)
    assert info.value.close_code == 4000
    assert relay.state is SessionState.CLOSED
    assert relay.error is info.value


def test_agent_refuses_welcome_with_version_it_did_not_offer() -> None:
    agent = Session(Role.AGENT, versions=(1,))
    relay = Session(Role.RELAY_FOR_AGENT, versions=(1, 2))
    agent.send_hello("a")
    pump(agent, relay)
    relay.version = 2  # a relay that ignores negotiation
    relay.send_welcome("r", "r")
    with pytest.raises(UnsupportedVersion):
        pump(relay, agent)


def test_console_hello_on_agent_endpoint_is_unexpected() -> None:
    console, relay = Session(Role.CONSOLE), Session(Role.RELAY_FOR_AGENT)
    console.send_hello("c")
    with pytest.raises(UnexpectedMessage):
        pump(console, relay)


@pytest.mark.parametrize(
    ("role", "message"),
    [
        (Role.RELAY_FOR_AGENT, m.Heartbeat(seq=1, sent_at=1.0)),  # before hello
        (Role.RELAY_FOR_AGENT, m.AuthResponse(device_id="d", signature=SIG)),  # skipping hello
        (Role.AGENT, m.AuthAccepted(principal="d", heartbeat_interval=5.0)),  # before challenge
        (Role.AGENT, m.Hello(role="agent", versions=(1,), software="")),  # hello to a client
        (Role.RELAY_FOR_CONSOLE, m.DiagnosticsRequest(id=1, device_id="d")),
    ],
    ids=["heartbeat-first", "auth-first", "accepted-first", "hello-to-client", "request-first"],
)
def test_message_illegal_in_state_is_protocol_error(role: Role, message: m.Message) -> None:
    session = Session(role)
    with pytest.raises(UnexpectedMessage) as info:
        session.receive_data(CODEC.encode(message))
    assert info.value.close_code == 1002
    assert session.state is SessionState.CLOSED


def test_sending_out_of_order_is_local_error_and_changes_nothing() -> None:
    agent = Session(Role.AGENT)
    with pytest.raises(LocalProtocolError):
        agent.send_auth_response("d", SIG)
    assert agent.state is SessionState.IDLE
    assert agent.data_to_send() == []


def test_request_reply_correlation_and_streaming() -> None:
    agent, relay = open_agent_pair()
    rid = relay.next_id()
    relay.send(m.ScriptRunRequest(id=rid, device_id="dev-1", script="s", version="1"))
    (request,) = pump(relay, agent)
    assert agent.requests_to_answer == 1
    agent.send(m.ScriptStarted(id=rid, job_id="j", started_at=1.0))
    agent.send(m.ScriptOutput(id=rid, job_id="j", seq=0, stream="stdout", data=b"x"))
    agent.send(m.ScriptFinished(id=rid, job_id="j", status="succeeded", finished_at=2.0))
    events = pump(agent, relay)
    assert [e.TAG for e in events] == ["script.started", "script.output", "script.finished"]
    assert relay.requests_in_flight == 0
    assert agent.requests_to_answer == 0
    assert request.TAG == "script.run"


def test_error_reply_answers_any_request() -> None:
    agent, relay = open_agent_pair()
    agent.send(
        m.HelpRequested(
            id=agent.next_id(), device_id="dev-1", category="printer", description="纸卡住了"
        )
    )
    (help_request,) = pump(agent, relay)
    relay.send(m.ErrorReply(id=help_request.id, code="busy", message="try later"))  # type: ignore[attr-defined]
    (error,) = pump(relay, agent)
    assert isinstance(error, m.ErrorReply)
    assert agent.requests_in_flight == 0


def test_reply_with_unknown_id_is_protocol_error() -> None:
    _agent, relay = open_agent_pair()
    with pytest.raises(UnknownReply) as info:
        relay.receive_data(
            CODEC.encode(
                m.DiagnosticsReport(id=99, device_id="dev-1", collected_at=1.0, sections={})
            )
        )
    assert info.value.close_code == 1002
    assert relay.state is SessionState.CLOSED


def test_reply_of_wrong_kind_is_protocol_error() -> None:
    agent, relay = open_agent_pair()
    relay.send(m.DiagnosticsRequest(id=1, device_id="dev-1"))
    pump(relay, agent)
    with pytest.raises(UnknownReply):
        relay.receive_data(CODEC.encode(m.ConsentAnswer(id=1, granted=True)))


def test_replying_to_unknown_request_is_local_error() -> None:
    agent, _relay = open_agent_pair()
    with pytest.raises(LocalProtocolError):
        agent.send(m.ConsentAnswer(id=5, granted=False))
    assert agent.state is SessionState.OPEN


def test_message_in_wrong_direction() -> None:
    agent, relay = open_agent_pair()
    with pytest.raises(LocalProtocolError):
        agent.send(m.DiagnosticsRequest(id=1, device_id="dev-1"))
    with pytest.raises(UnexpectedMessage):
        relay.receive_data(
            CODEC.encode(m.ScriptRunRequest(id=1, device_id="d", script="s", version="1"))
        )


def test_duplicate_request_id() -> None:
    agent, relay = open_agent_pair()
    relay.send(m.DiagnosticsRequest(id=1, device_id="dev-1"))
    with pytest.raises(LocalProtocolError):
        relay.send(m.DiagnosticsRequest(id=1, device_id="dev-1"))
    pump(relay, agent)
    with pytest.raises(UnexpectedMessage):
        agent.receive_data(CODEC.encode(m.DiagnosticsRequest(id=1, device_id="dev-1")))


def test_peer_flooding_requests_is_refused() -> None:
    agent = Session(Role.AGENT, max_in_flight=2)
    relay = Session(Role.RELAY_FOR_AGENT, max_in_flight=10)
    agent.send_hello("a")
    pump(agent, relay)
    relay.send_welcome("r", "r")
    relay.send_challenge(NONCE)
    pump(relay, agent)
    agent.send_auth_response("d", SIG)
    pump(agent, relay)
    relay.send_accepted("d", 5.0)
    pump(relay, agent)
    for rid in (1, 2, 3):
        relay.send(m.DiagnosticsRequest(id=rid, device_id="d"))
    with pytest.raises(TooManyRequests) as info:
        pump(relay, agent)
    assert info.value.close_code == 1008


def test_sending_more_than_max_in_flight_is_local_error() -> None:
    _agent, relay = open_agent_pair()
    relay.max_in_flight = 1
    relay.send(m.DiagnosticsRequest(id=1, device_id="d"))
    with pytest.raises(LocalProtocolError):
        relay.send(m.DiagnosticsRequest(id=2, device_id="d"))


def test_late_reply_to_abandoned_request_is_dropped_quietly() -> None:
    agent, relay = open_agent_pair()
    relay.send(m.ScriptRunRequest(id=1, device_id="d", script="s", version="1"))
    pump(relay, agent)
    relay.abandon(1)
    relay.abandon(1)  # twice is harmless
    assert relay.requests_in_flight == 0
    agent.send(m.ScriptOutput(id=1, job_id="j", seq=0, stream="stdout", data=b""))
    agent.send(m.ScriptFinished(id=1, job_id="j", status="timed_out", finished_at=1.0))
    assert pump(agent, relay) == []
    # after the terminal reply the id is forgotten: another reply is unknown
    with pytest.raises(UnknownReply):
        relay.receive_data(CODEC.encode(m.ErrorReply(id=1, code="x", message="")))


def test_abandoned_ids_are_bounded() -> None:
    _agent, relay = open_agent_pair()
    relay.max_in_flight = MAX_ABANDONED + 10
    for rid in range(1, MAX_ABANDONED + 6):
        relay.send(m.DiagnosticsRequest(id=rid, device_id="d"))
        relay.abandon(rid)
    assert len(relay._abandoned) == MAX_ABANDONED
    assert 1 not in relay._abandoned


FACTS = m.DeviceFacts(facts={"hostname": "TILL-01", "printers": ({"name": "receipt"},)})


def test_open_agent_sends_facts_to_the_relay() -> None:
    agent, relay = open_agent_pair()
    assert agent.version == relay.version == max(SUPPORTED_VERSIONS)
    agent.send(FACTS)
    assert pump(agent, relay) == [FACTS]
    # an event: nothing is waiting for an answer on either side
    assert (agent.requests_in_flight, relay.requests_to_answer) == (0, 0)


def test_facts_need_protocol_version_2_on_both_sides() -> None:
    agent, relay = open_agent_pair(versions=(1,))
    assert agent.version == relay.version == 1
    with pytest.raises(LocalProtocolError, match="version 1"):
        agent.send(FACTS)
    assert agent.state is SessionState.OPEN  # refused before anything was queued
    assert agent.data_to_send() == []
    with pytest.raises(UnexpectedMessage, match="version 1") as info:
        relay.receive_data(CODEC.encode(FACTS))
    assert info.value.close_code == 1002
    assert relay.state is SessionState.CLOSED


@pytest.mark.parametrize(
    "role", [Role.RELAY_FOR_AGENT, Role.AGENT, Role.CONSOLE, Role.RELAY_FOR_CONSOLE]
)
def test_nobody_receives_facts_before_the_handshake(role: Role) -> None:
    session = Session(role)
    with pytest.raises(UnexpectedMessage):
        session.receive_data(CODEC.encode(FACTS))
    assert session.state is SessionState.CLOSED


def test_facts_during_the_agent_handshake_are_refused() -> None:
    agent, relay = Session(Role.AGENT), Session(Role.RELAY_FOR_AGENT)
    agent.send_hello("a")
    pump(agent, relay)
    relay.send_welcome("r", "r")
    relay.send_challenge(NONCE)
    pump(relay, agent)
    with pytest.raises(LocalProtocolError):
        agent.send(FACTS)  # not authenticated yet
    with pytest.raises(UnexpectedMessage):
        relay.receive_data(CODEC.encode(FACTS))


def test_only_an_agent_sends_facts_and_only_a_relay_receives_them() -> None:
    agent, relay = open_agent_pair()
    with pytest.raises(LocalProtocolError):
        relay.send(FACTS)
    with pytest.raises(UnexpectedMessage):
        agent.receive_data(CODEC.encode(FACTS))
    console, relay_for_console = open_console_pair()
    with pytest.raises(LocalProtocolError):
        console.send(FACTS)
    with pytest.raises(LocalProtocolError):
        relay_for_console.send(FACTS)
    with pytest.raises(UnexpectedMessage):
        relay_for_console.receive_data(CODEC.encode(FACTS))
    with pytest.raises(UnexpectedMessage):
        console.receive_data(CODEC.encode(FACTS))


def test_heartbeat_and_ack_both_ways() -> None:
    console, relay = open_console_pair()
    console.send_heartbeat(1, 10.0)
    (beat,) = pump(console, relay)
    assert isinstance(beat, m.Heartbeat)
    relay.send_heartbeat_ack(beat, 10.5)
    (ack,) = pump(relay, console)
    assert ack == m.HeartbeatAck(seq=1, sent_at=10.0, received_at=10.5)


def test_close_stops_everything() -> None:
    console, _relay = open_console_pair()
    console.close()
    with pytest.raises(LocalProtocolError):
        console.send_heartbeat(1, 1.0)


def test_protocol_error_from_codec_closes_session() -> None:
    _console, relay = open_console_pair()
    with pytest.raises(ProtocolError):
        relay.receive_data(b"\xc1")
    assert relay.state is SessionState.CLOSED
    assert relay.error is not None


def test_too_big_to_send_changes_nothing() -> None:
    from posassist.protocol import Limits

    agent = Session(Role.AGENT, codec=Codec(limits=Limits(max_frame=16)))
    with pytest.raises(LocalProtocolError):
        agent.send_hello("x" * 100)
    assert agent.state is SessionState.IDLE


def test_role_properties() -> None:
    assert Role.RELAY_FOR_AGENT.is_relay
    assert not Role.AGENT.is_relay
    assert Role.CONSOLE.client_role == "console"
    assert Role.RELAY_FOR_AGENT.client_role == "agent"


def test_relay_forwards_a_request_and_its_replies_under_new_ids() -> None:
    # The relay's send_with_id: the agent sees the relay's id, the console its own, and both
    # sessions track the request under the id they know (docs/protocol.md#request-ids).
    console, relay_c = open_console_pair()
    agent, relay_a = open_agent_pair()
    console.send(m.ScriptRunRequest(id=7, device_id="dev-1", script="s", version="1"))
    (request,) = pump(console, relay_c)
    agent_id = relay_a.next_id()
    relay_a.send_with_id(request, agent_id)
    (forwarded,) = pump(relay_a, agent)
    assert forwarded == request.with_id(agent_id)
    assert relay_a.requests_in_flight == 1
    agent.send(m.ScriptOutput(id=agent_id, job_id="j", seq=0, stream="stdout", data=b"x"))
    agent.send(m.ScriptFinished(id=agent_id, job_id="j", status="succeeded", finished_at=2.0))
    output, finished = pump(agent, relay_a)
    relay_c.send_with_id(output, 7)
    assert relay_c.requests_to_answer == 1  # not terminal
    relay_c.send_with_id(finished, 7)
    assert pump(relay_c, console) == [output.with_id(7), finished.with_id(7)]
    assert relay_c.requests_to_answer == 0
    assert console.requests_in_flight == 0


def test_forwarding_under_an_id_nobody_asked_for_changes_nothing() -> None:
    _console, relay_c = open_console_pair()
    output = m.ScriptOutput(id=3, job_id="j", seq=0, stream="stdout", data=b"x")
    with pytest.raises(LocalProtocolError, match="cannot send"):
        relay_c.send_with_id(output, 9)
    with pytest.raises(LocalProtocolError, match="cannot take request id"):
        relay_c.send_with_id(output, 0)
    assert relay_c.state is SessionState.OPEN
    assert relay_c.data_to_send() == []
    relay_c.close()
    with pytest.raises(LocalProtocolError, match="cannot forward"):
        relay_c.send_with_id(output, 3)
    idle = Session(Role.RELAY_FOR_AGENT)
    with pytest.raises(LocalProtocolError, match="in state IDLE"):
        idle.send_with_id(m.DiagnosticsRequest(id=1, device_id="dev-1"), 1)
    assert idle.data_to_send() == []


def test_job_query_needs_protocol_version_3_and_is_answered_by_job_results() -> None:
    agent, relay = open_agent_pair(versions=(1, 2))
    with pytest.raises(LocalProtocolError, match="version 2"):
        relay.send(m.JobQuery(id=1, job_ids=("job-1",)))
    agent, relay = open_agent_pair()
    relay.send(m.JobQuery(id=1, job_ids=("job-1",)))
    assert pump(relay, agent) == [m.JobQuery(id=1, job_ids=("job-1",))]
    answer = m.JobResults(id=1, results=())
    agent.send(answer)
    assert pump(agent, relay) == [answer]
    assert relay.requests_in_flight == 0
    with pytest.raises(LocalProtocolError):
        agent.send(m.JobQuery(id=2, job_ids=("job-1",)))  # only the relay asks


def test_script_cancel_needs_protocol_version_7_and_is_answered_by_finished_or_error() -> None:
    cancel = m.ScriptCancel(id=1, job_id="job-1")
    agent, relay = open_agent_pair(versions=(1, 2, 3, 4, 5, 6))
    with pytest.raises(LocalProtocolError, match="version 6"):
        relay.send(cancel)
    assert relay.data_to_send() == []  # nothing reaches an older agent
    agent, relay = open_agent_pair()
    assert SINCE_VERSION["script.cancel"] == 7 == relay.version
    relay.send(cancel)
    assert pump(relay, agent) == [cancel]
    ended = m.ScriptFinished(id=1, job_id="job-1", status="cancelled", finished_at=2.0)
    agent.send(ended)
    assert pump(agent, relay) == [ended]
    assert relay.requests_in_flight == 0
    relay.send(m.ScriptCancel(id=2, job_id="job-2"))
    pump(relay, agent)
    refused = m.ErrorReply(id=2, code="not_running", message="job-2 is not running")
    agent.send(refused)
    assert pump(agent, relay) == [refused]
    with pytest.raises(LocalProtocolError):
        agent.send(m.ScriptCancel(id=3, job_id="job-1"))  # only the relay cancels
    relay.send(m.ScriptCancel(id=4, job_id="job-3"))
    pump(relay, agent)
    with pytest.raises(LocalProtocolError):  # a cancel is answered by its end, never a report
        agent.send(m.ScriptStarted(id=4, job_id="job-3", started_at=1.0))


def test_a_console_can_not_send_a_cancel() -> None:
    console, relay = open_console_pair()
    with pytest.raises(LocalProtocolError):
        console.send(m.ScriptCancel(id=1, job_id="job-1"))
    with pytest.raises(LocalProtocolError):
        relay.send(m.ScriptCancel(id=1, job_id="job-1"))


# --- liveness (docs/protocol.md#liveness) ------------------------------------------------------


def test_liveness_is_unknown_until_the_session_opens() -> None:
    agent = Session(Role.AGENT)
    assert agent.silence_deadline() is None
    assert agent.next_heartbeat_at() is None
    assert not agent.heartbeat_due(1e9)
    assert not agent.peer_silent(1e9)
    agent.data_received(5.0)  # traffic but no interval yet
    assert agent.peer_silent_since == 5.0
    assert agent.silence_deadline() is None


def test_client_learns_the_interval_from_auth_accepted_and_any_traffic_moves_the_deadline() -> None:
    console, relay = Session(Role.CONSOLE), Session(Role.RELAY_FOR_CONSOLE)
    console.send_hello("console/1")
    pump(console, relay)
    relay.send_welcome("relay-1", "relay/1")
    pump(relay, console)
    console.send_token("tok")
    relay.data_received(99.0)
    pump(console, relay)
    relay.send_accepted("li.wei", 2.0)
    assert relay.heartbeat_interval == 2.0  # the relay knows what it sent
    assert relay.silence_deadline() == 99.0 + SILENCE_FACTOR * 2.0
    console.data_received(100.0)  # the frame carrying auth.accepted
    pump(relay, console)
    assert console.heartbeat_interval == 2.0
    assert console.silence_deadline() == 100.0 + SILENCE_FACTOR * 2.0
    assert not console.peer_silent(100.0 + SILENCE_FACTOR * 2.0 - 0.01)
    assert console.peer_silent(100.0 + SILENCE_FACTOR * 2.0)
    console.data_received(102.5)  # a ping, a pong, a frame: all the same
    assert console.peer_silent_since == 102.5
    assert console.silence_deadline() == 102.5 + SILENCE_FACTOR * 2.0
    assert not console.peer_silent(104.0)


def test_heartbeat_is_due_one_interval_after_opening_then_after_each_heartbeat() -> None:
    agent, _relay = open_agent_pair()  # heartbeat interval 20 s
    agent.data_received(0.0)
    agent._opened(20.0)  # as if auth.accepted had arrived at 0.0
    assert agent.next_heartbeat_at() == 20.0
    assert not agent.heartbeat_due(19.9)
    assert agent.heartbeat_due(20.0)
    agent.send_heartbeat(0, 20.3, sent_at=1_700_000_000.0)  # wall-clock stamp, liveness clock
    (frame,) = agent.data_to_send()
    beat = CODEC.decode(frame)
    assert isinstance(beat, m.Heartbeat)
    assert beat.sent_at == 1_700_000_000.0
    assert agent.next_heartbeat_at() == 40.3
    assert not agent.heartbeat_due(40.0)


def test_no_heartbeat_is_due_on_a_closed_session() -> None:
    agent, _relay = open_agent_pair()
    agent.data_received(0.0)
    agent._opened(20.0)
    agent.close()
    assert not agent.heartbeat_due(100.0)


def test_silence_factor_lets_an_agent_notice_a_silent_relay_within_two_intervals() -> None:
    # heartbeats every interval, answered at once: the last frame came at most one interval
    # before the relay fell silent, and the deadline is SILENCE_FACTOR intervals after it.
    assert 1.0 < SILENCE_FACTOR < 2.0
