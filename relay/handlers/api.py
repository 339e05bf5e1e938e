"""The relay's HTTP API (JSON): enrolment, sign-in, and administration of the tenancy tree.

Every state-changing call and every refusal is audited; errors are ``{"error", "message",
"message_zh"}`` with a fixed public sentence, never the caller's input echoed back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from posassist.client.units import ENROLMENT_TTL
from posassist.protocol import PosAssistError
from posassist.protocol.enrolment import EnrolmentInvite
from posassist.protocol.messages import (
    DEVICE_ID,
    username_problem,
)
from posassist.protocol.text import printable

from ..audit import Outcome
from ..errors import (
    BadCredentials,
    BadName,
    BadRequest,
    BadTtl,
    NameTaken,
    NotFound,
    RateLimited,
    ShortPassword,
    role_needed,
)
from ..hours import parse_hours, parse_timezone
from ..limits import address_key
from ..passwords import hash_password, needs_rehash, verify_password
from ..state import STATE, RelayState
from ..storage import Device, Merchant, RetailStore, Role, Scope, ScopeKind, User
from ..storage.health import HealthStore
from .agents import disconnect_revoked
from .consoles import end_sign_in
from .request import _field, _json, _name, _store_id, current_user

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..responses import Handler

log = logging.getLogger("posassist.relay")

#: A well-formed hash to verify against when the user does not exist, so that the time a failed
#: sign-in takes does not tell whether the username exists.
_DUMMY_HASH: str | None = None


# --- enrolment ---------------------------------------------------------------------------------


async def enrol(request: web.Request) -> web.Response:
    """An agent presents a one-time token's secret and its public key; it gets a device id."""
    state = request.app[STATE]
    address, now = address_key(str(request.remote)), state.now()
    if not state.enrol_limiter.allow(address, now):
        await state.audit(
            f"ip:{request.remote}",
            "device.enrol",
            "relay",
            Outcome.REFUSED,
            {"reason": "rate limited"},
        )
        # Retry-After: when this address's bucket holds a try again (a fleet or an installer
        # enrolling many tills from one address waits that long, docs/fleet.md)
        raise RateLimited(
            "enrolment rate", retry_after=state.enrol_limiter.retry_after(address, now)
        )
    body = await _json(request)
    secret = _field(body, "secret", str, max_len=128)
    try:
        public_key = base64.b64decode(_field(body, "public_key", str, max_len=64), validate=True)
    except binascii.Error:
        raise BadRequest("public_key is not base64") from None
    if len(public_key) != 32:
        raise BadRequest("public_key must be 32 bytes (raw Ed25519)")
    version = body.get("agent_version")
    # The till's own word, kept and shown: no escape sequence or control character kept in it.
    agent_version = printable(version, multiline=False)[:64] if isinstance(version, str) else None
    try:
        device = await state.storage.consume_enrolment(
            secret,
            relay_id=state.config.relay_id,
            public_key=public_key,
            now=state.now(),
            agent_version=agent_version,
        )
    except PosAssistError as exc:
        await state.audit(
            f"ip:{request.remote}",
            "device.enrol",
            "relay",
            Outcome.REFUSED,
            {"reason": exc.public_reason},
        )
        raise
    await state.audit(
        f"device:{device.id}",
        "device.enrol",
        f"store:{device.store_id}",
        Outcome.OK,
        {"peer": request.remote, "agent_version": agent_version},
    )
    return web.json_response(
        {"device_id": device.id, "store_id": device.store_id, "relay_id": state.config.relay_id}
    )


# --- sign-in -----------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = state.config
    body = await _json(request)
    username = _field(body, "username", str, max_len=64)
    password = _field(body, "password", str, max_len=1024)
    user = await check_password(request, username, password)
    now = state.now()
    token = await state.storage.issue_token(user.id, now=now, ttl=config.token_ttl)
    await state.audit(
        f"user:{username}", "user.login", f"user:{username}", Outcome.OK, {"peer": request.remote}
    )
    return web.json_response(
        {
            "token": token,
            "expires_at": now + config.token_ttl,
            "role": user.role.value,
            "scope": {"kind": user.scope.kind.value, "id": user.scope.id},
        }
    )


