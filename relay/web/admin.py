"""Administration pages of the web console, within the admin's scope: merchants and stores (name,
time zone, hours), users (create, disable, enable, unlock, sign out everywhere), enrolment tokens
(create with a QR code for the till, revoke), and revoking a device.

Every form is handed to its API route's own handler (relay/handlers/api.py and admin.py) with
the session's user and the form's fields as the body (``SIGNED_IN``, ``FORM_BODY``): the same
role and scope checks, the same validation, the same audit records; there is no second way.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import zoneinfo
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from posassist.protocol import PosAssistError

from ..errors import BadRequest, BadTtl, NotFound
from ..handlers import admin as admin_api
from ..handlers import alerts as alerts_api
from ..handlers import api
from ..handlers.request import FORM_BODY, SIGNED_IN
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
#: An opening or closing time as the hours form takes it: 24-hour ``HH:MM`` (a text input, not
#: ``type=time``, whose AM/PM follows the browser's locale, not the page's language).
CLOCK_PATTERN = "([01][0-9]|2[0-3]):[0-5][0-9]"


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
    request: web.Request,
    session: Session,
    handler: Handler,
    body: dict[str, Any] | None = None,
) -> Any:
    """``handler`` (an API route's) run for the session's user; its JSON answer."""
    request[SIGNED_IN] = session.user
    if body is not None:
        request[FORM_BODY] = body
    response = await handler(request)
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        raise TypeError("an API handler answers with a JSON body")
    return json.loads(response.body)


#: Form fields the console itself uses, never passed to an API handler: the CSRF token, the
#: "yes, do it" of a confirmation step and the name the confirmation shows.
_CONSOLE_FIELDS = frozenset({"csrf", "confirm", "what"})


async def _checked_form(request: web.Request, session: Session) -> dict[str, str]:
    form = await checked_form(request, session)
    return {k: v for k, v in form.items() if isinstance(v, str) and k not in _CONSOLE_FIELDS}


def _admin_only(session: Session) -> None:
    if session.user.role is not Role.ADMIN:
        raise NotFound("administration")  # as for anything outside one's scope


@page
async def admin_page(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /admin``: the tree, users and enrolment tokens the admin's scope holds."""
    return await _admin_view(request, session)


async def _admin_view(
    request: web.Request, session: Session, failed: PosAssistError | None = None
) -> web.Response:
    """The administration page; after a refused form (``failed``), the same page with the
    refusal in words above the forms and the refusal's status, so the admin fixes the field
    where it is instead of on a separate error page."""
    _admin_only(session)
    organisations = (await _call(request, session, _LISTERS[ScopeKind.ORGANISATION]))[
        "organisations"
    ]
    merchants = (await _call(request, session, _LISTERS[ScopeKind.MERCHANT]))["merchants"]
    stores = (await _call(request, session, _LISTERS[ScopeKind.STORE]))["stores"]
    users = (await _call(request, session, admin_api.list_users))["users"]
    tokens = (await _call(request, session, admin_api.list_enrolments))["enrolments"]
    names = {o["id"]: o["name"] for o in organisations}
    names |= {m["id"]: m["name"] for m in merchants} | {s["id"]: s["name"] for s in stores}
    token_rows = await _token_rows(request, session, tokens, stores, names)
    tries = request.app[STATE].login_backoff.failed_tries(request.app[STATE].now())
    for u in users:  # the back-off is in the relay's memory (relay/lockout.py), not stored
        u["failed_tries"], backed_off = tries.get(u["username"], (0, False))
        u["locked"] = u["locked"] or backed_off
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
        zones=time_zones(),
        clock_pattern=CLOCK_PATTERN,
        failed=failed,
        status=200 if failed is None else failed.http_status,
    )


@functools.cache
def time_zones() -> tuple[str, ...]:
    """The zone names a store's form offers (IANA names), Asia/Shanghai first."""
    return ("Asia/Shanghai", *sorted(zoneinfo.available_timezones() - {"Asia/Shanghai"}))


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
    *,
    done: str,
    confirm: bool = False,
    cancel: Callable[[web.Request], str] | None = None,
    as_bearer: bool = False,
) -> Any:
    """A web form posted to an API route's handler: CSRF first, then (for a destructive
    ``confirm`` action) a confirmation page unless the form says ``confirm=yes``, then the
    handler (its checks, its audit), then back to the page the form was on with ``done`` (a
    words key, ``done_<done>``) shown there as the result. A refusal of a form of /admin shows
    /admin again with the refusal; elsewhere the error page. ``as_bearer``: the session's token
    as the request's ``Authorization`` too, for a handler that spares the token it came with
    (``POST /v1/password`` ends the user's other sessions, not this one)."""

    @page
    async def handle(request: web.Request, session: Session) -> web.StreamResponse:
        if as_bearer:  # before the body is read: a request can't be cloned after
            headers = {**request.headers, "Authorization": f"Bearer {session.token}"}
            request = request.clone(headers=headers)
        form = await _checked_form(request, session)
        posted = await request.post()
        if confirm and posted.get("confirm") != "yes":
            _admin_only(session)  # every destructive form is an admin's
            what = posted.get("what")
            named = what if isinstance(what, str) else ""
            return _confirmation(request, session, done, form, named, (cancel or back)(request))
        try:
            await _call(request, session, handler, fields(form) if fields is not None else {})
        except PosAssistError as exc:
            if back(request) == "/account":
                return render(
                    request, "account.html", session=session, status=exc.http_status, failed=exc
                )
            if back(request) != "/admin" or session.user.role is not Role.ADMIN:
                raise
            return await _admin_view(request, session, failed=exc)
        raise web.HTTPSeeOther(_with_done(back(request), done))

    return handle


