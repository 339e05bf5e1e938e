"""Health alerts on the relay (docs/alerts.md): an agent's ``alert.raised`` ingested once, the
alerts API (list, show, acknowledge), webhooks, and the background webhook sender.

Ingest answers the agent only once the event is committed (``alert.ack``), so an agent's outbox
keeps an event until the relay has it; a storage failure answers ``unavailable`` and the agent
sends it again. Nothing here waits for a webhook receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import Counter

from posassist.protocol import AlertAcknowledged, AlertRaised, ErrorReply
from posassist.protocol.text import printable

from ..alerts import Alert, AlertEvent, Change
from ..audit import Outcome
from ..errors import BadRequest, NotFound, ScopeError, StorageError, role_needed
from ..health import Health
from ..metrics import NAMESPACE
from ..policies import Judgement, PolicyBook, judge
from ..remediation import after_firing
from ..state import STATE, RelayState
from ..storage import Role, Scope, ScopeKind
from ..storage.health import HealthStore
from ..webhooks import WebhookSender, check_webhook_url, new_secret
from .request import _json, current_user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..connection import WebSocketSession
    from ..storage import User

log = logging.getLogger("posassist.relay")

__all__ = ["HEALTH", "add_routes", "health_context", "ingest_alert"]

#: Alerts one listing returns at most.
MAX_LISTED = 1000


HEALTH = web.AppKey("health", Health)


def health_of(state: RelayState) -> Health:
    health = state.health
    assert isinstance(health, Health), "health_context did not run"
    return health


async def health_context(app: web.Application) -> AsyncIterator[None]:
    """Start the webhook sender once storage is up (after ``_storage_and_sweeper``); stop it
    before storage closes. Deliveries it had taken are sent again by the next sender."""
    state = app[STATE]
    config = state.config
    store = HealthStore(state.storage)
    sender = WebhookSender(
        store,
        state.now,
        send_timeout=config.webhook_timeout,
        retry_scale=config.webhook_retry_scale,
        allow_private=config.webhook_allow_private,
    )
    health = Health(store=store, sender=sender, policies=PolicyBook(store))
    health.events = Counter(
        "alert_events",
        "alert.raised events from agents: stored, duplicate (a redelivery) or unavailable "
        "(the database failed; the agent sends it again).",
        ["result"],
        namespace=NAMESPACE,
        registry=state.metrics.registry,
    )
    sender.outcomes = Counter(
        "webhook_tries",
        "Webhook delivery tries: delivered, retried (to be tried again) or failed (gave up).",
        ["outcome"],
        namespace=NAMESPACE,
        registry=state.metrics.registry,
    )
    app[HEALTH] = health
    state.health = health
    task = asyncio.create_task(sender.run(), name="webhook sender")
    task.add_done_callback(_sender_ended)
    try:
        yield
    finally:
        task.cancel()
        for pending in (task, *health.tasks):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending


def _sender_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the webhook sender stopped: %r", task.exception(), exc_info=task.exception())


# --- ingest ---------------------------------------------------------------------------------


async def ingest_alert(
    state: RelayState, device_id: str, peer: WebSocketSession, event: AlertRaised
) -> None:
    """Take one ``alert.raised`` from the agent signed in as ``device_id``: the device is the
    connection's, whatever the message says (docs/protocol.md#requests)."""
    health = health_of(state)
    details = dict(event.details)
    details.pop("relay", None)  # the relay's own judgement goes there, never the agent's
    taken = AlertEvent(
        device_id=device_id,
        alert_key=event.alert_key,
        check_name=event.check_name,
        severity=event.severity,
        state=event.state,
        summary=printable(event.summary),
        observed_at=event.observed_at,
        received_at=state.now(),
        details=details,
    )
    try:
        taken = _judged(
            taken, judge(await health.policies.for_device(device_id, state.now()), taken)
        )
        result = await health.store.ingest_alert(taken)
    except StorageError as exc:  # not acknowledged: the agent's outbox sends it again
        log.warning("alert event from %s not stored: %s", device_id, exc)
        _count(health, "unavailable")
        peer.send_nowait(
            ErrorReply(id=event.id, code="unavailable", message="try again later / 请稍后重试")
        )
        return
    _count(health, "duplicate" if result.duplicate else "stored")
    peer.send_nowait(AlertAcknowledged(id=event.id, duplicate=result.duplicate))
    if result.deliveries:
        health.sender.wake()
    if result.alert is not None and result.change in (
        Change.OPENED,
        Change.REOPENED,
        Change.UPDATED,
    ):
        after_firing(state, health, result.alert)


