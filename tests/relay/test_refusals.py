"""Refusals before sign-in, summarised: bounded records and memory, nothing uncounted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from posassist.relay.errors import StorageUnavailable
from posassist.relay.refusals import (
    MAX_REASONS,
    OVERFLOW_ADDRESS,
    RefusalLedger,
    pre_sign_in_address,
)
from tests.relay.harness import start_relay

if TYPE_CHECKING:
    from pathlib import Path


def test_the_first_refusal_of_a_window_is_written_the_rest_are_counted() -> None:
    ledger = RefusalLedger(window=60.0, max_keys=10)
    assert ledger.note("10.0.0.1", "device.enrol", "enrolment_refused", now=0.0)
    assert not any(
        ledger.note("10.0.0.1", "device.enrol", "enrolment_refused", now=1.0) for _ in range(999)
    )
    assert ledger.due(59.9) == []
    (summary,) = ledger.due(60.0)
    assert summary.actor == "ip:10.0.0.1"
    assert summary.action == "device.enrol"
    assert summary.count == 999
    assert summary.detail == {
        "summary": True,
        "count": 999,
        "since": 0.0,
        "until": 60.0,
        "reasons": {"enrolment_refused": 999},
    }
    assert len(ledger) == 0
    assert ledger.note("10.0.0.1", "device.enrol", "enrolment_refused", now=61.0)


def test_a_window_with_only_its_first_refusal_leaves_no_summary() -> None:
    ledger = RefusalLedger(window=10.0, max_keys=10)
    ledger.note("10.0.0.1", "api.auth", "token_invalid", now=0.0)
    assert ledger.due(10.0) == []
    assert len(ledger) == 0


def test_addresses_and_actions_are_counted_apart() -> None:
    ledger = RefusalLedger(window=10.0, max_keys=10)
    assert ledger.note("10.0.0.1", "api.auth", "token_invalid", now=0.0)
    assert ledger.note("10.0.0.2", "api.auth", "token_invalid", now=0.0)
    assert ledger.note("10.0.0.1", "user.login", "bad_credentials", now=0.0)


def test_a_flood_of_addresses_is_counted_under_one_overflow_key() -> None:
    ledger = RefusalLedger(window=10.0, max_keys=3)
    written = sum(
        ledger.note(f"10.0.{i // 256}.{i % 256}", "api.auth", "x", 0.0) for i in range(5000)
    )
    assert written == 4  # three addresses and the overflow key
    assert len(ledger) == 4
    summaries = ledger.drain(1.0)
    (overflow,) = [s for s in summaries if s.address == OVERFLOW_ADDRESS]
    assert overflow.count == 5000 - 4
    assert len(ledger) == 0


def test_reasons_per_summary_are_bounded() -> None:
    ledger = RefusalLedger(window=10.0, max_keys=3)
    for i in range(100):
        ledger.note("10.0.0.1", "agent.connect", f"reason{i}", now=0.0)
    (summary,) = ledger.drain(1.0)
    assert len(summary.reasons) == MAX_REASONS + 1
    assert sum(summary.reasons.values()) == summary.count == 99


def test_only_refusals_before_sign_in_are_summarised() -> None:
    assert pre_sign_in_address("ip:10.0.0.1", "device.enrol", None) == "10.0.0.1"
    assert pre_sign_in_address("device:dev_x", "agent.connect", {"peer": "10.0.0.2"}) == "10.0.0.2"
    assert pre_sign_in_address("device:dev_x", "agent.connect", None) == "unknown"
    assert pre_sign_in_address("user:tech", "diag.request", {"reason": "out of scope"}) is None
    assert pre_sign_in_address("device:dev_x", "agent.message", {"peer": "10.0.0.2"}) is None
    # failed sign-ins stay one record each (bounded by the sign-in rate limit), its refusals not
    assert pre_sign_in_address("ip:10.0.0.1", "user.login", {"reason": "bad password"}) is None
    limited = {"reason": "rate limited"}
    assert pre_sign_in_address("ip:10.0.0.1", "user.login", limited) == "10.0.0.1"
    assert pre_sign_in_address("user:tech", "diag.request", limited) is None


@pytest.mark.parametrize(("window", "max_keys"), [(0.0, 1), (1.0, 0)])
def test_ledger_refuses_nonsense(window: float, max_keys: int) -> None:
    with pytest.raises(ValueError):
        RefusalLedger(window, max_keys)


def test_summaries_that_could_not_be_written_are_handed_out_again() -> None:
    ledger = RefusalLedger(window=10.0, max_keys=2)
    for _ in range(3):
        ledger.note("10.0.0.1", "api.auth", "token_invalid", now=0.0)
    summaries = ledger.due(10.0)
    assert [s.count for s in summaries] == [2]
    assert ledger.put_back(summaries) == 0  # storage was down: try again later
    ledger.note("10.0.0.2", "api.auth", "token_invalid", now=11.0)
    ledger.note("10.0.0.2", "api.auth", "token_invalid", now=12.0)
    assert [(s.address, s.count) for s in ledger.due(21.0)] == [("10.0.0.1", 2), ("10.0.0.2", 1)]
    assert ledger.due(30.0) == []


def test_summaries_waiting_to_be_written_are_bounded() -> None:
    ledger = RefusalLedger(window=10.0, max_keys=2)
    for address in ("10.0.0.1", "10.0.0.2"):
        ledger.note(address, "api.auth", "x", now=0.0)
        ledger.note(address, "api.auth", "x", now=0.0)
    first = ledger.due(10.0)
    assert ledger.put_back(first) == 0
    ledger.note("10.0.0.3", "api.auth", "x", now=10.0)
    ledger.note("10.0.0.3", "api.auth", "x", now=10.0)
    (newest,) = [s for s in ledger.drain(11.0) if s.address == "10.0.0.3"]
    assert ledger.put_back([*first, newest]) == 1  # the oldest is dropped
    assert [s.address for s in ledger.drain(12.0)] == ["10.0.0.2", "10.0.0.3"]


async def test_a_summary_the_storage_refused_is_written_on_the_next_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = await start_relay(tmp_path)
    try:
        state = relay.state
        for _ in range(5):
            assert (await relay.get("/v1/devices"))[0] == 401  # no token: refused
        actions = await relay.audit_actions()
        assert actions.count(("api.auth", "refused", "relay")) == 1  # the first, in full

        real_append = state.storage.append
        failing = True

        async def append(**kwargs: Any) -> Any:
            if failing:
                raise StorageUnavailable("database down")
            return await real_append(**kwargs)

        monkeypatch.setattr(state.storage, "append", append)
        with pytest.raises(StorageUnavailable):
            await state.write_refusal_summaries(final=True)
        failing = False
        assert await state.write_refusal_summaries() == 1
        counts = [
            r.detail.get("count", 1)
            async for r in state.storage.records()
            if r.action == "api.auth"
        ]
        assert counts == [1, 4]
    finally:
        await relay.server.close()
