"""The operator's half of the relay API (issue 15): list, rename and delete the tenancy tree and
users; passwords, disabling, unlocking, token revocation; enrolment tokens; job and audit history.

Every route checks role, then scope: a target outside the caller's scope answers 404 exactly as
an unknown one does (no existence leak), and the refusal is audited. Every change is audited.
docs/api.md lists every route; tests/relay/test_api_doc.py keeps the two equal.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from posassist.protocol.messages import username_problem

from ..audit import RELAY_CREATED, Outcome, verify_store
from ..errors import (
    BadCredentials,
    BadCursor,
    BadName,
    BadRequest,
    DeviceActive,
    NotFound,
    NotYourself,
    ShortPassword,
    role_needed,
)
from ..limits import address_key
from ..passwords import hash_password, verify_password
from ..state import STATE, RelayState
from ..storage import Role, Scope, ScopeKind
from ..storage.admin import AdminStore, NotEmpty, is_disabled
from ..storage.health import HealthStore
from .consoles import end_revoked_sign_ins
from .request import _field, _json, _name, current_user

if TYPE_CHECKING:
    from ..audit import AuditRecord
    from ..storage import EnrolmentToken, Job, User

__all__ = ["MAX_PAGE", "add_admin_routes"]

#: The most rows one page of jobs or audit records holds; ``limit`` defaults to 50.
MAX_PAGE = 200
DEFAULT_PAGE = 50
#: An id in a path or query: what the relay mints, never markup or escapes.
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_KINDS = {
    "organisations": ScopeKind.ORGANISATION,
    "merchants": ScopeKind.MERCHANT,
    "stores": ScopeKind.STORE,
}
_PARENT_QUERY = {ScopeKind.MERCHANT: "organisation_id", ScopeKind.STORE: "merchant_id"}


def _id(value: str | None, what: str) -> str:
    if value is None or not _ID.fullmatch(value):
        raise BadRequest(f"not a {what} id")
    return value


def _actor(user: User) -> str:
    return f"user:{user.username}"


async def _refuse_out_of_scope(state: RelayState, user: User, target: str, action: str) -> None:
    await state.audit(_actor(user), action, target, Outcome.REFUSED, {"reason": "out of scope"})
    raise NotFound(f"{target} outside the scope of {user.username}")


async def _require_role(
    state: RelayState, user: User, action: str, target: str, *roles: Role
) -> None:
    if user.role not in roles:
        await state.audit(
            _actor(user), action, target, Outcome.REFUSED, {"reason": f"role {user.role}"}
        )
        raise role_needed(f"{user.username} ({user.role}) may not {action}", *roles)


async def _node_in_scope(state: RelayState, user: User, target: Scope, action: str) -> None:
    if not await state.covers(user, target):
        await _refuse_out_of_scope(state, user, f"{target.kind}:{target.id}", action)


async def _admin_for(request: web.Request, target: Scope, action: str) -> tuple[RelayState, User]:
    """The caller, who must be an admin (403) whose scope holds ``target`` (404 otherwise)."""
    state = request.app[STATE]
    user = await current_user(request)
    await _require_role(state, user, action, f"{target.kind}:{target.id}", Role.ADMIN)
    await _node_in_scope(state, user, target, action)
    return state, user


def _page_limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_PAGE))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"limit must be a whole number 1..{MAX_PAGE}")
    return int(raw)


# --- the tenancy tree ----------------------------------------------------------------------------


def _node_json(node: Any) -> dict[str, Any]:
    row = {"id": node.id, "name": node.name, "created_at": node.created_at}
    for key in ("organisation_id", "merchant_id", "timezone"):
        if hasattr(node, key):
            row[key] = getattr(node, key)
    if hasattr(node, "hours"):
        row["hours"] = dict(node.hours)
    return row


def _lister(kind: ScopeKind) -> Any:
    async def handle(request: web.Request) -> web.Response:
        """Nodes of one kind within the caller's scope (any role), by name."""
        state = request.app[STATE]
        user = await current_user(request)
        parent_key = _PARENT_QUERY.get(kind)
        parent = request.query.get(parent_key) if parent_key else None
        if parent is not None:
            _id(parent, parent_key or "parent")
        nodes = await AdminStore(state.storage).list_nodes(kind, user.scope, parent=parent)
        return web.json_response({f"{kind.value}s": [_node_json(n) for n in nodes]})

    return handle