def _count(health: Health, result: str) -> None:
    if health.events is not None:
        health.events.labels(result=result).inc()


def _judged(event: AlertEvent, judgement: Judgement) -> AlertEvent:
    """``event`` as the relay takes it under its policy and store hours (relay/policies.py)."""
    if judgement.handling is None:
        return event
    relay: dict[str, Any] = {"handling": judgement.handling, "reason": judgement.reason}
    if judgement.handling == "downgraded":
        relay["downgraded_from"] = event.severity
    if judgement.hold_until is not None:
        relay["held_until"] = judgement.hold_until
    return dataclasses.replace(
        event,
        severity=judgement.severity,
        handling=judgement.handling,
        hold_until=judgement.hold_until,
        handling_reason=judgement.reason,
        # first: the bounds on details keep the first keys, and the relay's word must survive
        details={"relay": relay, **{k: v for k, v in event.details.items() if k != "relay"}},
    )


# --- the API --------------------------------------------------------------------------------


async def _visible_alert(state: RelayState, user: User, alert_id: str, action: str) -> Alert:
    """The alert if the user's scope covers its device; NotFound alike for unknown and out of
    scope, the latter audited (another tenant's ids tried)."""
    try:
        alert = await health_of(state).store.get_alert(alert_id)
    except NotFound:
        raise NotFound("alert") from None
    await state.require_device(user, alert.device_id, action, f"alert:{alert_id}")
    return alert


async def list_alerts(request: web.Request) -> web.Response:
    """``GET /v1/alerts[?store=S][&open=1][&limit=N]``: the caller's alerts, newest change
    first."""
    state = request.app[STATE]
    user = await current_user(request)
    query = request.query
    store_id = query.get("store") or None
    if store_id is not None and (len(store_id) > 40 or not store_id.isprintable()):
        raise BadRequest("store is not a store id")
    open_only = query.get("open", "") in ("1", "true", "yes")
    try:
        limit = int(query.get("limit", "200"))
    except ValueError:
        raise BadRequest("limit must be a whole number") from None
    if not 1 <= limit <= MAX_LISTED:
        raise BadRequest(f"limit must be 1..{MAX_LISTED}")
    alerts = await health_of(state).store.list_alerts(
        user.scope, store_id=store_id, open_only=open_only, limit=limit
    )
    return web.json_response({"alerts": [alert.to_json() for alert in alerts]})


async def show_alert(request: web.Request) -> web.Response:
    """``GET /v1/alerts/{id}``: one alert with its events and remediation attempts."""
    state = request.app[STATE]
    user = await current_user(request)
    alert = await _visible_alert(state, user, request.match_info["alert_id"], "alert.read")
    store = health_of(state).store
    body = alert.to_json()
    body["history"] = await store.alert_events(alert.id)
    body["remediations"] = [r.to_json() for r in await store.remediations_of(alert.id)]
    return web.json_response(body)


async def acknowledge_alert(request: web.Request) -> web.Response:
    """``POST /v1/alerts/{id}/ack``: a technician (or admin) in scope is on it."""
    state = request.app[STATE]
    user = await current_user(request)
    alert_id = request.match_info["alert_id"]
    if user.role not in (Role.ADMIN, Role.TECHNICIAN):
        await state.audit(
            f"user:{user.username}",
            "alert.acknowledge",
            f"alert:{alert_id[:40]}",
            Outcome.REFUSED,
            {"reason": f"role {user.role}"},
        )
        raise ScopeError(f"{user.username} ({user.role}) may not acknowledge alerts")
    await _visible_alert(state, user, alert_id, "alert.acknowledge")
    alert = await health_of(state).store.acknowledge_alert(alert_id, user.username, now=state.now())
    return web.json_response(alert.to_json())


