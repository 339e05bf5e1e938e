"""The pure rule for connections that have not signed in: caps, deadlines, trust."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest
from aiohttp import ClientSession, web

from posassist.relay.limits import (
    GUARD,
    ConnectionGuard,
    ConnectionLimits,
    ConnectionTable,
    HandshakeBudget,
    Refusal,
    address_key,
    fit_to_descriptors,
    guard_middleware,
    trust_connection,
)
from posassist.relay.ratelimit import KeyedLimiter
from tests.relay.harness import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

LIMITS = ConnectionLimits(
    header_timeout=10.0,
    idle_timeout=15.0,
    http_request_timeout=30.0,
    max_unauthenticated=4,
    max_unauthenticated_per_address=2,
)


def test_a_new_connection_must_send_its_request_head_by_the_header_deadline() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    assert table.admit("a", "10.0.0.1", now=100.0) is None
    assert table.deadline("a") == 110.0
    assert table.expired(109.9) == []
    assert table.expired(110.0) == ["a"]


def test_connections_over_the_per_address_cap_are_refused_others_are_not() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    assert table.admit("a", "10.0.0.1", now=0.0) is None
    assert table.admit("b", "10.0.0.1", now=0.0) is None
    assert table.admit("c", "10.0.0.1", now=0.0) is Refusal.TOO_MANY_FROM_ADDRESS
    assert "c" not in table
    assert table.admit("d", "10.0.0.2", now=0.0) is None
    assert table.from_address("10.0.0.1") == 2


def test_connections_over_the_total_cap_are_refused() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    for i in range(4):
        assert table.admit(f"c{i}", f"10.0.0.{i}", now=0.0) is None
    assert table.admit("more", "10.0.0.9", now=0.0) is Refusal.TOO_MANY
    table.release("c0")
    assert table.admit("more", "10.0.0.9", now=0.0) is None


def test_a_plain_request_has_its_own_deadline_and_then_the_idle_deadline() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.request_started("a", now=5.0, websocket=False)
    assert table.deadline("a") == 35.0
    table.request_finished("a", now=6.0)
    assert table.deadline("a") == 35.0  # the response may still be being sent
    table.request_started("a", now=40.0, websocket=False)  # the next request on the connection
    table.request_finished("a", now=69.0)
    assert table.deadline("a") == 84.0  # kept alive: idle until the next request head
    assert table.expired(84.0) == ["a"]


def test_a_websocket_that_ends_unsigned_gets_the_idle_deadline() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.request_started("a", now=1.0, websocket=True)
    table.request_finished("a", now=2.0)
    assert table.deadline("a") == 17.0


def test_a_websocket_signing_in_has_no_deadline_here_and_still_counts() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.request_started("a", now=1.0, websocket=True)
    assert table.deadline("a") is None
    assert table.expired(1e9) == []
    assert table.from_address("10.0.0.1") == 1


def test_a_signed_in_connection_is_forgotten_and_frees_its_place() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.admit("b", "10.0.0.1", now=0.0)
    table.trust("a")
    assert "a" not in table
    assert table.deadline("a") is None
    table.request_finished("a", now=5.0)  # its handler returning later changes nothing
    assert "a" not in table
    assert table.admit("c", "10.0.0.1", now=0.0) is None
    table.release("a")  # closing after trust: nothing left to release
    assert len(table) == 2


def test_releasing_the_last_connection_of_an_address_forgets_the_address() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.release("a")
    assert table.from_address("10.0.0.1") == 0
    assert len(table) == 0


def test_zero_means_no_cap() -> None:
    table: ConnectionTable[int] = ConnectionTable(
        ConnectionLimits(max_unauthenticated=0, max_unauthenticated_per_address=0)
    )
    for i in range(5000):
        assert table.admit(i, "10.0.0.1", now=0.0) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("header_timeout", 0.0),
        ("idle_timeout", -1.0),
        ("http_request_timeout", float("nan")),
        ("max_unauthenticated", -1),
        ("max_unauthenticated_per_address", -5),
    ],
)
def test_limits_refuse_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ConnectionLimits(**{field: value})  # type: ignore[arg-type]


def test_deadlines_are_checked_often_enough_and_not_too_often() -> None:
    assert ConnectionLimits(header_timeout=1.0).sweep_interval == 0.25
    assert ConnectionLimits(header_timeout=0.01).sweep_interval == 0.05
    assert ConnectionLimits().sweep_interval == 1.0


# --- the guard on a real listening socket (in process) -----------------------------------------


@contextlib.asynccontextmanager
async def guarded(
    limits: ConnectionLimits,
) -> AsyncIterator[tuple[ConnectionGuard, int, list[str]]]:
    """An aiohttp app listening through a ConnectionGuard; yields it, the port and refusals."""
    refused: list[str] = []
    guard = ConnectionGuard(limits, on_refused=lambda address, why: refused.append(address))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    async def sign_in(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # the "credentials"
        trust_connection(request)
        await ws.send_str("signed in")
        await ws.receive()
        return ws

    app = web.Application(middlewares=[guard_middleware])
    app[GUARD] = guard
    app.router.add_get("/", hello)
    app.router.add_get("/ws", sign_in)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(guard.protocol_factory(runner.server), "127.0.0.1", 0)
    guard.start()
    try:
        yield guard, listener.sockets[0].getsockname()[1], refused
    finally:
        listener.close()
        await guard.stop()
        await runner.cleanup()


async def test_guard_refuses_over_the_cap_at_once_and_serves_others() -> None:
    limits = ConnectionLimits(header_timeout=30.0, max_unauthenticated_per_address=2)
    async with guarded(limits) as (guard, port, refused):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await wait_until(lambda: len(guard.table) == 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed at once
        writer.close()
        assert refused == ["127.0.0.1"]
        assert len(guard.table) == 2
        for _, w in held:
            w.close()
        await wait_until(lambda: len(guard.table) == 0)
        async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as r:
            assert await r.text() == "hi"


async def test_guard_closes_a_silent_connection_at_its_deadline() -> None:
    async with guarded(ConnectionLimits(header_timeout=0.2)) as (guard, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n")  # never finished
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
        writer.close()
        await wait_until(lambda: len(guard.table) == 0)


async def test_a_kept_alive_connection_is_held_to_the_idle_deadline() -> None:
    limits = ConnectionLimits(header_timeout=30.0, idle_timeout=0.2, http_request_timeout=0.2)
    async with guarded(limits) as (guard, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(1024):
                    pass
        writer.close()
        await wait_until(lambda: len(guard.table) == 0)


async def test_a_signed_in_websocket_is_forgotten_by_the_guard() -> None:
    limits = ConnectionLimits(header_timeout=0.3, max_unauthenticated_per_address=1)
    async with guarded(limits) as (guard, port, refused), ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            assert len(guard.table) == 1  # not signed in yet: counted
            await ws.send_str("credentials")
            assert (await ws.receive()).data == "signed in"
            assert len(guard.table) == 0
            await asyncio.sleep(0.6)  # past the header deadline: nothing closes it
            assert not ws.closed
            async with http.get(f"http://127.0.0.1:{port}/") as r:  # its place is free
                assert await r.text() == "hi"
            await ws.send_str("bye")
        assert refused == []


# --- file descriptors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("descriptors", "total", "per_address", "expected"),
    [
        (256, 1024, 256, (96, 48)),  # the caps shrink to fit
        (256, 50, 10, (50, 10)),  # smaller caps stay
        (256, 0, 256, (96, 48)),  # "no cap" is still bounded by the descriptors
        (256, 1024, 0, (96, 0)),  # no per-address cap (behind a proxy) stays so
        (1_048_576, 1024, 256, (1024, 256)),  # plenty: the defaults stand
        (0, 1024, 256, (1024, 256)),  # unknown (Windows): unchanged
        (70, 1024, 256, (3, 1)),  # almost nothing left: still a working relay
        (10, 1024, 256, (2, 1)),
    ],
)
def test_caps_fit_the_file_descriptors(
    descriptors: int, total: int, per_address: int, expected: tuple[int, int]
) -> None:
    fitted = fit_to_descriptors(
        ConnectionLimits(max_unauthenticated=total, max_unauthenticated_per_address=per_address),
        descriptors,
    )
    assert (fitted.max_unauthenticated, fitted.max_unauthenticated_per_address) == expected


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("127.0.0.2", "127.0.0.2"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb:cccc:dddd:eeee", "2001:db8:1:2::/64"),  # the same subscriber
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_addresses_are_counted_by_their_key(address: str, key: str) -> None:
    assert address_key(address) == key


def test_an_ipv6_stranger_is_capped_by_its_64_not_by_each_address() -> None:
    table: ConnectionTable[int] = ConnectionTable(
        ConnectionLimits(max_unauthenticated_per_address=2)
    )
    # every address of one /64 shares one per-address cap
    assert table.admit(1, address_key("2001:db8:1:2::1"), 0.0) is None
    assert table.admit(2, address_key("2001:db8:1:2::2"), 0.0) is None
    assert table.admit(3, address_key("2001:db8:1:2::3"), 0.0) is Refusal.TOO_MANY_FROM_ADDRESS
    assert table.admit(4, address_key("2001:db8:1:3::1"), 0.0) is None


def test_a_connection_that_never_completed_a_request_is_told_apart() -> None:
    """Closed at its deadline, a socket that never sent a whole request is a stranger's refusal
    (audited, summarised); a kept-alive connection idle after its requests is not."""
    table: ConnectionTable[str] = ConnectionTable(ConnectionLimits(header_timeout=1))
    for conn in ("idle", "served"):
        assert table.admit(conn, "127.0.0.2", 0.0) is None
    table.request_started("served", 0.5, websocket=False)
    table.request_finished("served", 0.6)
    assert table.never_served("idle") == "127.0.0.2"
    assert table.never_served("served") is None
    assert table.never_served("gone") is None


def test_failed_sign_ins_from_one_ipv6_64_share_one_budget() -> None:
    """A stranger with a /64 can't get 2**64 budgets by moving address (outside attack, IPv6)."""
    budget = HandshakeBudget(KeyedLimiter(0.001, 3, max_keys=100))
    for host in range(3):  # three failures, each from another address of the same /64
        assert not budget.exhausted(f"2001:db8:1:2::{host + 1:x}", 0.0)
        budget.failed(f"2001:db8:1:2::{host + 1:x}", 0.0)
    assert budget.exhausted("2001:db8:1:2:ffff::9", 0.0)  # a fourth address of it: refused
    assert budget.retry_after("2001:db8:1:2::77", 0.0) > 0
    assert not budget.exhausted("2001:db8:1:3::1", 0.0)  # the next /64 is someone else
    assert not budget.exhausted("192.0.2.7", 0.0)
