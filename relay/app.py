"""The relay as an aiohttp application, built by create_app(config) with no globals.

Endpoints: ``/v1/agent`` and ``/v1/console`` (websockets, docs/protocol.md#handshake), the JSON
API in relay/handlers/api.py and ``/healthz``; Prometheus ``/metrics`` has its own listener
(relay/__main__.py serve), never this one. Storage opens (and migrates) on startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from . import __version__
from .audit import RELAY_CREATED, Outcome
from .checkpoints import Checkpointer
from .errors import NotFound, StorageError
from .flapping import FlapDetector
from .handlers import admin, alerts, api, cancel, fanout, policies, reports, tickets
from .handlers.agents import agent_endpoint, disconnect_revoked
from .handlers.consoles import console_endpoint, end_revoked_sign_ins
from .handlers.jobs import OUTCOME_UNKNOWN, finish_route
from .limits import (
    GUARD,
    ConnectionGuard,
    ConnectionLimits,
    HandshakeBudget,
    Refusal,
    guard_middleware,
)
from .lockout import LoginBackoff
from .metrics import METRICS, RelayMetrics
from .ratelimit import KeyedLimiter
from .refusals import RefusalLedger
from .responses import errors_middleware
from .routing import RECONCILABLE, InProcessRouter
from .state import STATE, RelayState
from .storage import DeviceStatus, open_storage
from .web import add_console_routes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from .config import RelayConfig

log = logging.getLogger("posassist.relay")


def create_app(config: RelayConfig, *, clock: Callable[[], float] | None = None) -> web.Application:
    """A relay application for ``config``; storage opens when the app starts."""
    app = web.Application(
        client_max_size=64 * 1024, middlewares=[guard_middleware, errors_middleware]
    )
    storage = open_storage(
        config.database, schema=config.database_schema, sync=config.database_sync
    )
    metrics = RelayMetrics()
    state = RelayState(
        config=config,
        storage=storage,
        router=InProcessRouter(
            max_consent_timeout=config.max_consent_timeout,
            max_run_timeout=config.max_run_timeout,
        ),
        login_limiter=KeyedLimiter(config.login_rate, config.login_burst, max_keys=100_000),
        console_limiter=KeyedLimiter(config.console_rate, config.console_burst, max_keys=100_000),
        enrol_limiter=KeyedLimiter(config.enrol_rate, config.enrol_burst, max_keys=100_000),
        handshake_budget=HandshakeBudget(
            KeyedLimiter(
                config.handshake_failure_rate, config.handshake_failure_burst, max_keys=100_000
            )
        ),
        metrics=metrics,
        refusals=RefusalLedger(config.refusal_window, config.max_refusal_addresses),
    )
    state.flaps = FlapDetector(config.flap_window, config.flap_threshold)
    metrics.agents_connected.set_function(state.router.agents_online)
    metrics.agents_flapping.set_function(lambda: state.flaps.flapping(state.now()))
    metrics.consoles_connected.set_function(lambda: state.consoles)
    state.login_backoff = LoginBackoff(
        max_failures=config.login_max_failures,
        base_delay=config.login_backoff,
        max_delay=config.login_lockout,
    )
    if clock is not None:
        state.clock = clock
    app[STATE] = state
    # Used where the relay listens through it (__main__.serve); idle otherwise.
    app[GUARD] = ConnectionGuard(
        ConnectionLimits.of(config), on_refused=lambda address, why: _refused(state, address, why)
    )
    app[METRICS] = metrics
    # /metrics is never on the agents' port: serve() gives it its own listener (issue 15)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/agent", agent_endpoint)
    app.router.add_get("/v1/console", console_endpoint)
    api.add_routes(app)
    fanout.add_routes(app)  # issue 16: one request to a whole store
    alerts.add_routes(app)
    policies.add_routes(app)
    admin.add_admin_routes(app)  # issue 15: the operator's half (docs/api.md)
    cancel.add_routes(app)  # issue 15: cancel a running script (docs/protocol.md#cancel)
    add_console_routes(app)  # issue 15: the web console (docs/console.md)
    from .scripts_repo import add_script_routes

    add_script_routes(app, config.scripts_dir)  # published before or after the start (issue 17)
    app.cleanup_ctx.append(_storage_and_sweeper)
    tickets.add_routes(app)  # after the storage: its sweeper needs a migrated database
    reports.add_routes(app)
    app.cleanup_ctx.append(alerts.health_context)  # after storage is up; stopped before it
    app.on_shutdown.append(close_sockets)
    return app


async def _storage_and_sweeper(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.storage.migrate()
    checkpointer = await _anchor(state)
    # Requests in flight when the relay last stopped (even by SIGKILL) can never finish now;
    # a script among them may have run on the till: unknown, reconciled when its agent reports.
    unknown = await state.storage.mark_unfinished_jobs_unknown(
        RECONCILABLE, "relay_restarted: the relay stopped while the script ran", now=state.now()
    )
    failed = await state.storage.mark_running_jobs_failed("relay restarted", now=state.now())
    if failed or unknown:
        await state.audit(
            "relay",
            "jobs.recover",
            "relay",
            Outcome.FAILED,
            {"jobs_marked_failed": failed, "jobs_marked_unknown": len(unknown)},
        )
        log.warning(
            "after restart: %d unfinished job(s) failed, %d script job(s) of unknown outcome",
            failed,
            len(unknown),
        )
    sweeper = asyncio.create_task(_sweep(state), name="route sweeper")
    summaries = asyncio.create_task(_summarise_refusals(state), name="refusal summaries")
    presence = asyncio.create_task(_write_presence(state), name="presence writer")
    follower = asyncio.create_task(
        _follow_revocations(state, (await state.storage.head()).seq), name="revocation follower"
    )
    anchor = asyncio.create_task(_checkpoint(state, checkpointer), name="audit checkpointer")
    try:
        yield
    finally:
        for task in (sweeper, presence, follower, anchor, summaries):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(StorageError):
            await state.write_refusal_summaries(final=True)  # counted refusals are not lost
        with contextlib.suppress(StorageError):
            await state.flush_presence()  # what was seen last is not lost at shutdown
        try:  # a clean stop leaves no record after the last signed checkpoint
            await checkpointer.checkpoint(state.storage, now=state.now())
        except (StorageError, OSError) as exc:
            log.warning("final audit checkpoint not written: %s", exc)
        await state.storage.close()


def _refused(state: RelayState, address: str, refusal: Refusal) -> None:
    """A new connection over the caps was closed: audited (summarised) in the background."""
    state.spawn(
        state.audit(
            f"ip:{address}",
            "connection.refused",
            "relay",
            Outcome.REFUSED,
            {"reason": refusal.value},
        )
    )


async def _summarise_refusals(state: RelayState) -> None:
    """Write refusal summaries as their windows end (relay/refusals.py)."""
    interval = min(1.0, state.config.refusal_window / 4)
    while True:
        await asyncio.sleep(interval)
        try:
            await state.write_refusal_summaries()
        except StorageError as exc:
            log.warning("refusal summaries not written: %s", exc)


async def _write_presence(state: RelayState) -> None:
    """Presence (last seen, agent version) in one transaction a second, off the connect path."""
    while True:
        await asyncio.sleep(state.config.presence_interval)
        try:
            await state.flush_presence()
        except StorageError as exc:
            log.warning("presence not written, will retry: %s", exc)


async def _anchor(state: RelayState) -> Checkpointer:
    """At start: check the newest signed checkpoint against the database (shout if it
    disagrees: the database was rewritten), audit the start, and sign the head."""
    config = state.config
    checkpointer = await asyncio.to_thread(
        Checkpointer.open, config.checkpoint_key_path, config.checkpoint_file_path, config.relay_id
    )
    problem = await checkpointer.check_last(state.storage)
    if problem is not None:
        log.error("audit log disagrees with its signed checkpoints: %s", problem)
        await state.audit("relay", "audit.anchor", "audit", Outcome.FAILED, {"problem": problem})
    if (await state.storage.head()).seq == 0:
        # `serve` on a folder no `init` has prepared creates the relay here: its log starts, as
        # every log must, with the relay's creation (relay/audit.py RELAY_CREATED).
        await state.audit("relay", RELAY_CREATED, "relay", Outcome.OK, {"by": "serve"})
    await state.audit("relay", "relay.start", "relay", Outcome.OK, {"version": __version__})
    await checkpointer.checkpoint(state.storage, now=state.now())
    return checkpointer


async def _checkpoint(state: RelayState, checkpointer: Checkpointer) -> None:
    """Sign the audit head every ``audit_checkpoint_interval`` seconds while it moves."""
    while True:
        await asyncio.sleep(state.config.audit_checkpoint_interval)
        try:
            await checkpointer.checkpoint(state.storage, now=state.now())
        except (StorageError, OSError) as exc:
            log.warning("audit checkpoint not written, will retry: %s", exc)


#: Audited actions another process may take that a running relay must act on; only records
#: with outcome ``ok`` are read (a refused revoke changes nothing: attack finding F0).
REVOCATIONS = ("device.revoke", "user.unlock")


async def _follow_revocations(state: RelayState, seq: int) -> None:
    """Disconnect devices revoked elsewhere (``posassist-relay device revoke``, another relay)
    and close consoles whose sign-in token was revoked elsewhere (``posassist-relay user
    password``, a logout through another relay) within a presence interval: every revocation is
    audited, so the relay reads the audit log from where it last looked, and it re-checks the
    tokens of its connected consoles. Revocations through this relay's API act at once."""
    while True:
        await asyncio.sleep(state.config.presence_interval)
        try:
            after, records = await state.storage.actions_after(seq, REVOCATIONS)
            for record in records:
                kind, _, name = record.target.partition(":")
                if kind == "device" and await _revoked(state, name):
                    await disconnect_revoked(state, name)
                elif kind == "user" and record.action == "user.unlock":
                    state.login_backoff.unlock(name)
            await end_revoked_sign_ins(state)
            seq = after  # a batch that failed half-way is read again (acting twice is harmless)
        except StorageError as exc:
            log.warning("revocations not read, will retry: %s", exc)