def _renamer(kind: ScopeKind) -> Any:
    async def handle(request: web.Request) -> web.Response:
        node_id = _id(request.match_info["node_id"], kind.value)
        body = await _json(request)
        if set(body) != {"name"}:
            raise BadRequest("give name, nothing else")
        name = _name(body, "name")
        action = f"{kind.value}.rename"
        state, user = await _admin_for(request, Scope(kind, node_id), action)
        await AdminStore(state.storage).rename_node(kind, node_id, name)
        await state.audit(
            _actor(user), action, f"{kind.value}:{node_id}", Outcome.OK, {"name": name}
        )
        return web.json_response({"id": node_id, "name": name})

    return handle


def _deleter(kind: ScopeKind) -> Any:
    async def handle(request: web.Request) -> web.Response:
        """Delete an empty node; one that still holds anything is refused (409), unchanged."""
        node_id = _id(request.match_info["node_id"], kind.value)
        action = f"{kind.value}.delete"
        target = f"{kind.value}:{node_id}"
        state, user = await _admin_for(request, Scope(kind, node_id), action)
        try:
            await AdminStore(state.storage).delete_node(kind, node_id)
        except NotEmpty as exc:
            await state.audit(
                _actor(user), action, target, Outcome.REFUSED, {"reason": "not empty", **exc.holds}
            )
            raise
        await state.audit(_actor(user), action, target, Outcome.OK)
        return web.json_response({"id": node_id, "deleted": True})

    return handle


async def delete_device(request: web.Request) -> web.Response:
    """``DELETE /v1/devices/{id}``: a revoked (or handed-over) till leaves its store for good, so
    the store can be deleted; an active one is refused (409 ``DeviceActive``: revoke it first).
    Its jobs, alerts and tickets are kept (the row stays, status ``deleted``, no store) and the
    audit log is never touched; it is gone from every list and lookup (docs/api.md)."""
    device_id = _id(request.match_info["device_id"], "device")
    action = "device.delete"
    target = f"device:{device_id}"
    state, user = await _admin_for(request, Scope(ScopeKind.DEVICE, device_id), action)
    try:
        kept = await AdminStore(state.storage).delete_device(device_id, now=state.now())
    except DeviceActive:
        await state.audit(_actor(user), action, target, Outcome.REFUSED, {"reason": "active"})
        raise
    except NotEmpty as exc:
        await state.audit(
            _actor(user), action, target, Outcome.REFUSED, {"reason": "not empty", **exc.holds}
        )
        raise
    state.forget_device(device_id)
    await state.audit(_actor(user), action, target, Outcome.OK, kept)
    # a handed-over till is deleted without a revoke: its alerts close here (readme-walk 15 M8)
    await HealthStore(state.storage).resolve_device_alerts(
        device_id, _actor(user), "device deleted", now=state.now()
    )
    return web.json_response({"id": device_id, "deleted": True, "jobs_kept": kept["jobs_kept"]})


# --- users ---------------------------------------------------------------------------------------


def _user_json(user: User, now: float) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role.value,
        "scope": {"kind": user.scope.kind.value, "id": user.scope.id},
        "disabled": is_disabled(user),
        "locked": user.is_locked(now),
        "created_at": user.created_at,
    }


async def list_users(request: web.Request) -> web.Response:
    """Users whose scope lies within the admin's own."""
    state = request.app[STATE]
    user = await current_user(request)
    await _require_role(state, user, "user.list", "relay", Role.ADMIN)
    users = await AdminStore(state.storage).list_users()
    seen: dict[Scope, bool] = {}
    rows = []
    for other in users:
        if other.scope not in seen:
            seen[other.scope] = await state.covers(user, other.scope)
        if seen[other.scope]:
            rows.append(_user_json(other, state.now()))
    return web.json_response({"users": rows})


async def _user_target(request: web.Request, action: str) -> tuple[RelayState, User, User]:
    """(state, admin, target user): an admin whose scope holds the user's scope; else 403/404."""
    state = request.app[STATE]
    user_id = _id(request.match_info["user_id"], "user")
    admin = await current_user(request)
    await _require_role(state, admin, action, f"user-id:{user_id}", Role.ADMIN)
    try:
        target = await state.storage.get_user_by_id(user_id)
    except NotFound:
        target = None
    if target is None or not await state.covers(admin, target.scope):
        await _refuse_out_of_scope(state, admin, f"user-id:{user_id}", action)
    assert target is not None
    return state, admin, target


def _not_self(admin: User, target: User, what: str) -> None:
    if admin.id == target.id:
        raise NotYourself(f"you may not {what} yourself")