async def check_password(request: web.Request, username: str, password: str) -> User:
    """The user whose password this is, for every way in (``POST /v1/login``, the web console's
    sign-in): the rate limit, the back-off, scrypt and the audited refusal live here once.

    Raises ``RateLimited`` or ``BadCredentials`` (the same answer for unknown, wrong, backed off
    and disabled); the caller issues the token and audits the success.
    """
    state = request.app[STATE]
    if not state.login_limiter.allow(address_key(str(request.remote)), state.now()):
        await state.audit(
            f"ip:{request.remote}",
            "user.login",
            "relay",
            Outcome.REFUSED,
            {"reason": "rate limited"},
        )
        raise RateLimited("login rate")
    # Limits and back-off count an IPv6 /64 as one address (relay/limits.py address_key).
    now, address = state.now(), address_key(str(request.remote))
    # Backed off, unknown and wrong all cost one user lookup, one scrypt and one audit record,
    # and get the same answer: neither the time nor the reply tells them apart
    # (docs/relay.md#sign-in). The back-off is per address and name (relay/lockout.py).
    with state.login_backoff.judging(address, username, now) as looked_at:
        backed_off = not looked_at
        try:
            user: User | None = await state.storage.get_user(username)
        except NotFound:
            user = None
        stored = None if user is None or backed_off else user.password_hash
        matches = await asyncio.to_thread(
            lambda: verify_password(password, stored or _dummy_hash())
        )
    if user is None or backed_off or not matches:
        if not backed_off:
            state.login_backoff.failed(address, username, now)
        reason = "locked out" if backed_off else "unknown user" if user is None else "bad password"
        await state.audit(
            f"ip:{request.remote}",
            "user.login",
            f"user:{username}",
            Outcome.REFUSED,
            {"reason": reason},
        )
        raise BadCredentials(username)
    state.login_backoff.succeeded(address, username)
    await state.storage.record_login_success(user.id)
    if needs_rehash(user.password_hash):  # made at an older cost: re-hash while we know it
        rehashed = await asyncio.to_thread(hash_password, password)
        await state.storage.set_password_hash(user.id, rehashed)
    return user


def _dummy_hash() -> str:
    global _DUMMY_HASH  # a constant computed once, not state: same for every app
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("posassist-dummy-password")
    return _DUMMY_HASH


async def logout(request: web.Request) -> web.Response:
    state = request.app[STATE]
    user = await current_user(request)
    token = request.headers["Authorization"].partition(" ")[2].strip()
    await state.storage.revoke_token(token, now=state.now())
    end_sign_in(state, token)  # consoles signed in with it are closed now, not at expiry
    await state.audit(f"user:{user.username}", "user.logout", f"user:{user.username}", Outcome.OK)
    return web.json_response({"ok": True})


# --- administration ----------------------------------------------------------------------------


async def _admin_in(request: web.Request, target: Scope, action: str) -> tuple[RelayState, User]:
    state = request.app[STATE]
    user = await current_user(request)
    if user.role is not Role.ADMIN:
        await state.audit(
            f"user:{user.username}",
            action,
            f"{target.kind}:{target.id}",
            Outcome.REFUSED,
            {"reason": f"role {user.role}"},
        )
        raise role_needed(f"{user.username} is not an admin", "admin")
    await state.require_scope(user, target, action)
    return state, user


async def create_organisation(request: web.Request) -> web.Response:
    body = await _json(request)
    name = _name(body, "name")
    state, user = await _admin_in(request, Scope.root(), "organisation.create")
    await _refuse_taken(state, user, ScopeKind.ORGANISATION, name, None, "relay")
    org = await state.storage.create_organisation(name, now=state.now())
    await state.audit(
        f"user:{user.username}",
        "organisation.create",
        f"organisation:{org.id}",
        Outcome.OK,
        {"name": name},
    )
    return web.json_response({"id": org.id, "name": org.name}, status=201)


async def _refuse_taken(
    state: RelayState,
    user: User,
    kind: ScopeKind,
    name: str,
    parent: str | None,
    target: str,
) -> None:
    """409 ``NameTaken`` (audited against ``target``, the parent; nothing made) if ``parent``
    (the root for an organisation) has a ``kind`` called ``name``, case and spaces aside."""
    from ..storage.admin import AdminStore  # as update_store does

    siblings = await AdminStore(state.storage).list_nodes(kind, Scope.root(), parent=parent)
    wanted = name.strip().casefold()
    if any(node.name.strip().casefold() == wanted for node in siblings):
        await state.audit(
            f"user:{user.username}",
            f"{kind.value}.create",
            target,
            Outcome.REFUSED,
            {"reason": "name taken", "name": name},
        )
        raise NameTaken(f"{kind.value} {name!r} exists")