async def _revoked(state: RelayState, device_id: str) -> bool:
    """The device row decides, not the audit record."""
    try:
        return (await state.storage.get_device(device_id)).status is DeviceStatus.REVOKED
    except NotFound:
        return False


async def _sweep(state: RelayState) -> None:
    """End routes whose agent went quiet for longer than they allow (docs/protocol.md#requests):
    a script may have run, so its job is ``unknown`` until the agent reports; anything else fails
    with a timeout error."""
    while True:
        await asyncio.sleep(state.config.sweep_interval)
        for route in state.router.expire(state.now()):
            if route.orphaned:
                await finish_route(state, route, "outcome_unknown", OUTCOME_UNKNOWN)
            else:
                await finish_route(
                    state, route, "timeout", f"no reply from the device within {route.timeout:g} s"
                )


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "status": "ok",
            "relay_id": state.config.relay_id,
            "agents": state.router.agents_online(),
            "consoles": state.consoles,
        }
    )


async def drain_routes(app: web.Application) -> None:
    """Let requests in flight finish, for up to the grace period (counted from the first call).

    Call it after the listener is closed and *before* aiohttp's own shutdown: from then on
    aiohttp drops every byte that arrives on every connection, websockets included, so a reply an
    agent sends after that can never reach its console (``serve`` in relay/__main__.py).
    """
    state = app[STATE]
    loop = asyncio.get_running_loop()
    if state.shutdown_deadline is None:
        state.shutdown_deadline = loop.time() + state.config.shutdown_grace
    # The router is pure (no asyncio inside), so shutdown polls it rather than awaiting an event.
    while state.router.routes_in_flight and loop.time() < state.shutdown_deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def close_sockets(app: web.Application) -> None:
    """Graceful shutdown: requests in flight have had their grace period (drain_routes); tell
    every peer we are going away (1001) so agents reconnect (within seconds after a 1001:
    agent/backoff.py ``after_going_away``).

    Every close frame goes out at once, and the replies are awaited together, each for at most
    ``close_timeout``: 512 at a time, 10,000 agents on a busy machine took 30-38 s to be told,
    and agents told first had long given up their quick retries by the time the relay was
    back (docs/notes/16b-status.md). ``serve`` calls this before aiohttp's own shutdown, which
    ignores every byte that arrives from then on (a close started after that waits out
    ``close_timeout`` for a reply it never reads); called again there, it finds nothing left.
    """
    state = app[STATE]
    await drain_routes(app)  # returns at once when serve() already drained

    async def close(ws: web.WebSocketResponse) -> None:
        await ws.close(code=1001, message=b"relay shutting down")

    results = await asyncio.gather(
        *(close(ws) for ws in list(state.sockets)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, Exception):  # one peer's broken socket must not stop the rest
            log.debug("closing a socket at shutdown: %s", result)
    if state.tasks:
        await asyncio.wait(state.tasks, timeout=state.config.shutdown_grace)