async def rename_user(request: web.Request) -> web.Response:
    body = await _json(request)
    if set(body) != {"username"}:
        raise BadRequest("give username, nothing else")
    username = _field(body, "username", str, max_len=64)
    problem = username_problem(username)
    if problem is not None:
        raise BadName(f"field 'username': {problem}")
    state, admin, target = await _user_target(request, "user.rename")
    await AdminStore(state.storage).rename_user(target.id, username)
    await state.audit(
        _actor(admin), "user.rename", f"user:{target.username}", Outcome.OK, {"username": username}
    )
    return web.json_response({"id": target.id, "username": username})


async def delete_user(request: web.Request) -> web.Response:
    state, admin, target = await _user_target(request, "user.delete")
    _not_self(admin, target, "delete")
    await AdminStore(state.storage).delete_user(target.id)
    await end_revoked_sign_ins(state)
    await state.audit(_actor(admin), "user.delete", f"user:{target.username}", Outcome.OK)
    return web.json_response({"id": target.id, "deleted": True})


def _new_password(body: dict[str, Any], field: str) -> str:
    password: str = _field(body, field, str, max_len=1024)
    if len(password) < 10:
        raise ShortPassword("password must be at least 10 characters")
    return password


async def reset_password(request: web.Request) -> web.Response:
    """An admin sets another user's password; every token of theirs is revoked."""
    body = await _json(request)
    password = _new_password(body, "password")
    state, admin, target = await _user_target(request, "user.password_reset")
    # one's own password is changed with the old one (POST /v1/password): a stolen token
    # alone must not be enough to take the account and sign its owner out
    _not_self(admin, target, "reset the password of (change it with the old one)")
    hashed = await asyncio.to_thread(hash_password, password)
    if is_disabled(target):  # stays disabled: the mark is kept
        hashed = "!" + hashed
    await state.storage.set_password_hash(target.id, hashed)
    revoked = await state.storage.revoke_user_tokens(target.id, now=state.now())
    await end_revoked_sign_ins(state)
    await state.audit(
        _actor(admin),
        "user.password_reset",
        f"user:{target.username}",
        Outcome.OK,
        {"tokens_revoked": revoked},
    )
    return web.json_response({"id": target.id, "tokens_revoked": revoked})


async def change_own_password(request: web.Request) -> web.Response:
    """Any user changes their own password, giving the old one. A wrong old password is
    refused and counts towards the sign-in back-off of (address, username), like a failed
    sign-in (relay/lockout.py)."""
    state = request.app[STATE]
    user = await current_user(request)
    body = await _json(request)
    old = _field(body, "old_password", str, max_len=1024)
    new = _new_password(body, "new_password")
    address, now = address_key(str(request.remote)), state.now()
    with state.login_backoff.judging(address, user.username, now) as looked_at:
        backed_off = not looked_at
        matches = looked_at and await asyncio.to_thread(verify_password, old, user.password_hash)
    if not matches:
        if not backed_off:
            state.login_backoff.failed(address, user.username, now)
        reason = "locked out" if backed_off else "bad password"
        await state.audit(
            _actor(user), "user.password_change", _actor(user), Outcome.REFUSED, {"reason": reason}
        )
        raise BadCredentials(user.username)
    state.login_backoff.succeeded(address, user.username)
    hashed = await asyncio.to_thread(hash_password, new)
    await state.storage.set_password_hash(user.id, hashed)
    # Whoever else holds a session of this user (the reason to change it, often) is signed out;
    # the token this change came with stays.
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    keep = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    revoked = await state.storage.revoke_user_tokens(user.id, now=state.now(), keep=keep)
    await end_revoked_sign_ins(state)
    await state.audit(
        _actor(user),
        "user.password_change",
        _actor(user),
        Outcome.OK,
        {"other_tokens_revoked": revoked},
    )
    return web.json_response({"id": user.id, "other_tokens_revoked": revoked})


def _user_switch(action: str, disabled: bool) -> Any:
    async def handle(request: web.Request) -> web.Response:
        state, admin, target = await _user_target(request, action)
        _not_self(admin, target, "disable or enable")
        changed = await AdminStore(state.storage).set_disabled(target.id, disabled, now=state.now())
        if disabled:
            await end_revoked_sign_ins(state)
        await state.audit(
            _actor(admin), action, f"user:{target.username}", Outcome.OK, {"changed": changed}
        )
        return web.json_response({"id": target.id, "disabled": disabled})

    return handle