def _child_creator(
    noun: str,
    parent_field: str,
    parent_kind: ScopeKind,
    create: Callable[[RelayState, str, str], Awaitable[Merchant | RetailStore]],
) -> Handler:
    """A handler making a ``noun`` under an existing parent the caller administers."""

    async def handle(request: web.Request) -> web.Response:
        body = await _json(request)
        parent = _field(body, parent_field, str)
        name = _name(body, "name")
        state, user = await _admin_in(request, Scope(parent_kind, parent), f"{noun}.create")
        target = f"{parent_kind.value}:{parent}"
        await _refuse_taken(state, user, ScopeKind(noun), name, parent, target)
        made = await create(state, parent, name)
        await state.audit(
            f"user:{user.username}",
            f"{noun}.create",
            f"{noun}:{made.id}",
            Outcome.OK,
            {"name": name, parent_kind.value: parent},
        )
        return web.json_response({"id": made.id, "name": made.name}, status=201)

    return handle


create_merchant = _child_creator(
    "merchant",
    "organisation_id",
    ScopeKind.ORGANISATION,
    lambda state, parent, name: state.storage.create_merchant(parent, name, now=state.now()),
)
create_store = _child_creator(
    "store",
    "merchant_id",
    ScopeKind.MERCHANT,
    lambda state, parent, name: state.storage.create_store(parent, name, now=state.now()),
)


async def create_enrolment(request: web.Request) -> web.Response:
    """A one-time, expiring enrolment token for one store, as the text a store pastes."""
    body = await _json(request)
    store_id = _field(body, "store_id", str)
    ttl = body.get("ttl", 24 * 3600)
    if (
        not isinstance(ttl, int | float)
        or isinstance(ttl, bool)
        or not ENROLMENT_TTL[0] <= ttl <= ENROLMENT_TTL[1]
    ):
        raise BadTtl("ttl must be 60 s .. 30 days")
    state, user = await _admin_in(request, Scope(ScopeKind.STORE, store_id), "enrolment.create")
    record, secret = await state.storage.create_enrolment(
        store_id, state.config.relay_id, now=state.now(), ttl=float(ttl)
    )
    invite = EnrolmentInvite(
        relay_url=state.config.public_url,
        relay_id=state.config.relay_id,
        secret=secret,
        tls_pin=state.config.tls_pin,
        root_hash=state.config.root_hash,
    )
    await state.audit(
        f"user:{user.username}",
        "enrolment.create",
        f"store:{store_id}",
        Outcome.OK,
        {"enrolment": record.id, "expires_at": record.expires_at},
    )
    return web.json_response(
        {"id": record.id, "token": invite.encode(), "expires_at": record.expires_at}, status=201
    )


async def create_user(request: web.Request) -> web.Response:
    body = await _json(request)
    username = _field(body, "username", str, max_len=64)
    problem = username_problem(username)
    if problem is not None:  # before anything is stored or audited under that name
        raise BadName(f"field 'username': {problem}")
    password = _field(body, "password", str, max_len=1024)
    if len(password) < 10:
        raise ShortPassword("password must be at least 10 characters")
    try:
        role = Role(_field(body, "role", str))
        kind = ScopeKind(_field(body, "scope_kind", str))
    except ValueError:
        raise BadRequest("unknown role or scope kind") from None
    scope_id = body.get("scope_id")
    try:
        scope = Scope(kind, scope_id if isinstance(scope_id, str) else None)
    except ValueError:
        raise BadRequest("scope_id must be given except for root") from None
    state, admin = await _admin_in(request, scope, "user.create")
    hashed = await asyncio.to_thread(hash_password, password)
    user = await state.storage.create_user(username, hashed, role, scope, now=state.now())
    await state.audit(
        f"user:{admin.username}",
        "user.create",
        f"user:{username}",
        Outcome.OK,
        {"role": role.value, "scope": f"{kind.value}:{scope.id}"},
    )
    return web.json_response({"id": user.id, "username": username}, status=201)


async def list_devices(request: web.Request) -> web.Response:
    state = request.app[STATE]
    user = await current_user(request)
    devices = await state.storage.list_devices(user.scope)
    rows = [_device_row(state, d) for d in devices]
    zones: dict[str, str] = {}  # a handed-over device's time is shown in its store's zone
    for device, row in zip(devices, rows, strict=True):
        if device.handed_over_at is not None:
            if device.store_id not in zones:
                zones[device.store_id] = (await state.storage.get_store(device.store_id)).timezone
            row["store_timezone"] = zones[device.store_id]
    return web.json_response({"devices": rows})