async def create_webhook(request: web.Request) -> web.Response:
    """``POST /v1/webhooks`` ``{"scope_kind": "organisation"|"merchant", "scope_id", "url"}``:
    notifications of that organisation's or merchant's alerts; the signing secret is in the
    answer, once (docs/webhooks.md)."""
    state = request.app[STATE]
    body = await _json(request)
    kind_text = body.get("scope_kind")
    if kind_text not in (ScopeKind.ORGANISATION.value, ScopeKind.MERCHANT.value):
        raise BadRequest("scope_kind must be organisation or merchant")
    scope_id = body.get("scope_id")
    if not isinstance(scope_id, str) or not 0 < len(scope_id) <= 40:
        raise BadRequest("scope_id must be an organisation or merchant id")
    url = body.get("url")
    if not isinstance(url, str):
        raise BadRequest("url must be text")
    try:
        check_webhook_url(url, allow_private=state.config.webhook_allow_private)
    except BadRequest as exc:  # its sentences are fixed, never the URL: said as the detail
        detail = str(exc)
        if "loopback, private" in detail:
            detail += " (a relay for local testing only: serve --webhook-allow-private)"
        exc.public_detail = detail  # type: ignore[attr-defined]
        raise
    scope = Scope(ScopeKind(kind_text), scope_id)
    user = await _admin_for(state, request, scope, "webhook.create")
    secret = new_secret()
    hook = await health_of(state).store.create_webhook(
        scope, url, secret, user.username, now=state.now()
    )
    return web.json_response({**hook.to_json(), "secret": secret}, status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    """``GET /v1/webhooks``: the webhooks set on the admin's node of the tree or under it."""
    state = request.app[STATE]
    user = await current_user(request)
    if user.role is not Role.ADMIN:
        raise role_needed(f"{user.username} is not an admin", "admin")
    hooks = await health_of(state).store.webhooks_within(user.scope)
    return web.json_response({"webhooks": [hook.to_json() for hook in hooks]})


async def delete_webhook(request: web.Request) -> web.Response:
    """``DELETE /v1/webhooks/{id}``: an admin over it stops it (disabled, kept with its
    history; its pending deliveries cancelled). Another tenant's id is not found."""
    state = request.app[STATE]
    webhook_id = request.match_info["webhook_id"]
    user = await _admin(state, request, "webhook.disable", f"webhook:{webhook_id[:40]}")
    store = health_of(state).store
    hooks = {hook.id: hook for hook in await store.webhooks_within(user.scope)}
    if webhook_id not in hooks:
        raise NotFound("no such webhook")
    now = state.now()
    cancelled = await store.disable_webhook(webhook_id, user.username, now=now)
    hook = hooks[webhook_id]  # disabled now, or when it was first (it is idempotent)
    hook = dataclasses.replace(hook, disabled_at=hook.disabled_at or now)
    return web.json_response({**hook.to_json(), "cancelled_deliveries": cancelled})


async def _admin(state: RelayState, request: web.Request, action: str, target: str) -> User:
    """The signed-in user if an admin; else the refusal is audited and ScopeError raised."""
    user = await current_user(request)
    if user.role is not Role.ADMIN:
        await state.audit(
            f"user:{user.username}",
            action,
            target,
            Outcome.REFUSED,
            {"reason": f"role {user.role}"},
        )
        raise role_needed(f"{user.username} is not an admin", "admin")
    return user


async def _admin_for(state: RelayState, request: web.Request, target: Scope, action: str) -> User:
    user = await _admin(state, request, action, f"{target.kind}:{target.id}")
    await state.require_scope(user, target, action)
    return user


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/alerts", list_alerts)
    app.router.add_get("/v1/alerts/{alert_id}", show_alert)
    app.router.add_post("/v1/alerts/{alert_id}/ack", acknowledge_alert)
    app.router.add_post("/v1/webhooks", create_webhook)
    app.router.add_get("/v1/webhooks", list_webhooks)
    app.router.add_delete("/v1/webhooks/{webhook_id}", delete_webhook)
