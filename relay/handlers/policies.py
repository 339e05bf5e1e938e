"""Check policies through the API (docs/alerts.md#policy), and ``policy.updated`` to the agents
they concern: on sign-in, whenever a policy above them changes, and when their store's hours do.

``POST /v1/policies`` ``{"scope_kind", "scope_id", "policy": {…} | null}`` sets (or removes) the
document of one node of the tree; it is checked by the one validator
(:func:`protocol.health_policy.parse_policy`), and an invalid one is refused with 400, the field
and the rule named, nothing stored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from posassist.protocol import PolicyUpdated, PosAssistError
from posassist.protocol.health_policy import PolicyError, merge_layers, parse_policy
from posassist.protocol.text import printable

from ..audit import Outcome
from ..errors import BadRequest, NotFound, StorageError, role_needed
from ..state import STATE, RelayState
from ..storage import Role, Scope, ScopeKind
from . import alerts
from .request import _json, current_user

if TYPE_CHECKING:
    from ..connection import WebSocketSession
    from ..policies import DevicePolicy

__all__ = ["add_routes", "push_policies", "send_policy"]

log = logging.getLogger("posassist.relay")
#: The first protocol version with ``policy.updated``.
POLICY_VERSION = 5


def _scope(body: dict[str, Any]) -> Scope:
    kind = body.get("scope_kind")
    if kind not in [k.value for k in ScopeKind]:
        raise BadRequest("scope_kind must be root, organisation, merchant, store or device")
    node = body.get("scope_id")
    if kind == ScopeKind.ROOT.value:
        return Scope.root()
    if not isinstance(node, str) or not 0 < len(node) <= 40 or not node.isprintable():
        raise BadRequest("scope_id must be the id of that organisation, merchant, store or device")
    return Scope(ScopeKind(kind), node)


def _policy_refused(exc: PolicyError) -> web.Response:
    """400 naming the field and the rule (the validator's words, made printable)."""
    return web.json_response(
        {
            "error": type(exc).__name__,
            "message": exc.public_reason,
            "message_zh": exc.public_reason_zh,
            "detail": printable(str(exc), multiline=False)[:500],
        },
        status=exc.http_status,
    )


async def set_policy(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json(request)
    scope = _scope(body)
    if "policy" not in body:
        raise BadRequest('give "policy": a document, or null to remove it')
    document = body["policy"]
    user = await current_user(request)
    target = f"{scope.kind}:{scope.id}" if scope.id else scope.kind.value
    if user.role is not Role.ADMIN:
        await state.audit(
            f"user:{user.username}",
            "policy.set",
            target,
            Outcome.REFUSED,
            {"reason": f"role {user.role}"},
        )
        raise role_needed(f"{user.username} is not an admin", "admin")
    await state.require_scope(user, scope, "policy.set")
    health = alerts.health_of(state)
    if document is not None:
        try:
            parse_policy(document)
            # it must also merge with what is set above it (maintenance windows add up)
            above = [
                p[1]
                for p in [
                    await health.store.get_policy(node) for node in await _above(state, scope)
                ]
                if p is not None and p[1] is not None
            ]
            merge_layers([*above, document])
        except PolicyError as exc:
            await state.audit(
                f"user:{user.username}",
                "policy.set",
                target,
                Outcome.REFUSED,
                {"reason": "invalid policy", "detail": str(exc)[:300]},
            )
            return _policy_refused(exc)
    version = await health.store.set_policy(scope, document, user.username, now=state.now())
    pushed = await push_policies(state, scope)
    return web.json_response(
        {
            "scope_kind": scope.kind.value,
            "scope_id": scope.id,
            "version": version,
            "devices_told": pushed,
        }
    )


async def _above(state: RelayState, scope: Scope) -> list[Scope]:
    """The nodes above ``scope`` that may hold a policy, farthest first (NotFound if none)."""
    if scope.kind is ScopeKind.ROOT:
        return []
    chain = await state.storage.scope_ancestors(scope)
    return chain[:-1]


async def get_policy(request: web.Request) -> web.Response:
    """``GET /v1/policies?scope_kind=…&scope_id=…``: the document set on that node."""
    state = request.app[STATE]
    user = await current_user(request)
    scope = _scope(dict(request.query))
    await state.require_scope(user, scope, "policy.read")
    found = await alerts.health_of(state).store.get_policy(scope)
    if found is None:
        raise NotFound("policy")
    version, document = found
    return web.json_response({"version": version, "policy": document})


async def device_policy(request: web.Request) -> web.Response:
    """``GET /v1/devices/{id}/policy``: what the device runs (merged) and its store's hours."""
    state = request.app[STATE]
    user = await current_user(request)
    device_id = request.match_info["device_id"]
    await state.require_device(user, device_id, "device.policy.read", f"device:{device_id}")
    resolved = await alerts.health_of(state).policies.for_device(device_id, state.now())
    return web.json_response(
        {"version": resolved.version, "policy": resolved.document, "hours": _hours(resolved)}
    )


def _hours(resolved: DevicePolicy) -> dict[str, Any]:
    return {"timezone": resolved.hours.timezone, **resolved.hours.to_json()}


def _message(resolved: DevicePolicy) -> PolicyUpdated:
    return PolicyUpdated(version=resolved.version, policy=resolved.document, hours=_hours(resolved))


async def send_policy(state: RelayState, device_id: str, peer: WebSocketSession) -> None:
    """Tell a signed-in agent (v5 and later) its policy and hours; an error is logged, and the
    agent keeps what it has until the next change or connection."""
    if (peer.session.version or 0) < POLICY_VERSION:
        return
    try:
        resolved = await alerts.health_of(state).policies.for_device(device_id, state.now())
        peer.send_nowait(_message(resolved))
    except (StorageError, PosAssistError) as exc:
        log.warning("policy not sent to %s: %s", device_id, exc)


async def push_policies(state: RelayState, scope: Scope) -> int:
    """After a change at ``scope``: every device under it is judged by the new policy at once,
    and each connected one is told in the background (a change over a whole organisation must
    not hold its API request); how many are being told."""
    from ..connection import WebSocketSession

    health = alerts.health_of(state)
    if scope.kind is ScopeKind.DEVICE:
        devices = [str(scope.id)]
    else:
        devices = await health.store.policy_devices(scope)
    health.policies.forget(devices)
    connected = [
        (device_id, link)
        for device_id in devices
        if isinstance(link := state.router.agent(device_id), WebSocketSession)
    ]
    if connected:
        state.spawn(_tell(state, connected))
    return len(connected)


async def _tell(state: RelayState, connected: list[tuple[str, WebSocketSession]]) -> None:
    for device_id, link in connected:
        await send_policy(state, device_id, link)


async def store_changed(state: RelayState, store_id: str) -> None:
    """A store's time zone or hours changed: its devices' judgement and agents follow."""
    try:
        await push_policies(state, Scope(ScopeKind.STORE, store_id))
    except StorageError as exc:
        log.warning("devices of store %s not told of its new hours: %s", store_id, exc)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/policies", set_policy)
    app.router.add_get("/v1/policies", get_policy)
    app.router.add_get("/v1/devices/{device_id}/policy", device_policy)