async def unlock_user(request: web.Request) -> web.Response:
    """Clear a user's failed sign-ins: the stored lock and every address's back-off."""
    state, admin, target = await _user_target(request, "user.unlock")
    await state.storage.record_login_success(target.id)
    cleared = state.login_backoff.unlock(target.username)
    await state.audit(
        _actor(admin), "user.unlock", f"user:{target.username}", Outcome.OK, {"cleared": cleared}
    )
    return web.json_response({"id": target.id, "unlocked": True})


async def revoke_user_tokens(request: web.Request) -> web.Response:
    """Sign a user out everywhere: every live token revoked, their consoles closed."""
    state, admin, target = await _user_target(request, "user.revoke_tokens")
    revoked = await state.storage.revoke_user_tokens(target.id, now=state.now())
    await end_revoked_sign_ins(state)
    await state.audit(
        _actor(admin),
        "user.revoke_tokens",
        f"user:{target.username}",
        Outcome.OK,
        {"tokens_revoked": revoked},
    )
    return web.json_response({"id": target.id, "tokens_revoked": revoked})


# --- enrolment tokens ----------------------------------------------------------------------------


def _enrolment_json(record: EnrolmentToken, now: float) -> dict[str, Any]:
    if record.revoked_at is not None:
        status = "revoked"
    elif record.used_at is not None:
        status = "used"
    elif now >= record.expires_at:
        status = "expired"
    else:
        status = "unused"
    return {
        "id": record.id,
        "store_id": record.store_id,
        "status": status,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "used_at": record.used_at,
        "used_by_device": record.used_by_device,
        "revoked_at": record.revoked_at,
    }


async def list_enrolments(request: web.Request) -> web.Response:
    state = request.app[STATE]
    user = await current_user(request)
    await _require_role(state, user, "enrolment.list", "relay", Role.ADMIN)
    store_id = request.query.get("store_id")
    if store_id is not None:
        _id(store_id, "store")
    records = await AdminStore(state.storage).list_enrolments(user.scope, store_id=store_id)
    return web.json_response({"enrolments": [_enrolment_json(r, state.now()) for r in records]})


async def revoke_enrolment(request: web.Request) -> web.Response:
    """Revoke an enrolment token not yet used; a used one is refused (409)."""
    state = request.app[STATE]
    enrolment_id = _id(request.match_info["enrolment_id"], "enrolment")
    user = await current_user(request)
    target = f"enrolment:{enrolment_id}"
    await _require_role(state, user, "enrolment.revoke", target, Role.ADMIN)
    try:
        store_id = await AdminStore(state.storage).enrolment_store(enrolment_id)
    except NotFound:
        store_id = None
    if store_id is None or not await state.covers(user, Scope(ScopeKind.STORE, store_id)):
        await _refuse_out_of_scope(state, user, target, "enrolment.revoke")
    record = await state.storage.revoke_enrolment(enrolment_id, now=state.now())
    await state.audit(_actor(user), "enrolment.revoke", target, Outcome.OK, {"store": store_id})
    return web.json_response(_enrolment_json(record, state.now()))


# --- history -------------------------------------------------------------------------------------


def _job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "device_id": job.device_id,
        "kind": job.kind,
        "status": job.status.value,
        "requested_by": job.requested_by,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": job.error,
        "script": job.script,
        "version": job.version,
    }


def _job_cursor(raw: str | None) -> tuple[float, str] | None:
    if raw is None:
        return None
    at, _, job_id = raw.partition("/")
    try:
        created = float(at)
    except ValueError:
        created = float("nan")
    if created != created or not 0 <= created < 1e11 or not _ID.fullmatch(job_id):
        raise BadCursor("cursor is not one this relay gave")
    return created, job_id


async def list_jobs(request: web.Request) -> web.Response:
    """Jobs on devices within the caller's scope, newest first, a page at a time."""
    state = request.app[STATE]
    user = await current_user(request)
    limit = _page_limit(request)
    before = _job_cursor(request.query.get("cursor"))
    device_id = request.query.get("device_id")
    if device_id is not None:
        _id(device_id, "device")
        if not await state.device_in_scope(device_id, user.scope):
            await _refuse_out_of_scope(state, user, f"device:{device_id}", "job.list")
    jobs, after = await AdminStore(state.storage).jobs_page(
        user.scope, limit=limit, before=before, device_id=device_id
    )
    cursor = None if after is None else f"{after[0]!r}/{after[1]}"
    return web.json_response({"jobs": [_job_json(j) for j in jobs], "next_cursor": cursor})


