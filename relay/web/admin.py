"""Administration pages of the web console, within the admin's scope: merchants and stores (name,
time zone, hours), users (create, disable, enable, unlock, sign out everywhere), enrolment tokens
(create with a QR code for the till, revoke), and revoking a device.

Every form is handed to its API route's own handler (relay/handlers/api.py and admin.py) with
the session's user and the form's fields as the body (``SIGNED_IN``, ``FORM_BODY``): the same
role and scope checks, the same validation, the same audit records; there is no second way.
"""

from __future__ import annotations

import base64
import io
import json
import math
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import BadRequest, BadTtl, NotFound
from ..handlers import admin as admin_api
from ..handlers import alerts as alerts_api
from ..handlers import api
from ..hours import DAYS, MAX_INTERVALS_PER_DAY, BadDayHours, BadHours, parse_hours
from ..state import STATE
from ..storage import Role, ScopeKind
from ..storage.admin import AdminStore
from . import sessions
from .fleet import human_time, zone
from .pages import checked_form, page, place_names, render

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .sessions import Session

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["add_admin_pages", "qr_svg"]

#: Hours an enrolment token lives by default, and the most a form may ask for (the API's cap).
DEFAULT_TOKEN_HOURS = 24
MAX_TOKEN_HOURS = 30 * 24


#: The API's list handlers for the tree (GET /v1/organisations, /v1/merchants, /v1/stores).
_LISTERS = {
    kind: admin_api._lister(kind)
    for kind in (ScopeKind.ORGANISATION, ScopeKind.MERCHANT, ScopeKind.STORE)
}


def qr_svg(text: str) -> str:
    """``text`` as a QR code, an SVG ``data:`` URL for an ``<img>`` (the CSP allows data:
    images, not inline styles)."""
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


async def _call(
    request: web.Request, session: Session, handler: Handler, body: dict[str, Any] | None = None
) -> Any:
    """``handler`` (an API route's) run for the session's user; its JSON answer."""
    request[api.SIGNED_IN] = session.user
    if body is not None:
        request[api.FORM_BODY] = body
    response = await handler(request)
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        raise TypeError("an API handler answers with a JSON body")
    return json.loads(response.body)


async def _checked_form(request: web.Request, session: Session) -> dict[str, str]:
    form = await checked_form(request, session)
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}


def _admin_only(session: Session) -> None:
    if session.user.role is not Role.ADMIN:
        raise NotFound("administration")  # as for anything outside one's scope


@page
async def admin_page(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /admin``: the tree, users and enrolment tokens the admin's scope holds."""
    _admin_only(session)
    organisations = (await _call(request, session, _LISTERS[ScopeKind.ORGANISATION]))[
        "organisations"
    ]
    merchants = (await _call(request, session, _LISTERS[ScopeKind.MERCHANT]))["merchants"]
    stores = (await _call(request, session, _LISTERS[ScopeKind.STORE]))["stores"]
    users = (await _call(request, session, admin_api.list_users))["users"]
    tokens = (await _call(request, session, admin_api.list_enrolments))["enrolments"]
    names = {m["id"]: m["name"] for m in merchants} | {s["id"]: s["name"] for s in stores}
    token_rows = await _token_rows(request, session, tokens, stores, names)
    return render(
        request,
        "admin.html",
        session=session,
        organisations=organisations,
        merchants=merchants,
        stores=[{**s, "week": store_days(s["hours"])} for s in stores],
        users=users,
        tokens=token_rows,
        names=names,
        default_hours=DEFAULT_TOKEN_HOURS,
        max_hours=MAX_TOKEN_HOURS,
    )


async def _token_rows(
    request: web.Request,
    session: Session,
    tokens: list[dict[str, Any]],
    stores: list[dict[str, Any]],
    names: dict[str, str],
) -> list[dict[str, Any]]:
    """Enrolment tokens for people: merchant and store by name, who created each (from the
    audit chain), created and expiry times on the store's clock, the till that used it by name;
    ids only as a second line."""
    if not tokens:
        return []
    state = request.app[STATE]
    lang = sessions.language(request)
    now = state.now()
    merchant_of = {s["id"]: names.get(s["merchant_id"], "") for s in stores}
    zones = {s["id"]: s["timezone"] for s in stores}
    since = min(float(t["created_at"]) for t in tokens)
    creators = await AdminStore(state.storage).enrolment_creators(since)
    used = (t["used_by_device"] for t in tokens if t.get("used_by_device"))
    tills = await place_names(state, session.user.scope, used)
    rows = []
    for t in tokens:
        tz = zone(zones.get(t["store_id"]) or "UTC")
        actor = creators.get(t["id"], "")
        used_by = t.get("used_by_device")
        rows.append(
            {
                **t,
                "merchant": merchant_of.get(t["store_id"], ""),
                "store": names.get(t["store_id"], t["store_id"]),
                "created_by": actor.removeprefix("user:") if actor else "—",
                "created": human_time(t["created_at"], tz, now, lang),
                "expires": human_time(t["expires_at"], tz, now, lang),
                "till": tills.get(f"device:{used_by}", used_by) if used_by else "",
            }
        )
    return rows


def _form_action(
    handler: Handler,
    fields: Callable[[dict[str, str]], dict[str, Any]] | None,
    back: Callable[[web.Request], str] = lambda request: "/admin",
) -> Any:
    """A web form posted to an API route's handler: CSRF first, then the handler (its checks,
    its audit), then back to the page the form was on."""

    @page
    async def handle(request: web.Request, session: Session) -> web.StreamResponse:
        form = await _checked_form(request, session)
        await _call(request, session, handler, fields(form) if fields is not None else {})
        raise web.HTTPSeeOther(back(request))

    return handle


def store_days(hours: dict[str, Any]) -> dict[str, Any]:
    """A store's hours (relay/hours.py's JSON form) as the per-day form shows them: open around
    the clock or not; each weekday closed or its intervals (as many as it keeps: a lunch break
    stays two); the closed dates as text."""
    weekly = hours.get("weekly") if isinstance(hours.get("weekly"), dict) else None
    days = []
    for day in DAYS:
        spans = [tuple(span) for span in (weekly or {}).get(day, [])]
        closed = weekly is not None and not spans  # open around the clock: times left blank
        days.append({"day": day, "closed": closed, "spans": spans or [("", "")]})
    return {
        "always": weekly is None,
        "days": days,
        "closed_dates": ", ".join(hours.get("closed") or []),
    }


def _clock(text: str) -> str:
    """A browser's ``<input type=time>`` value (``HH:MM``, maybe with seconds) as the hours'
    clock; a close at ``00:00`` is midnight at the end of the day (``24:00``)."""
    return text[:5]


def _hours_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The per-day form as the hours' JSON form, checked by ``parse_hours`` (order, overlap, a
    week with no opening, dates) and refused in the form's words (``BadDayHours``) before the
    API's handler, which checks it again: either way nothing is changed."""
    dates = [d for d in form.get("closed_dates", "").replace(",", " ").split() if d]
    hours: dict[str, Any] = {"closed": dates} if dates else {}
    if form.get("always_open") == "on":
        return _checked(hours)
    weekly: dict[str, list[list[str]]] = {}
    for day in DAYS:
        if form.get(f"closed_{day}") == "on":
            continue
        spans = []
        for i in range(MAX_INTERVALS_PER_DAY):
            start, end = form.get(f"open_{day}_{i}", ""), form.get(f"close_{day}_{i}", "")
            if not start and not end:
                continue
            if not start or not end:
                raise BadDayHours(f"hours: {day} needs both an opening and a closing time")
            end = _clock(end)
            spans.append([_clock(start), "24:00" if end == "00:00" else end])
        if not spans:
            raise BadDayHours(f"hours: {day} has no times; tick closed if the store is shut")
        weekly[day] = spans
    return _checked({**hours, "weekly": weekly})


