"""The web console's pages: sign-in and sign-out, the fleet (with its live fragment), a device,
the tickets and alerts queues, the audit log. Server-rendered (jinja2, autoescaped), htmx only.

Handlers are thin: they find the session, check the form's CSRF token before anything changes,
gather from storage what the user's scope covers, and render. docs/console.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gzip
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from posassist.client.advice import ADVICE, script_for
from posassist.client.render import all_findings, audit_detail, audit_target, device_label
from posassist.protocol import PosAssistError
from posassist.protocol.messages import (
    DEVICE_ID,
)
from posassist.protocol.text import printable

from ..audit import RELAY_CREATED, Outcome, verify_store
from ..errors import BadCredentials, CsrfError, DeviceNotActive, NotFound, RateLimited
from ..handlers.alerts import MAX_LISTED, health_of
from ..handlers.api import check_password
from ..handlers.consoles import end_sign_in
from ..scripts_repo import device_platform
from ..state import ROUTE_ROLES, STATE
from ..storage import DeviceStatus, Role, Scope, ScopeKind
from ..storage.admin import AdminStore
from ..storage.tickets import TicketStore
from . import sessions
from .fleet import SHOWS, group_fleet, health_word, human_time, zone
from .pattern import html_pattern
from .routes import ROWS, ROWS_RENDERING
from .runs import RUNS
from .words import (
    WORDS,
    choice_words,
    job_error,
    one_language,
    param_words,
    word,
    word_or,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    import jinja2

    from ..alerts import Alert
    from ..state import RelayState
    from .sessions import Session

    Page = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]

__all__ = [
    "active_device",
    "checked_form",
    "may_run",
    "page",
    "refuse_inactive",
    "render",
]

HERE = Path(__file__).parent
KNOWN_FACTS = frozenset(key for key in WORDS if key.startswith("fact_"))
#: How often an open fleet page asks for its rows again (seconds).
FLEET_POLL = 5


@functools.cache
def templates() -> jinja2.Environment:
    """The templates, loaded with the first page: an idle relay that nobody browses never
    imports jinja2 (its start-up memory, issue 16; tests/relay/test_idle_imports.py)."""
    import jinja2
    from markupsafe import Markup

    def shown(value: Any) -> Any:
        """Every ``{{ }}`` in a template passes here before autoescaping: text from a till or
        a user loses control characters and bidi overrides (protocol/text.py), so it reads in
        the order it is stored; markup the templates build themselves is left alone."""
        if value is None:
            return ""
        if isinstance(value, str) and not isinstance(value, Markup):
            return printable(value)
        return value

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        finalize=shown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["html_pattern"] = html_pattern
    env.globals["job_error"] = job_error
    env.globals["param_words"] = param_words
    env.globals["choice_words"] = choice_words
    env.globals["one_language"] = one_language
    env.globals["word_or"] = word_or
    return env


def html_of(request: web.Request, template: str, session: Session | None, **values: Any) -> str:
    """``template`` rendered in the request's language; a form's result (``?done=KEY`` after
    its redirect, relay/web/admin.py) as words above the page, if it names a known one."""
    lang = sessions.language(request)
    done = f"done_{request.query.get('done', '')}"
    return (
        templates()
        .get_template(template)
        .render(
            w=functools.partial(word, lang=lang),
            lang=lang,
            session=session,
            path=request.path_qs,
            flash=word(done, lang) if done in WORDS else "",
            **values,
        )
    )


def render(
    request: web.Request,
    template: str,
    *,
    session: Session | None = None,
    status: int = 200,
    **values: Any,
) -> web.Response:
    html = html_of(request, template, session, **values)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


def page(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page for the signed-in: without a session, back to sign-in (htmx asks the browser to
    go there); refusals and errors of the error tree become a page in both languages."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = await sessions.session_of(request)
        if session is None:
            if request.method == "GET" and "HX-Request" not in request.headers:
                raise web.HTTPSeeOther("/")
            return web.Response(status=401, headers={"HX-Redirect": "/"})
        try:
            return await handler(request, session)
        except PosAssistError as exc:
            return render(request, "error.html", session=session, status=exc.http_status, error=exc)

    return wrapped


async def checked_form(request: web.Request, session: Session) -> Mapping[str, Any]:
    """The POSTed form once its CSRF token and origin are checked (403 ``CsrfError`` before
    anything is read or changed otherwise)."""
    form = await request.post()
    sent = form.get("csrf")
    await sessions.check_form(
        request,
        sent if isinstance(sent, str) else None,
        session.csrf,
        f"user:{session.user.username}",
    )
    return form


# --- sign-in, sign-out, language -----------------------------------------------------------------


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    """``GET /``: the sign-in form, or the fleet for someone already signed in."""
    if await sessions.session_of(request) is not None:
        raise web.HTTPSeeOther("/fleet")
    return _sign_in_form(request)


def _sign_in_form(
    request: web.Request, *, error: str | None = None, status: int = 200, username: str = ""
) -> web.Response:
    token = sessions.form_token(request)
    response = render(
        request, "signin.html", status=status, csrf=token, error=error, username=username
    )
    sessions.set_form_cookie(response, request, token)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    """``POST /signin``: the API's own password check (rate limit, back-off, scrypt, audit),
    then a session cookie; a wrong password shows the form again with one sentence."""
    form = await request.post()
    sent, expected = form.get("csrf"), request.cookies.get(sessions.FORM_COOKIE, "")
    try:
        await sessions.check_form(
            request,
            sent if isinstance(sent, str) else None,
            expected,  # no form cookie: nothing matches
            f"ip:{request.remote}",
        )
    except CsrfError as exc:
        return render(request, "error.html", status=exc.http_status, error=exc)
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return _sign_in_form(request, error="bad_credentials", status=401)
    username = username.strip()[:64]
    try:
        if not username or not password or len(password) > 1024:
            raise BadCredentials(username)
        user = await check_password(request, username, password)
    except BadCredentials:
        return _sign_in_form(request, error="bad_credentials", status=401, username=username)
    except RateLimited:
        return _sign_in_form(request, error="rate_limited", status=429, username=username)
    state = request.app[STATE]
    token = await state.storage.issue_token(user.id, now=state.now(), ttl=state.config.token_ttl)
    await state.audit(
        f"user:{user.username}",
        "user.login",
        f"user:{user.username}",
        Outcome.OK,
        {"peer": request.remote, "via": "web"},
    )
    response = web.HTTPSeeOther("/fleet")
    sessions.start_session(response, request, token)
    raise response


@page
async def sign_out(request: web.Request, session: Session) -> web.StreamResponse:
    """``POST /signout``: the session's token is revoked (not only the cookie dropped)."""
    await checked_form(request, session)
    state = request.app[STATE]
    await state.storage.revoke_token(session.token, now=state.now())
    end_sign_in(state, session.token)
    name = session.user.username
    await state.audit(f"user:{name}", "user.logout", f"user:{name}", Outcome.OK, {"via": "web"})
    response = web.HTTPSeeOther("/")
    sessions.clear_session(response)
    raise response


