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
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..handlers import admin as admin_api
from ..handlers import alerts as alerts_api
from ..handlers import api
from ..storage import Role, ScopeKind
from .pages import checked_form, page, render

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
    return render(
        request,
        "admin.html",
        session=session,
        organisations=organisations,
        merchants=merchants,
        stores=[{**s, "hours_json": json.dumps(s["hours"], ensure_ascii=False)} for s in stores],
        users=users,
        tokens=tokens,
        names=names,
        default_hours=DEFAULT_TOKEN_HOURS,
        max_hours=MAX_TOKEN_HOURS,
    )


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


def _store_fields(form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if form.get("name"):
        body["name"] = form["name"]
    if form.get("timezone"):
        body["timezone"] = form["timezone"]
    if form.get("hours"):
        try:
            body["hours"] = json.loads(form["hours"])
        except ValueError:
            raise BadRequest("hours is not JSON") from None
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
