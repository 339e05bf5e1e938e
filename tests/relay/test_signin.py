"""Sign-in can't be turned against the user: a stranger's failures slow only the stranger, and
backed-off, unknown and wrong-password attempts can't be told apart by answer or by time."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import TYPE_CHECKING

import pytest
from aiohttp import ClientSession, TCPConnector

from posassist.relay import __main__ as relay_main
from posassist.relay.lockout import LoginBackoff
from tests.relay.harness import PASSWORD, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.relay.harness import Relay

STRANGER = "127.0.0.2"
ADMIN_DESK = "127.0.0.3"


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    # No per-address rate limit in the way, a long first wait (the test's own run time must not
    # end it) and revocations/unlocks followed quickly.
    relay = await start_relay(
        tmp_path, login_burst=10_000, login_backoff=60.0, presence_interval=0.05
    )
    try:
        yield relay
    finally:
        await relay.server.close()


async def login_from(
    relay: Relay, address: str, username: str, password: str
) -> tuple[int, dict[str, object], float]:
    """Sign in from a loopback ``address`` (Linux routes all of 127/8 to lo); with its duration."""
    connector = TCPConnector(local_addr=(address, 0))
    async with ClientSession(connector=connector) as http:
        started = time.perf_counter()
        async with http.post(
            relay.http + "/v1/login", json={"username": username, "password": password}
        ) as response:
            body = await response.json()
            return response.status, body, time.perf_counter() - started


async def test_five_wrong_passwords_from_a_stranger_leave_the_admin_signing_in(
    relay: Relay,
) -> None:
    for _ in range(5):
        status, _, _ = await login_from(relay, STRANGER, "admin", "guess guess guess")
        assert status == 401
    status, _, _ = await login_from(relay, STRANGER, "admin", PASSWORD)
    assert status == 401  # the stranger now waits, even with the right password
    status, body, _ = await login_from(relay, ADMIN_DESK, "admin", PASSWORD)
    assert status == 200, body  # the admin, from their own desk, is not locked out
    refusals = [
        (r.actor, r.detail.get("reason"))
        async for r in relay.state.storage.records()
        if (r.action, r.outcome) == ("user.login", "refused")
    ]
    assert refusals == [(f"ip:{STRANGER}", "bad password")] * 5 + [(f"ip:{STRANGER}", "locked out")]


async def test_fifty_guesses_at_once_get_no_more_looks_than_five_in_a_row(relay: Relay) -> None:
    answers = await asyncio.gather(
        *(login_from(relay, STRANGER, "admin", f"guess number {n}") for n in range(50))
    )
    assert {status for status, _, _ in answers} == {401}
    reasons = [
        r.detail.get("reason")
        async for r in relay.state.storage.records()
        if (r.action, r.outcome) == ("user.login", "refused")
    ]
    # only the budget's five were judged (one record each); the 45 refused unlooked-at are
    # audited as pre-sign-in refusals are: the first in full, the rest in a window's summary
    assert reasons.count("bad password") == 5, reasons
    assert reasons.count("locked out") == 1, reasons
    status, body, _ = await login_from(relay, ADMIN_DESK, "admin", PASSWORD)
    assert status == 200, body  # the admin from their own desk is not touched


async def test_backed_off_unknown_and_wrong_answer_alike_and_take_alike(relay: Relay) -> None:
    for _ in range(5):
        await login_from(relay, STRANGER, "viewer", "wrong wrong wrong")
    assert relay.state.login_backoff.blocked(STRANGER, "viewer", relay.clock())
    await login_from(relay, STRANGER, "ghost", "warm up the dummy hash")
    kinds = {
        "backed off": (STRANGER, "viewer", PASSWORD),  # even the right password
        "unknown": (STRANGER, "nobody-by-this-name", "whatever pass"),
        "wrong": (ADMIN_DESK, "tech", "wrong wrong wrong"),
    }
    answers: dict[str, set[tuple[int, str]]] = {kind: set() for kind in kinds}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(4):  # interleaved, so load on the machine hits every kind alike
        for kind, (address, username, password) in kinds.items():
            status, body, took = await login_from(relay, address, username, password)
            answers[kind].add((status, repr(sorted(body.items()))))
            times[kind].append(took)
    assert answers["backed off"] == answers["unknown"] == answers["wrong"]
    (only,) = answers["wrong"]
    assert only[0] == 401
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    # Every kind runs one scrypt (tens of ms): a locked account answering in a few ms, as it
    # did, would be many times faster than a wrong password. The bound is generous (a shared,
    # busy machine), the difference it catches is not.
    assert max(medians.values()) < 2.5 * min(medians.values()), medians


async def test_operator_unlock_lets_the_user_in_at_once_and_is_audited(
    relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(6):
        await login_from(relay, ADMIN_DESK, "tech", "fat fingers fat")
    status, _, _ = await login_from(relay, ADMIN_DESK, "tech", PASSWORD)
    assert status == 401  # backed off for a minute or more
    data = str(relay.state.config.data_dir)
    code = await asyncio.to_thread(relay_main.main, ["user", "unlock", "tech", "--data", data])
    assert code == 0
    assert "user tech unlocked" in capsys.readouterr().out
    # the running relay follows the audited unlock
    await wait_until(
        lambda: not relay.state.login_backoff.blocked(ADMIN_DESK, "tech", relay.clock())
    )
    status, body, _ = await login_from(relay, ADMIN_DESK, "tech", PASSWORD)
    assert status == 200, body
    assert ("user.unlock", "ok", "user:tech") in await relay.audit_actions()
    missing = await asyncio.to_thread(relay_main.main, ["user", "unlock", "ghost", "--data", data])
    assert missing == 2
    assert "no user ghost" in capsys.readouterr().err


@pytest.mark.slow
async def test_a_stranger_cycling_through_names_grows_the_audit_log_boundedly(
    relay: Relay,
) -> None:
    """Unknown names and backed-off tries are summarised (nothing was looked at); a wrong
    password for a real user stays one record each, and the back-off keeps those few."""
    before = len([r async for r in relay.state.storage.records()])
    unknown, admin = 60, 20

    async def guesses() -> list[int]:
        statuses = []
        connector = TCPConnector(local_addr=(STRANGER, 0), limit=8)
        async with ClientSession(connector=connector) as http:

            async def one(username: str) -> None:
                body = {"username": username, "password": "guess guess guess"}
                async with http.post(relay.http + "/v1/login", json=body) as response:
                    statuses.append(response.status)

            await asyncio.gather(*(one(f"user{i}\x1b[2J") for i in range(unknown)))
            for _ in range(admin):  # in order: the back-off starts after the fifth
                await one("admin")
        return statuses

    statuses = await guesses()
    assert statuses == [401] * (unknown + admin)
    await relay.state.write_refusal_summaries(final=True)
    rows = [r async for r in relay.state.storage.records()][before:]
    refusals = [r for r in rows if (r.action, r.outcome) == ("user.login", "refused")]
    # every try is in exactly one record, alone or counted ...
    assert sum(int(r.detail.get("count", 1)) for r in refusals) == unknown + admin
    # ... and the records are few: one per wrong password for the real user, the first of the
    # rest in full, and one summary of the others (by reason)
    reasons = [str(r.detail.get("reason")) for r in refusals if not r.detail.get("summary")]
    assert sorted(reasons) == sorted(["bad password"] * 5 + ["unknown user"]), reasons
    (summary,) = [r for r in refusals if r.detail.get("summary")]
    assert summary.detail["reasons"] == {"bad_credentials": unknown - 1, "locked_out": admin - 5}
    assert summary.actor == f"ip:{STRANGER}"
    # and the admin, from their own desk, signs in all the same
    status, body, _ = await login_from(relay, ADMIN_DESK, "admin", PASSWORD)
    assert status == 200, body


# -- the back-off itself (pure) -----------------------------------------------------------------


def test_backoff_doubles_from_the_first_wait_up_to_the_longest() -> None:
    backoff = LoginBackoff(max_failures=3, base_delay=2.0, max_delay=20.0)
    waits = []
    for now in range(8):
        backoff.failed("a", "u", float(now))
        waits.append(backoff.retry_after("a", "u", float(now)))
    assert waits == [0.0, 0.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    assert not backoff.blocked("b", "u", 7.0)  # another address: untouched
    assert not backoff.blocked("a", "v", 7.0)  # another name: untouched
    assert backoff.blocked("a", "u", 26.9)
    assert not backoff.blocked("a", "u", 27.0)


def test_failed_tries_per_name_are_the_worst_address_and_locked_from_the_budget_on() -> None:
    backoff = LoginBackoff(max_failures=3, base_delay=2.0, max_delay=20.0, forget_after=100.0)
    assert backoff.failed_tries(0.0) == {}
    backoff.failed("a", "u", 0.0)
    for _ in range(2):
        backoff.failed("b", "u", 0.0)
    backoff.failed("a", "v", 0.0)
    assert backoff.failed_tries(1.0) == {"u": (2, False), "v": (1, False)}
    backoff.failed("b", "u", 1.0)  # the third in a row from b: backed off
    assert backoff.failed_tries(50.0) == {"u": (3, True), "v": (1, False)}  # past the wait too
    assert backoff.failed_tries(150.0) == {}  # forgotten
    backoff.failed("a", "u", 200.0)
    backoff.unlock("u")
    assert backoff.failed_tries(200.0) == {}


def test_tries_being_judged_hold_the_budget() -> None:
    backoff = LoginBackoff(max_failures=3, base_delay=2.0, max_delay=20.0)
    assert [backoff.begin("a", "u", 0.0) for _ in range(5)] == [True] * 3 + [False] * 2
    assert backoff.begin("b", "u", 0.0)  # another address has its own budget
    for _ in range(3):
        backoff.end("a", "u")
        backoff.failed("a", "u", 0.0)
    assert not backoff.begin("a", "u", 1.0)  # backed off for 2 s
    # past the wait: one try at a time is looked at
    assert [backoff.begin("a", "u", 2.0) for _ in range(3)] == [True, False, False]
    backoff.end("a", "u")
    backoff.succeeded("a", "u")
    assert backoff.begin("a", "u", 2.0)


def test_judging_ends_the_try_even_when_the_block_raises() -> None:
    backoff = LoginBackoff(max_failures=1, base_delay=2.0, max_delay=20.0)
    held: list[bool] = []

    def judge_while_storage_fails() -> None:
        with backoff.judging("a", "u", 0.0) as looked_at:
            held.append(looked_at)
            held.append(not backoff.begin("a", "u", 0.0))  # the one place in the budget is held
            raise OSError("storage gone")

    with pytest.raises(OSError, match="storage gone"):
        judge_while_storage_fails()
    assert held == [True, True]
    with backoff.judging("a", "u", 0.0) as looked_at:  # the place was given back
        assert looked_at
    assert not backoff.blocked("a", "u", 0.0)  # a raise is no failure: nothing was judged
    assert backoff.begin("a", "u", 0.0)  # another try holds the one place...
    with backoff.judging("a", "u", 0.0) as looked_at:  # ...so this one is not looked at
        assert not looked_at
    assert not backoff.begin("a", "u", 0.0)  # and gave back no place it did not hold


def test_backoff_forgets_success_unlock_old_failures_and_the_least_recent() -> None:
    backoff = LoginBackoff(max_failures=1, base_delay=1.0, max_delay=8.0, forget_after=100.0)
    backoff.failed("a", "u", 0.0)
    backoff.succeeded("a", "u")
    assert not backoff.blocked("a", "u", 0.0)
    for address in ("a", "b", "c"):
        backoff.failed(address, "u", 0.0)
    backoff.failed("a", "other", 0.0)
    assert backoff.unlock("u") == 3
    assert len(backoff) == 1
    backoff.failed("a", "other", 1.0)
    assert backoff.blocked("a", "other", 2.5)
    assert backoff.retry_after("a", "other", 200.0) == 0.0  # forgotten after forget_after
    assert len(backoff) == 0
    small = LoginBackoff(max_keys=2)
    for address in ("a", "b", "c"):
        small.failed(address, "u", 0.0)
    assert len(small) == 2
    with pytest.raises(ValueError, match="back-off"):
        LoginBackoff(max_failures=0)