#: Where /lang may send the browser back to: a path of this site, no scheme, no host.
_LOCAL_PATH = re.compile(r"/(?![/\\])[\x21-\x5b\x5d-\x7e]*")


async def switch_language(request: web.Request) -> web.StreamResponse:
    """``GET /lang?to=en&next=/fleet``: remember the language, back to a page of this site."""
    lang = request.query.get("to", "zh")
    back = request.query.get("next", "/")
    # a path of this site in plain printable ASCII: browsers drop tabs and newlines from a
    # Location, so "/\t/evil.example" would have been followed as "//evil.example"
    if not _LOCAL_PATH.fullmatch(back):
        back = "/"
    response = web.HTTPSeeOther(back)
    sessions.set_language(response, request, lang if lang in sessions.LANGUAGES else "zh")
    raise response


# --- the fleet -----------------------------------------------------------------------------------


async def _open_alerts(state: RelayState, session: Session) -> dict[str, list[Alert]]:
    alerts = await health_of(state).store.list_alerts(
        session.user.scope, open_only=True, limit=MAX_LISTED
    )
    by_device: dict[str, list[Alert]] = {}
    for alert in alerts:
        by_device.setdefault(alert.device_id, []).append(alert)
    return by_device


async def _fleet(request: web.Request, session: Session) -> dict[str, Any]:
    state = request.app[STATE]
    query = request.query.get("q", "")[:100]
    show = request.query.get("show", "all")
    show = show if show in SHOWS else "all"
    scope = session.user.scope
    devices = await state.storage.list_devices(scope)
    now = state.now()
    online = {d.id for d in devices if state.router.agent(d.id) is not None}
    flapping = {d.id for d in devices if state.flaps.is_flapping(d.id, now)}
    pending = [(d, state.pending(d.id)) for d in devices]
    devices = [_overlaid(d, p) for d, p in pending]
    groups = group_fleet(
        devices,
        await AdminStore(state.storage).store_places(scope),
        await _open_alerts(state, session),
        online,
        flapping,
        now=now,
        lang=sessions.language(request),
        query=query,
        show=show,
    )
    return {
        "groups": groups,
        "query": query,
        "show": show,
        "shows": SHOWS,
        "count": sum(len(g.devices) for g in groups),
        "any_devices": bool(devices),
        "rows_url": "/fleet/rows?" + urlencode({"q": query, "show": show}),
        "poll": FLEET_POLL,
    }