@page
async def account_page(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /account``: any signed-in user changes their own password (old and new)."""
    return render(request, "account.html", session=session)


def _with_done(url: str, done: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'done': done})}"


def _confirmation(
    request: web.Request,
    session: Session,
    action: str,
    form: dict[str, str],
    what: str,
    back: str,
) -> web.Response:
    """The step before a destructive action: what it will do, to what (``what``, the name the
    button sent, for people; shown escaped), a button that posts the same form again with
    ``confirm=yes``, and a way back. Works without script (the CSP allows none inline);
    nothing is changed or audited until the second post."""
    return render(
        request,
        "confirm.html",
        session=session,
        action=action,
        target=request.path,
        fields=form,
        what=what,
        back=back,
    )


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


def _device_page(request: web.Request) -> str:
    return f"/devices/{request.match_info['device_id']}"


def _name_only(form: dict[str, str]) -> dict[str, Any]:
    return {"name": form.get("name", "")}


#: The tree's nodes the console renames and deletes (a store is renamed in its settings form).
_NODES = {"organisations": ScopeKind.ORGANISATION, "merchants": ScopeKind.MERCHANT}


def add_admin_pages(app: web.Application) -> None:
    app.router.add_get("/admin", admin_page)
    add = app.router.add_post
    add("/admin/organisations", _form_action(api.create_organisation, _name_only, done="org_made"))
    add("/admin/merchants", _form_action(api.create_merchant, dict, done="merchant_made"))
    add("/admin/stores", _form_action(api.create_store, dict, done="store_made"))
    add("/admin/stores/{store_id}", _form_action(api.update_store, _store_fields, done="saved"))
    for plural, kind in (*_NODES.items(), ("stores", ScopeKind.STORE)):
        if kind is not ScopeKind.STORE:
            renamer = _form_action(admin_api._renamer(kind), _name_only, done="renamed")
            add(f"/admin/{plural}/{{node_id}}/rename", renamer)
        deleter = _form_action(admin_api._deleter(kind), None, done="deleted", confirm=True)
        add(f"/admin/{plural}/{{node_id}}/delete", deleter)
    add("/admin/users", _form_action(api.create_user, _user_fields, done="user_made"))
    add(
        "/admin/users/{user_id}/rename",
        _form_action(
            admin_api.rename_user, lambda f: {"username": f.get("username", "")}, done="renamed"
        ),
    )
    add(
        "/admin/users/{user_id}/password",
        _form_action(
            admin_api.reset_password,
            lambda f: {"password": f.get("password", "")},
            done="password_reset",
        ),
    )
    app.router.add_get("/account", account_page)
    add(
        "/account/password",
        _form_action(
            admin_api.change_own_password,
            lambda f: {k: f.get(k, "") for k in ("old_password", "new_password")},
            lambda request: "/account",
            done="password_changed",
            as_bearer=True,  # this session stays; the user's others end
        ),
    )
    for action, handler, destructive in (
        ("disable", admin_api._user_switch("user.disable", True), True),
        ("enable", admin_api._user_switch("user.enable", False), False),
        ("unlock", admin_api.unlock_user, False),
        ("revoke-tokens", admin_api.revoke_user_tokens, True),
        ("delete", admin_api.delete_user, True),
    ):
        add(
            f"/admin/users/{{user_id}}/{action}",
            _form_action(handler, None, done=f"user_{action}", confirm=destructive),
        )
    app.router.add_post("/admin/enrolments", create_enrolment)
    add(  # a queue's action, not administration: technicians acknowledge
        "/alerts/{alert_id}/ack",
        _form_action(
            alerts_api.acknowledge_alert, None, lambda request: "/alerts", done="acknowledged"
        ),
    )
    add(
        "/admin/enrolments/{enrolment_id}/revoke",
        _form_action(admin_api.revoke_enrolment, None, done="token_revoked", confirm=True),
    )
    add(  # a revoked till out of its store for good, its history kept
        "/admin/devices/{device_id}/delete",
        _form_action(
            admin_api.delete_device,
            None,
            lambda request: "/fleet",
            done="device_deleted",
            confirm=True,
            cancel=_device_page,
        ),
    )
    add(
        "/admin/devices/{device_id}/revoke",
        _form_action(api.revoke_device, None, _device_page, done="device_revoked", confirm=True),
    )
