"""Load shedding of sign-ins (relay/limits.py ``HandshakeGate``): past ``max_handshakes_in_flight``
a new agent connection is answered 503 with a Retry-After before the upgrade (no handshake, no
audit record: load, not abuse), the sign-ins in flight finish, and an agent honours the wait
(agent/run.py) and then signs in. The pure gate is tested alone first."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from posassist.agent.config import Identity
from posassist.agent.run import run_agent
from posassist.relay.limits import (
    INITIAL_SIGN_IN_RATE,
    MAX_RETRY_AFTER,
    MIN_RETRY_AFTER,
    STALLED_AFTER,
    HandshakeGate,
)
from tests.relay.harness import Agent, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def test_the_gate_admits_up_to_its_limit_then_sheds_until_one_is_done() -> None:
    gate = HandshakeGate(2)
    first, second = gate.admit(0.0), gate.admit(0.0)
    assert first.ticket is not None
    assert second.ticket is not None
    assert gate.admit(0.0) == (None, MIN_RETRY_AFTER)
    assert (gate.in_flight(0.0), gate.shed) == (2, 1)
    gate.done(first.ticket, 0.1)
    assert gate.admit(0.1).ticket is not None
    assert gate.in_flight(0.1) == 2


def test_shed_agents_are_given_slots_one_after_another_at_the_relays_rate() -> None:
    gate = HandshakeGate(1)
    gate.admit(0.0)
    waits = [gate.admit(0.0).retry_after for _ in range(1000)]
    # a queue in time at the assumed rate until one is measured: 1 s, then 1/500 s apart
    assert waits[0] == MIN_RETRY_AFTER
    assert waits[1] == pytest.approx(MIN_RETRY_AFTER + 1 / INITIAL_SIGN_IN_RATE)
    assert waits[-1] == pytest.approx(MIN_RETRY_AFTER + 999 / INITIAL_SIGN_IN_RATE)
    assert len(set(waits)) == 1000  # spread, not one wave
    more = [gate.admit(0.0).retry_after for _ in range(40_000)]
    assert more[-1] == MAX_RETRY_AFTER  # never longer than the bound


def test_the_rate_is_measured_while_the_gate_is_full() -> None:
    gate = HandshakeGate(10)
    tickets = [gate.admit(0.0).ticket for _ in range(10)]
    assert gate.admit(0.0).ticket is None  # full: this second measures the relay's pace
    for _ in range(2000):  # 2,000 sign-ins completed in that second, each replaced
        ticket = tickets.pop(0)
        assert ticket is not None
        gate.done(ticket, 0.5)
        tickets.append(gate.admit(0.5).ticket)
    gate.admit(1.0)  # the bucket closes: half the old rate, half the new
    assert gate.rate == pytest.approx((INITIAL_SIGN_IN_RATE + 2000) / 2)


def test_a_quiet_second_does_not_lower_the_rate() -> None:
    gate = HandshakeGate(10)
    ticket = gate.admit(0.0).ticket
    assert ticket is not None
    gate.done(ticket, 0.5)  # one sign-in in a second: the agents' pace, not the relay's
    gate.admit(1.5)
    assert gate.rate == INITIAL_SIGN_IN_RATE


def test_the_queue_of_slots_does_not_lag_behind_now() -> None:
    gate = HandshakeGate(1)
    gate.admit(0.0)
    for _ in range(100):
        gate.admit(0.0)
    # much later the earlier slots are past: the next shed agent waits the least again
    assert gate.admit(100.0).ticket is not None  # (the first one stalled long ago)
    assert gate.admit(100.0) == (None, MIN_RETRY_AFTER)


def test_a_stalled_sign_in_stops_counting_so_idle_strangers_cannot_shut_the_gate() -> None:
    gate = HandshakeGate(2)
    gate.admit(0.0)
    gate.admit(0.0)  # two strangers who never say hello
    assert gate.admit(STALLED_AFTER - 0.1).ticket is None  # shed while they may be working
    assert gate.in_flight(STALLED_AFTER) == 0  # waiting on their peers: not counted
    assert gate.admit(STALLED_AFTER).ticket is not None
    late = gate.admit(STALLED_AFTER + 0.1)
    assert late.ticket is not None
    gate.done(0, STALLED_AFTER + 0.2)  # a stalled one ending later changes nothing
    assert gate.in_flight(STALLED_AFTER + 0.2) == 2


def test_no_shedding_with_a_limit_of_zero_and_no_negative_limit() -> None:
    gate = HandshakeGate(0)
    assert all(gate.admit(0.0).ticket is not None for _ in range(10_000))
    with pytest.raises(ValueError, match="max_in_flight"):
        HandshakeGate(-1)


async def test_a_sign_in_past_the_limit_is_answered_503_with_retry_after_and_not_audited(
    tmp_path: Path,
) -> None:
    relay = await start_relay(tmp_path, max_handshakes_in_flight=1)
    try:
        device_id, key = await relay.enrol()
        before = await relay.audit_actions()
        async with connect(relay.ws + "/v1/agent") as stranger:  # in flight: never says hello
            await wait_until(lambda: relay.state.handshake_gate.in_flight(relay.state.now()) == 1)
            with pytest.raises(InvalidStatus) as shed:
                async with connect(relay.ws + "/v1/agent"):
                    pass
            response = shed.value.response
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) >= 1
            # /metrics has its own listener in serve(); in process, read the registry itself
            assert 'posassist_relay_refusals_total{reason="overloaded"} 1.0' in (
                relay.metrics_text()
            )
            await stranger.close()
        # the one in flight ended: a real agent signs in again
        await wait_until(lambda: relay.state.handshake_gate.in_flight(relay.state.now()) == 0)
        async with Agent(relay, device_id, key):
            assert relay.state.router.agent(device_id) is not None
        assert (
            relay.state.handshake_gate.in_flight(relay.state.now()) == 0
        )  # serving agents are not in flight
        after = await relay.audit_actions()
        shed_records = [a for a in after[len(before) :] if a[1] == "refused"]
        assert shed_records == []  # load is not abuse: nothing written for the 503
    finally:
        await relay.server.close()


async def test_a_shed_agent_waits_the_retry_after_then_signs_in(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path, max_handshakes_in_flight=1)
    try:
        device_id, key = await relay.enrol()
        events: list[tuple[str, float, BaseException | None]] = []

        def delays() -> Iterator[float]:
            while True:
                yield 0.01  # its own schedule would try again at once

        async def on_open(opened: object) -> None:
            events.append(("open", time.monotonic(), None))

        stop = asyncio.Event()
        async with connect(relay.ws + "/v1/agent") as stranger:
            await wait_until(lambda: relay.state.handshake_gate.in_flight(relay.state.now()) == 1)
            agent = asyncio.ensure_future(
                run_agent(
                    Identity(device_id, relay.ws, key),
                    stop,
                    delays=delays,
                    on_open=on_open,
                    on_failure=lambda exc: events.append(("failed", time.monotonic(), exc)),
                )
            )
            try:
                await wait_until(lambda: len(events) >= 1)
                await stranger.close()
                await wait_until(lambda: any(kind == "open" for kind, _, _ in events))
            finally:
                stop.set()
                await asyncio.wait_for(agent, 10)
        kind, shed_at, exc = events[0]
        assert kind == "failed"
        assert isinstance(exc, InvalidStatus)
        assert exc.response.status_code == 503
        asked = float(exc.response.headers["Retry-After"])
        # the next try came no sooner than the relay asked, though its own schedule said 0.01 s
        assert events[1][1] - shed_at >= asked
    finally:
        await relay.server.close()