def _audit_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "at": record.at,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "outcome": str(record.outcome),
        "detail": record.detail,
    }


_TARGET_KINDS = {
    "organisation": ScopeKind.ORGANISATION,
    "merchant": ScopeKind.MERCHANT,
    "store": ScopeKind.STORE,
    "device": ScopeKind.DEVICE,
}


async def list_audit(request: web.Request) -> web.Response:
    """The audit log, newest first. An admin at the root reads all of it; an admin lower down
    names a ``target`` (``store:…``, ``device:…``…) within their scope."""
    state = request.app[STATE]
    user = await current_user(request)
    await _require_role(state, user, "audit.read", "relay", Role.ADMIN)
    limit = _page_limit(request)
    raw_before = request.query.get("before")
    if raw_before is not None and (
        not (raw_before.isascii() and raw_before.isdigit()) or not 1 <= int(raw_before) < 2**62
    ):
        raise BadCursor("before must be a record's seq (a whole number from 1)")
    target = request.query.get("target")
    if target is not None:
        kind, _, node = target.partition(":")
        if kind not in _TARGET_KINDS or not _ID.fullmatch(node):
            raise BadRequest("target must be organisation:, merchant:, store: or device: and an id")
        await _node_in_scope(state, user, Scope(_TARGET_KINDS[kind], node), "audit.read")
    elif user.scope.kind is not ScopeKind.ROOT:
        await _refuse_out_of_scope(state, user, "relay", "audit.read")
    records, after = await AdminStore(state.storage).audit_page(
        limit=limit, before=None if raw_before is None else int(raw_before), target=target
    )
    return web.json_response({"records": [_audit_json(r) for r in records], "next_before": after})


async def verify_audit(request: web.Request) -> web.Response:
    """``POST /v1/audit/verify``: walk the whole chain, as the web console's audit page does
    (same verifier: :func:`relay.audit.verify_store`). Only an admin at the root, as
    ``POST /audit/verify``: another role 403, an admin lower down 404; both audited."""
    state = request.app[STATE]
    user = await current_user(request)
    await _require_role(state, user, "audit.verify", "audit", Role.ADMIN)
    if user.scope.kind is not ScopeKind.ROOT:
        await _refuse_out_of_scope(state, user, "audit", "audit.verify")
    result = await verify_store(state.storage, first_action=RELAY_CREATED)
    answer: dict[str, Any] = {
        "ok": result.ok,
        "records": result.records_checked,
        "last_seq": result.last_seq,
    }
    if not result.ok:
        answer["first_bad"] = result.first_bad_seq
        answer["reason"] = None if result.reason is None else result.reason.value
    await state.audit(
        _actor(user),
        "audit.verify",
        "audit",
        Outcome.OK if result.ok else Outcome.FAILED,
        {"records": result.records_checked, "via": "api", "first_bad": result.first_bad_seq},
    )
    return web.json_response(answer)


def add_admin_routes(app: web.Application) -> None:
    for plural, kind in _KINDS.items():
        if kind is not ScopeKind.STORE:  # GET/PATCH /v1/stores/{id} are in api.py
            app.router.add_patch(f"/v1/{plural}/{{node_id}}", _renamer(kind))
        app.router.add_get(f"/v1/{plural}", _lister(kind))
        app.router.add_delete(f"/v1/{plural}/{{node_id}}", _deleter(kind))
    app.router.add_delete("/v1/devices/{device_id}", delete_device)
    app.router.add_get("/v1/users", list_users)
    app.router.add_patch("/v1/users/{user_id}", rename_user)
    app.router.add_delete("/v1/users/{user_id}", delete_user)
    app.router.add_post("/v1/users/{user_id}/password", reset_password)
    app.router.add_post("/v1/users/{user_id}/disable", _user_switch("user.disable", True))
    app.router.add_post("/v1/users/{user_id}/enable", _user_switch("user.enable", False))
    app.router.add_post("/v1/users/{user_id}/unlock", unlock_user)
    app.router.add_post("/v1/users/{user_id}/revoke-tokens", revoke_user_tokens)
    app.router.add_post("/v1/password", change_own_password)
    app.router.add_get("/v1/enrolments", list_enrolments)
    app.router.add_post("/v1/enrolments/{enrolment_id}/revoke", revoke_enrolment)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/audit", list_audit)
    app.router.add_post("/v1/audit/verify", verify_audit)