def _checked(hours: dict[str, Any]) -> dict[str, Any]:
    try:
        parse_hours(hours)  # the API's handler checks again, with the store's zone
    except BadHours as exc:
        raise BadDayHours(str(exc)) from None
    return hours


def _store_fields(form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if form.get("name"):
        body["name"] = form["name"]
    if form.get("timezone"):
        body["timezone"] = form["timezone"]
    if form.get("hours_form") == "1":
        body["hours"] = _hours_from_form(form)
    return body


def _user_fields(form: dict[str, str]) -> dict[str, Any]:
    kind = form.get("scope_kind", "")
    return {
        "username": form.get("username", ""),
        "password": form.get("password", ""),
        "role": form.get("role", ""),
        "scope_kind": kind,
        "scope_id": form.get("scope_id") or None if kind != "root" else None,
    }


@page
async def create_enrolment(request: web.Request, session: Session) -> web.StreamResponse:
    """``POST /admin/enrolments``: a one-time token for a store, shown as text and a QR code."""
    form = await _checked_form(request, session)
    try:
        hours = float(form.get("hours", str(DEFAULT_TOKEN_HOURS)))
    except ValueError:
        raise BadRequest("hours must be a number") from None
    if not math.isfinite(hours) or not 0 < hours <= 10**6:  # nan, inf and 1e400 too
        raise BadTtl("hours out of range")
    body = {"store_id": form.get("store_id", ""), "ttl": round(hours * 3600)}
    made = await _call(request, session, api.create_enrolment, body)
    return render(
        request,
        "enrolment.html",
        session=session,
        status=201,
        token=made["token"],
        expires_at=made["expires_at"],
        qr=qr_svg(made["token"]),
    )


def add_admin_pages(app: web.Application) -> None:
    app.router.add_get("/admin", admin_page)
    app.router.add_post("/admin/merchants", _form_action(api.create_merchant, dict))
    app.router.add_post("/admin/stores", _form_action(api.create_store, dict))
    app.router.add_post("/admin/stores/{store_id}", _form_action(api.update_store, _store_fields))
    app.router.add_post("/admin/users", _form_action(api.create_user, _user_fields))
    for action, handler in (
        ("disable", admin_api._user_switch("user.disable", True)),
        ("enable", admin_api._user_switch("user.enable", False)),
        ("unlock", admin_api.unlock_user),
        ("revoke-tokens", admin_api.revoke_user_tokens),
    ):
        app.router.add_post(f"/admin/users/{{user_id}}/{action}", _form_action(handler, None))
    app.router.add_post("/admin/enrolments", create_enrolment)
    app.router.add_post(  # a queue's action, not administration: technicians acknowledge
        "/alerts/{alert_id}/ack",
        _form_action(alerts_api.acknowledge_alert, None, lambda request: "/alerts"),
    )
    app.router.add_post(
        "/admin/enrolments/{enrolment_id}/revoke", _form_action(admin_api.revoke_enrolment, None)
    )
    app.router.add_post(  # a revoked till out of its store for good, its history kept
        "/admin/devices/{device_id}/delete",
        _form_action(admin_api.delete_device, None, lambda request: "/fleet"),
    )
    app.router.add_post(
        "/admin/devices/{device_id}/revoke",
        _form_action(
            api.revoke_device, None, lambda request: f"/devices/{request.match_info['device_id']}"
        ),
    )