def _device_row(state: RelayState, device: Device) -> dict[str, Any]:
    """One device as listed: stored presence, overlaid with what is noted but not yet written.

    ``facts`` are the device's own report (docs/protocol.md#device-facts): for display only.
    """
    row: dict[str, Any] = {
        "id": device.id,
        "store_id": device.store_id,
        "status": device.status.value,
        # moved to another provider by its agent (docs/protocol.md#changing-provider)
        "handed_over_at": device.handed_over_at,
        "online": state.router.agent(device.id) is not None,
        # its connections keep replacing each other: one identity on two tills (cloned image)
        "flapping": state.flaps.is_flapping(device.id, state.now()),
        "last_seen": device.last_seen,
        "agent_version": device.agent_version,
        "facts": device.facts,
    }
    pending = state.pending(device.id)
    if pending is not None:
        seen_at, agent_version, facts = pending
        row["last_seen"] = seen_at
        row["agent_version"] = agent_version or device.agent_version
        if facts is not None:
            row["facts"] = facts
    return row


async def revoke_device(request: web.Request) -> web.Response:
    """Revoke a device: refused from now on, and disconnected at once if connected."""
    device_id = request.match_info["device_id"]
    if not DEVICE_ID.fullmatch(device_id):  # never a device: refused before any lookup
        raise BadRequest("not a device id")
    state, user = await _admin_in(request, Scope(ScopeKind.DEVICE, device_id), "device.revoke")
    await state.storage.revoke_device(device_id, now=state.now())
    await state.audit(f"user:{user.username}", "device.revoke", f"device:{device_id}", Outcome.OK)
    await disconnect_revoked(state, device_id)
    # a revoked till can't recover: its open alerts close, so no queue keeps paging for it
    await HealthStore(state.storage).resolve_device_alerts(
        device_id, f"user:{user.username}", "device revoked", now=state.now()
    )
    return web.json_response({"id": device_id, "status": "revoked"})


def _store_json(store: RetailStore) -> dict[str, Any]:
    return {
        "id": store.id,
        "merchant_id": store.merchant_id,
        "name": store.name,
        "timezone": store.timezone,
        "hours": dict(store.hours),
    }


async def get_store(request: web.Request) -> web.Response:
    """A store's name, time zone and opening hours, for anyone whose scope holds it."""
    store_id = _store_id(request)
    state = request.app[STATE]
    user = await current_user(request)
    await state.require_scope(user, Scope(ScopeKind.STORE, store_id), "store.read")
    return web.json_response(_store_json(await state.storage.get_store(store_id)))


async def update_store(request: web.Request) -> web.Response:
    """Set a store's ``timezone`` and/or ``hours`` (see :mod:`posassist.relay.hours`); audited.

    Both are checked before anything is written: a bad zone or a bad interval changes nothing.
    """
    store_id = _store_id(request)
    body = await _json(request)
    unknown = set(body) - {"timezone", "hours", "name"}
    if unknown or not body:
        raise BadRequest("give name, timezone and/or hours, nothing else")
    name = _name(body, "name") if "name" in body else None
    state, user = await _admin_in(request, Scope(ScopeKind.STORE, store_id), "store.update")
    current = await state.storage.get_store(store_id)
    timezone = parse_timezone(body["timezone"]) if "timezone" in body else None
    hours = (
        parse_hours(body["hours"], timezone or current.timezone).to_json()
        if "hours" in body
        else None
    )
    if name is not None:  # issue 15: a store is renamed here (relay/storage/admin.py)
        from ..storage.admin import AdminStore

        await AdminStore(state.storage).rename_node(ScopeKind.STORE, store_id, name)
    store = await state.storage.update_store(
        store_id, now=state.now(), timezone=timezone, hours=hours
    )
    await state.audit(
        f"user:{user.username}",
        "store.update",
        f"store:{store_id}",
        Outcome.OK,
        {
            key: value
            for key, value in (("name", name), ("timezone", timezone), ("hours", hours))
            if value is not None
        },
    )
    from .policies import store_changed  # its devices' alert judgement and agents follow

    await store_changed(state, store_id)
    return web.json_response(_store_json(store))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/enrol", enrol)
    app.router.add_post("/v1/login", login)
    app.router.add_post("/v1/logout", logout)
    app.router.add_post("/v1/organisations", create_organisation)
    app.router.add_post("/v1/merchants", create_merchant)
    app.router.add_post("/v1/stores", create_store)
    app.router.add_get("/v1/stores/{store_id}", get_store)
    app.router.add_patch("/v1/stores/{store_id}", update_store)
    app.router.add_post("/v1/enrolments", create_enrolment)
    app.router.add_post("/v1/users", create_user)
    app.router.add_get("/v1/devices", list_devices)
    app.router.add_post("/v1/devices/{device_id}/revoke", revoke_device)
