"""Every route of the web console, its security headers and the state its pages share, set up at
start without loading the pages: each page's module is imported with its first request.

An idle relay with nobody at the web console then never holds the pages, their words and their
forms (~0.8 MB, issue 16; tests/relay/test_idle_imports.py), as it never holds jinja2 either.
docs/api.md lists these routes (tests/relay/test_api_doc.py).
"""

from __future__ import annotations

import asyncio
import importlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..handlers import admin as admin_api
from ..handlers import alerts as alerts_api
from ..handlers import api
from ..storage import ScopeKind
from . import sessions
from .forms import device_page, name_only, store_fields, user_fields
from .runs import RUNS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["ROWS", "ROWS_RENDERING", "add_console_routes"]

STATIC = Path(__file__).parent / "static"

#: Rendered fleet rows shared by the open pages of one scope, filter and language (the rows
#: hold nothing of the session: no form, no name): (relay time, html). Every open page polls
#: every FLEET_POLL s; without this, 50 pages at 1,000 devices cost half a core
#: (benchmarks/bench_console.py). relay/web/pages.py keeps it.
ROWS = web.AppKey(
    "posassist.web.fleet_rows", OrderedDict[tuple[str, ...], tuple[float, bytes, bytes]]
)
#: Views being rendered now: pages asking for the same one wait for it instead.
ROWS_RENDERING = web.AppKey(
    "posassist.web.fleet_rendering", dict[tuple[str, ...], asyncio.Future[None]]
)


def _deferred(module: str, name: str, *args: Any, **kwargs: Any) -> Handler:
    """The handler ``name`` of relay/web/``module``.py, imported with the first request; with
    arguments, ``name`` makes the handler (once, then kept)."""
    made: list[Handler] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if not made:
            found = getattr(importlib.import_module(f"{__package__}.{module}"), name)
            made.append(found(*args, **kwargs) if args or kwargs else found)
        return await made[0](request)

    return handle


def _form(*args: Any, **kwargs: Any) -> Handler:
    """A form posted to an API route's handler (relay/web/admin.py ``form_action``)."""
    return _deferred("admin", "form_action", *args, **kwargs)


#: The tree's nodes the console renames and deletes (a store is renamed in its settings form).
_NODES = {"organisations": ScopeKind.ORGANISATION, "merchants": ScopeKind.MERCHANT}


def add_console_routes(app: web.Application) -> None:
    """Every page of the web console and its security headers (docs/api.md lists the routes)."""
    app.on_response_prepare.append(sessions.security_headers)
    app[ROWS] = OrderedDict()
    app[ROWS_RENDERING] = {}
    app[RUNS] = OrderedDict()
    _add_pages(app)
    _add_job_pages(app)
    _add_admin_pages(app)


def _add_pages(app: web.Application) -> None:
    """relay/web/pages.py: sign-in, the fleet, a device, the queues, the audit log."""
    get, post = app.router.add_get, app.router.add_post
    get("/", _deferred("pages", "sign_in_page"))
    post("/signin", _deferred("pages", "sign_in"))
    post("/signout", _deferred("pages", "sign_out"))
    get("/lang", _deferred("pages", "switch_language"))
    get("/fleet", _deferred("pages", "fleet"))
    get("/fleet/rows", _deferred("pages", "fleet_rows"))
    get("/devices/{device_id}", _deferred("pages", "device_page"))
    get("/alerts", _deferred("pages", "alerts_page"))
    get("/tickets", _deferred("pages", "tickets_page"))
    get("/audit", _deferred("pages", "audit_page"))
    post("/audit/verify", _deferred("pages", "audit_verify"))
    app.router.add_static("/static", STATIC, append_version=False)


def _add_job_pages(app: web.Application) -> None:
    """relay/web/jobs.py: a till's scripts and diagnostics, run from the console."""
    get, post = app.router.add_get, app.router.add_post
    get("/devices/{device_id}/run", _deferred("jobs", "run_form"))
    post("/devices/{device_id}/run", _deferred("jobs", "run_script"))
    post("/devices/{device_id}/diagnose", _deferred("jobs", "diagnose"))
    get("/jobs/{job_id}", _deferred("jobs", "job_page"))
    get("/jobs/{job_id}/progress", _deferred("jobs", "job_progress"))
    post("/jobs/{job_id}/restore", _deferred("jobs", "restore_backup"))
    post("/jobs/{job_id}/cancel", _deferred("jobs", "cancel_run"))


def _add_admin_pages(app: web.Application) -> None:
    """relay/web/admin.py: administration within the admin's scope, and one's own account."""
    app.router.add_get("/admin", _deferred("admin", "admin_page"))
    add = app.router.add_post
    add("/admin/organisations", _form(api.create_organisation, name_only, done="org_made"))
    add("/admin/merchants", _form(api.create_merchant, dict, done="merchant_made"))
    add("/admin/stores", _form(api.create_store, dict, done="store_made"))
    add("/admin/stores/{store_id}", _form(api.update_store, store_fields, done="saved"))
    for plural, kind in (*_NODES.items(), ("stores", ScopeKind.STORE)):
        if kind is not ScopeKind.STORE:
            renamer = _form(admin_api._renamer(kind), name_only, done="renamed")
            add(f"/admin/{plural}/{{node_id}}/rename", renamer)
        deleter = _form(admin_api._deleter(kind), None, done="deleted", confirm=True)
        add(f"/admin/{plural}/{{node_id}}/delete", deleter)
    add("/admin/users", _form(api.create_user, user_fields, done="user_made"))
    add(
        "/admin/users/{user_id}/rename",
        _form(admin_api.rename_user, lambda f: {"username": f.get("username", "")}, done="renamed"),
    )
    add(
        "/admin/users/{user_id}/password",
        _form(
            admin_api.reset_password,
            lambda f: {"password": f.get("password", "")},
            done="password_reset",
        ),
    )
    app.router.add_get("/account", _deferred("admin", "account_page"))
    add(
        "/account/password",
        _form(
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
            _form(handler, None, done=f"user_{action}", confirm=destructive),
        )
    app.router.add_post("/admin/enrolments", _deferred("admin", "create_enrolment"))
    add(  # a queue's action, not administration: technicians acknowledge
        "/alerts/{alert_id}/ack",
        _form(alerts_api.acknowledge_alert, None, lambda request: "/alerts", done="acknowledged"),
    )
    add(
        "/admin/enrolments/{enrolment_id}/revoke",
        _form(admin_api.revoke_enrolment, None, done="token_revoked", confirm=True),
    )
    add(  # a revoked till out of its store for good, its history kept
        "/admin/devices/{device_id}/delete",
        _form(
            admin_api.delete_device,
            None,
            lambda request: "/fleet",
            done="device_deleted",
            confirm=True,
            cancel=device_page,
        ),
    )
    add(
        "/admin/devices/{device_id}/revoke",
        _form(api.revoke_device, None, device_page, done="device_revoked", confirm=True),
    )