def _overlaid(device: Any, pending: Any) -> Any:
    """Presence noted but not yet written wins (as GET /v1/devices shows it)."""
    if pending is None:
        return device
    seen_at, agent_version, facts = pending
    return dataclasses.replace(
        device,
        last_seen=seen_at,
        agent_version=agent_version or device.agent_version,
        facts=facts if facts is not None else device.facts,
    )


@page
async def fleet(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /fleet?q=&show=``: devices by merchant and store; the rows refresh themselves."""
    return render(request, "fleet.html", session=session, **await _fleet(request, session))


#: Shared fleet rows (relay/web/routes.py ``ROWS``) are fresh for ROWS_FRESH s, below the poll
#: interval.
ROWS_FRESH = 2.0
MAX_ROWS_CACHED = 256


@page
async def fleet_rows(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /fleet/rows?q=&show=``: the fleet's rows alone, for htmx to swap in; shared while
    fresh by the open pages of one scope, filter and language, and rendered once for all the
    pages that ask at the same moment."""
    state = request.app[STATE]
    scope = session.user.scope
    key = (
        scope.kind.value,
        scope.id or "",
        request.query.get("q", "")[:100],
        request.query.get("show", "all"),
        sessions.language(request),
    )
    cache, rendering = request.app[ROWS], request.app[ROWS_RENDERING]
    if key in rendering:  # another page of the same view is being rendered now: share it
        await asyncio.wait({rendering[key]})
    hit = cache.get(key)
    now = state.now()
    if hit is not None and 0 <= now - hit[0] < ROWS_FRESH:
        return _rows_response(request, hit[1], hit[2])
    done = asyncio.get_running_loop().create_future()
    rendering[key] = done
    try:
        body = html_of(
            request, "fleet_rows.html", session, **await _fleet(request, session)
        ).encode()
        squeezed = await asyncio.to_thread(gzip.compress, body, 6)
        cache[key] = (now, body, squeezed)
        cache.move_to_end(key)
        while len(cache) > MAX_ROWS_CACHED:
            cache.popitem(last=False)
        return _rows_response(request, body, squeezed)
    finally:
        rendering.pop(key, None)
        done.set_result(None)


def _rows_response(request: web.Request, body: bytes, squeezed: bytes) -> web.Response:
    """The rows, gzipped for a browser that takes it (4.6 MB → a few hundred KB at 10,000
    devices). Only the rows: they hold no secret, so compression can't leak one (BREACH);
    whole pages carry a CSRF token and are sent as they are."""
    headers = {"Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = squeezed
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)


# --- a device ------------------------------------------------------------------------------------


async def visible_device(request: web.Request, session: Session, action: str) -> Any:
    """The device if the session's scope holds it; 404 alike for unknown and out of scope
    (audited), as the API's routes of issue 15 answer."""
    state = request.app[STATE]
    device_id = request.match_info["device_id"]
    if not DEVICE_ID.fullmatch(device_id):
        raise NotFound("not a device id")
    if not await state.device_in_scope(device_id, session.user.scope):
        await state.audit(
            f"user:{session.user.username}",
            action,
            f"device:{device_id}",
            Outcome.REFUSED,
            {"reason": "out of scope", "via": "web"},
        )
        raise NotFound("device out of scope")
    device = await state.storage.get_device(device_id)
    return _overlaid(device, state.pending(device_id))


async def active_device(request: web.Request, session: Session, action: str) -> Any:
    """:func:`visible_device`, for an action on the till (run, diagnose): a revoked or
    handed-over device is refused before any job (409 ``DeviceNotActive``, audited); the
    relay's routing refuses it again (relay/handlers/consoles.py)."""
    device = await visible_device(request, session, action)
    await refuse_inactive(request.app[STATE], session, device, action)
    return device


async def refuse_inactive(state: RelayState, session: Session, device: Any, action: str) -> None:
    if device.status is DeviceStatus.ACTIVE:
        return
    await state.audit(
        f"user:{session.user.username}",
        action,
        f"device:{device.id}",
        Outcome.REFUSED,
        {"reason": f"device {device.status}", "via": "web"},
    )
    raise DeviceNotActive(f"device {device.id} is {device.status}")


def _advice(code: Any, platform: str = "") -> dict[str, Any]:
    """The fixed words of a finding code (client/advice.py), in ``to_dict`` form; {} if unknown.
    The fixing script is one that runs on ``platform`` (the device's) when it is known."""
    advice = ADVICE.get(code) if isinstance(code, str) else None
    if advice is None:
        return {}
    fix = script_for(advice, platform) if platform else (advice.script, advice.risk)
    return {
        "severity": advice.severity.value,
        "title": {"zh": advice.title_zh, "en": advice.title_en},
        "cashier": {"zh": advice.cashier_zh, "en": advice.cashier_en},
        "technician": {"zh": advice.tech_zh, "en": advice.tech_en},
        "script": {"id": fix[0], "risk": fix[1]} if fix and fix[0] else None,
    }


def finding_rows(findings: list[Any], lang: str, platform: str = "") -> list[dict[str, Any]]:
    """Findings (agent/findings.py ``to_dict``) worst first, in the page's language; an alert's
    bare codes get their words and a fixing script for ``platform`` (the device's)."""
    rank = {"critical": 4, "fault": 3, "warning": 2, "info": 1}
    other = "zh" if lang == "en" else "en"

    def pick(value: Any) -> str:
        if not isinstance(value, dict):
            return ""
        text = value.get(lang) or value.get(other)
        return text if isinstance(text, str) else ""

    rows = []
    for given in findings:
        if not isinstance(given, dict):
            continue
        f = {
            **_advice(given.get("code"), platform),
            **given,
        }  # an alert carries the code, not the words
        severity = f.get("severity") if isinstance(f.get("severity"), str) else "info"
        script = f.get("script") if isinstance(f.get("script"), dict) else None
        rows.append(
            {
                "severity": severity if severity in rank else "info",
                # a help request's summary says it in "zh"/"en" (agent/helpwindow/summary.py)
                "title": pick({k: f.get(k) for k in ("zh", "en")}) or pick(f.get("title")),
                "detail": pick(f.get("detail")),
                "cashier": pick(f.get("cashier")),
                "technician": pick(f.get("technician")),
                "subject": f.get("subject") if isinstance(f.get("subject"), str) else "",
                "code": f.get("code") if isinstance(f.get("code"), str) else "",
                "script": script.get("id") if script and isinstance(script.get("id"), str) else "",
            }
        )
    rows.sort(key=lambda r: -rank.get(str(r["severity"]), 0))
    return rows


@page
async def device_page(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /devices/{device_id}``: facts, open alerts and the latest diagnostics in words
    (findings first), then the history of tickets and jobs."""
    state = request.app[STATE]
    lang = sessions.language(request)
    device = await visible_device(request, session, "device.read")
    store = await state.storage.get_store(device.store_id)
    places = await AdminStore(state.storage).store_places(Scope(ScopeKind.STORE, store.id))
    tz = zone(store.timezone)
    now = state.now()
    alerts = [
        a
        for a in await health_of(state).store.list_alerts(
            session.user.scope, store_id=device.store_id, limit=MAX_LISTED
        )
        if a.device_id == device.id
    ]
    open_alerts = [a for a in alerts if a.is_open]
    tickets = await TicketStore(state.storage).of_device(device.id, since=0.0, limit=20)
    latest = next((t for t in tickets if t.diagnostics), None)
    diagnostics = finding_rows(all_findings(latest.diagnostics), lang) if latest else None
    source = f"{word('diagnostics_from', lang)} {latest.support_code}" if latest else ""
    source_at = human_time(latest.created_at, tz, now, lang) if latest else ""
    # a report asked for from this console ("diagnose now") since, if newer: the till's latest word
    live = next(
        (
            r.report
            for r in reversed(request.app[RUNS].values())
            if r.report and r.device_id == device.id
        ),
        None,
    )
    if live is not None and (latest is None or live.collected_at >= latest.created_at):
        diagnostics = finding_rows(all_findings({"sections": live.sections}), lang)
        source = word("diagnose_now", lang)
        source_at = human_time(live.collected_at, tz, now, lang)
    platform = device_platform(device.facts)
    alert_findings = [
        (a, finding_rows(alert_findings_of(a.details), lang, platform)) for a in open_alerts
    ]
    jobs, _ = await AdminStore(state.storage).jobs_page(
        session.user.scope, limit=20, device_id=device.id
    )
    facts = device.facts
    printers = [p for p in facts.get("printers") or [] if isinstance(p, dict)]
    return render(
        request,
        "device.html",
        session=session,
        device=device,
        store=store,
        merchant=places[0][1] if places else "",
        online=state.router.agent(device.id) is not None,
        health=health_word(open_alerts),
        last_seen=human_time(device.last_seen, tz, now, lang),
        enrolled=human_time(device.enrolled_at, tz, now, lang),
        handed_over=human_time(device.handed_over_at, tz, now, lang),
        facts=[(k, v) for k, v in sorted(facts.items()) if isinstance(v, str)],
        printers=printers,
        alert_findings=alert_findings,
        diagnostics=diagnostics,
        source=source,
        source_at=source_at,
        tickets=[(t, human_time(t.created_at, tz, now, lang)) for t in tickets],
        jobs=[
            (j, human_time(j.created_at, tz, now, lang), human_time(j.finished_at, tz, now, lang))
            for j in jobs
        ],
        when=lambda epoch: human_time(epoch, tz, now, lang),
        known_facts=KNOWN_FACTS,
        may_run=may_run(session),
        active=device.status is DeviceStatus.ACTIVE,
    )


def alert_findings_of(details: Any) -> list[Any]:
    """An alert's findings: the agent sends them under ``details["evidence"]["findings"]``
    (agent/checks/rules.py); an older relay's rows may have them at the top level."""
    if not isinstance(details, dict):
        return []
    evidence = details.get("evidence")
    found = evidence.get("findings") if isinstance(evidence, dict) else None
    if not found:
        found = details.get("findings")
    return list(found) if isinstance(found, (list, tuple)) else []


def may_run(session: Session) -> bool:
    return session.user.role in ROUTE_ROLES["script.run"]


# --- queues and the audit log --------------------------------------------------------------------


async def place_names(
    state: RelayState, scope: Scope, devices: Iterable[str] = ()
) -> dict[str, str]:
    """What ``scope`` covers, by audit target (``store:sto_…``, ``device:dev_…``…) → the words a
    person knows it by: organisation, merchant and store names, and the tills of ``devices``
    (ids a scoped list named; only those are read: 10,000 devices cost 0.3 s) as ``store /
    host``."""
    admin = AdminStore(state.storage)
    names: dict[str, str] = {}
    for kind in (ScopeKind.ORGANISATION, ScopeKind.MERCHANT):
        for node in await admin.list_nodes(kind, scope):
            names[f"{kind.value}:{node.id}"] = node.name
    stores = {store.id: store.name for store, _merchant in await admin.store_places(scope)}
    names.update({f"store:{node}": name for node, name in stores.items()})
    wanted = sorted({d for d in devices if DEVICE_ID.fullmatch(d)})
    for device in (await state.storage.get_devices(wanted)).values() if wanted else ():
        label = device_label(stores.get(device.store_id), device.facts, device.id)
        names[f"device:{device.id}"] = label
    return names


@page
async def alerts_page(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /alerts``: open alerts in the user's scope, worst and oldest first."""
    state = request.app[STATE]
    lang = sessions.language(request)
    now = state.now()
    alerts = await health_of(state).store.list_alerts(
        session.user.scope, open_only=True, limit=MAX_LISTED
    )
    rank = {"critical": 0, "warning": 1, "info": 2}
    alerts.sort(key=lambda a: (rank.get(a.severity, 3), a.opened_at))
    names = await place_names(state, session.user.scope, (a.device_id for a in alerts))
    rows = [
        (
            a,
            human_time(a.opened_at, zone(a.store_timezone or "UTC"), now, lang),
            human_time(a.acknowledged_at, zone(a.store_timezone or "UTC"), now, lang),
            names.get(f"device:{a.device_id}", a.device_id),
        )
        for a in alerts
    ]
    return render(request, "alerts.html", session=session, rows=rows)


@page
async def tickets_page(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /tickets``: tickets in the user's scope that are not closed (``?show=all``: closed
    ones too), with their SLA clocks (due times in the store's zone; breached ones marked)."""
    state = request.app[STATE]
    lang = sessions.language(request)
    now = state.now()
    store = TicketStore(state.storage)
    zones = {s.id: s.timezone for s in await store.stores_in(session.user.scope)}
    tickets = await store.search(session.user.scope, limit=200)
    show_all = request.query.get("show") == "all"
    closed = sum(1 for t in tickets if t.status == "closed")
    rows = []
    for t in tickets:
        if t.status == "closed" and not show_all:
            continue
        tz = zone(zones.get(t.store_id, "UTC"))
        rows.append(
            {
                "ticket": t,
                "opened": human_time(t.created_at, tz, now, lang),
                "response_due": human_time(t.response_due, tz, now, lang),
                "resolve_due": human_time(t.resolve_due, tz, now, lang),
                "response_late": t.response_breached_at is not None
                or (
                    t.first_response_at is None
                    and t.response_due is not None
                    and now > t.response_due
                ),
                "resolve_late": t.resolve_breached_at is not None
                or (t.resolved_at is None and t.resolve_due is not None and now > t.resolve_due),
            }
        )
    return render(
        request, "tickets.html", session=session, rows=rows, show_all=show_all, closed=closed
    )


async def _audit_reader(state: RelayState, session: Session, action: str) -> None:
    """Only an admin at the root reads the whole chain; anyone else: 404, audited."""
    user = session.user
    if user.role is not Role.ADMIN or user.scope.kind is not ScopeKind.ROOT:
        await state.audit(
            f"user:{user.username}",
            action,
            "audit",
            Outcome.REFUSED,
            {"reason": f"role {user.role} at {user.scope.kind}", "via": "web"},
        )
        raise NotFound("audit log")


@page
async def audit_page(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /audit?before=seq``: the audit log, newest first (admins at the root; the API's
    ``GET /v1/audit`` rules), and ``POST /audit/verify`` checks the whole chain."""
    state = request.app[STATE]
    await _audit_reader(state, session, "audit.read")
    raw = request.query.get("before", "")
    before = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 18 else None
    records, next_before = await AdminStore(state.storage).audit_page(limit=100, before=before)
    lang = sessions.language(request)
    now = state.now()
    utc = zone("UTC")
    shown = (t.partition(":")[2] for r in records for t in (r.actor, r.target))
    names = await place_names(state, session.user.scope, shown) if records else {}
    rows = [
        (
            r,
            human_time(r.at, utc, now, lang),
            audit_target(r.actor, names)[0],
            *audit_target(r.target, names),
            audit_detail(r.detail)[:200],
        )
        for r in records
    ]
    return render(
        request,
        "audit.html",
        session=session,
        rows=rows,
        next_before=next_before,
        verified=request.query.get("verified"),
    )


@page
async def audit_verify(request: web.Request, session: Session) -> web.StreamResponse:
    """``POST /audit/verify``: walk the whole chain (as ``posassist-relay audit verify``)."""
    await checked_form(request, session)
    state = request.app[STATE]
    user = session.user
    await _audit_reader(state, session, "audit.verify")
    result = await verify_store(state.storage, first_action=RELAY_CREATED)
    await state.audit(
        f"user:{user.username}",
        "audit.verify",
        "audit",
        Outcome.OK if result.ok else Outcome.FAILED,
        {"records": result.records_checked, "via": "web"},
    )
    raise web.HTTPSeeOther("/audit?verified=" + ("ok" if result.ok else "bad"))
