"""Vetted scripts, diagnostics and restores from the web console: the run form built from a
script's manifest, "diagnose now", restoring a run's backup, and the live job page.

Each goes through ``route_request`` (relay/handlers/consoles.py): the role, scope, job and audit
record of the same request from a websocket console; the parameters are checked first with the
manifest's own rules, as the agent checks them again (docs/console.md).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from posassist.client.render import CONSENT_WORDS, HEADINGS, STATUS, all_findings, device_label
from posassist.protocol.manifest import Manifest, ParamError, validate_params
from posassist.protocol.messages import (
    DiagnosticsReport,
    DiagnosticsRequest,
    ScriptRestoreRequest,
    ScriptRunRequest,
)

from ..audit import Outcome
from ..errors import NotFound, ScopeError
from ..handlers.cancel import cancel_job
from ..handlers.consoles import route_request
from ..scripts_repo import device_platform, offered_scripts, param_reason, wrong_platform
from ..state import STATE
from ..storage import DeviceStatus
from . import sessions
from .pages import (
    active_device,
    checked_form,
    finding_rows,
    may_run,
    page,
    refuse_inactive,
    render,
)
from .runs import RUNS, WebRun, remember
from .words import WORDS, finished_detail, job_error, word, word_or

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .sessions import Session

__all__ = [
    "cancel_run",
    "diagnose",
    "job_page",
    "job_progress",
    "restore_backup",
    "run_form",
    "run_script",
]

#: How long a till has to answer "diagnose now" (seconds; the CLI's ``diag`` default is 10).
DIAGNOSE_TIMEOUT = 30.0


#: What the run form takes as an integer or a number: what the browser's number field sends.
_INTEGER = re.compile(r"[-+]?[0-9]{1,18}")
_NUMBER = re.compile(
    r"[-+]?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})(?:[eE][-+]?[0-9]{1,3})?"
)


def _form_params(manifest: Manifest, form: Mapping[str, Any]) -> dict[str, Any]:
    """The run form's ``p_<name>`` fields as typed values; an empty optional field is left out
    (its default applies); validate_params then checks them all, as the agent will again."""
    params: dict[str, Any] = {}
    kinds = {param.name: param.type for param in manifest.params}
    for key, raw in form.items():
        if not key.startswith("p_") or not isinstance(raw, str):
            continue
        name = key[2:]
        kind = kinds.get(name)
        if kind == "boolean":
            params[name] = raw in ("on", "true")
        elif raw == "":
            continue
        elif kind == "integer":
            # plain ASCII digits: int() also takes "9_100" and Arabic-Indic digits
            if not _INTEGER.fullmatch(raw):
                raise ParamError(f"parameter {name!r} must be an integer")
            params[name] = int(raw)
        elif kind == "number":
            if not _NUMBER.fullmatch(raw):
                raise ParamError(f"parameter {name!r} must be a number")
            params[name] = float(raw)
        else:
            params[name] = raw  # strings, enums, paths; and unknown names, refused below
    for param in manifest.params:
        if param.type == "boolean" and param.name not in params and param.default is None:
            params[param.name] = False  # an unticked box is a no, not a missing field
    validate_params(manifest, params)
    return params


async def _offered(request: web.Request) -> dict[tuple[str, str], Manifest]:
    return await asyncio.to_thread(offered_scripts, request.app[STATE].config.scripts_dir)


async def _chosen(request: web.Request, source: Mapping[str, Any]) -> Manifest | None:
    offered = await _offered(request)
    script, version = source.get("script"), source.get("version")
    if not isinstance(script, str) or not isinstance(version, str):
        return None
    return offered.get((script, version))


def _wrong_platform(device: Any, manifest: Manifest, lang: str) -> str | None:
    """relay/scripts_repo.py's ``wrong_platform`` in the page's language."""
    words = wrong_platform(device, manifest)
    return None if words is None else words[1 if lang == "en" else 0]


@page
async def run_form(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /devices/{device_id}/run[?script=&version=]``: the scripts on offer for the till's
    OS, then one's parameters as a form built from its manifest (HTML limits: the browser
    checks first)."""
    device = await active_device(request, session, "script.run")
    offered = await _offered(request)
    manifest = await _chosen(request, request.query)
    lang = sessions.language(request)
    error = _wrong_platform(device, manifest, lang) if manifest is not None else None
    return render(
        request,
        "run.html",
        session=session,
        status=400 if error else 200,
        device=device,
        may_run=may_run(session),
        offered=sorted(
            (m for m in offered.values() if _wrong_platform(device, m, lang) is None),
            key=lambda m: (m.id, m.version),
        ),
        manifest=None if error else manifest,
        values={},
        error=error,
    )


@page
async def run_script(request: web.Request, session: Session) -> web.StreamResponse:
    """``POST /devices/{device_id}/run``: checked again here (CSRF, role, scope, the manifest's
    parameter rules) before a job exists; then routed as a console's run, and on to its page."""
    form = await checked_form(request, session)
    state = request.app[STATE]
    device = await active_device(request, session, "script.run")
    manifest = await _chosen(request, form)
    if manifest is None:
        raise NotFound("no such script on offer")

    async def refused(detail: dict[str, Any], error: str, shown: Manifest | None) -> web.Response:
        """Audited and the form again (or none, for a script this till can't run)."""
        await state.audit(
            f"user:{session.user.username}",
            "script.run",
            f"device:{device.id}",
            Outcome.REFUSED,
            {**detail, "via": "web"},
        )
        return render(
            request,
            "run.html",
            session=session,
            status=400,
            device=device,
            may_run=may_run(session),
            offered=[],
            manifest=shown,
            values={k[2:]: v for k, v in form.items() if k.startswith("p_")} if shown else {},
            error=error,
        )

    mismatch = _wrong_platform(device, manifest, sessions.language(request))
    if mismatch is not None:
        platform = device_platform(device.facts)
        detail = {"reason": "wrong_platform", "script": manifest.id, "platform": platform}
        return await refused(detail, mismatch, None)
    unattended = form.get("unattended") == "on"
    try:
        if unattended and not manifest.unattended:
            raise ParamError("this script may not run unattended")
        params = _form_params(manifest, form)
    except ParamError as exc:
        detail = {"reason": "invalid_params", "script": manifest.id}
        return await refused(detail, param_reason(str(exc)), manifest)
    run = WebRun(device.id, manifest.id, manifest.version, session.user.username)
    request_message = ScriptRunRequest(
        id=1,
        device_id=device.id,
        script=manifest.id,
        version=manifest.version,
        params=params,
        unattended=unattended,
    )
    job_id = await route_request(session.user, run, state, request_message)
    if job_id is None:  # refused for the role (the page offers no form then): said, audited
        raise ScopeError(f"{session.user.username} may not run scripts")
    run.job_id = job_id
    remember(request.app, run)
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


@page
async def diagnose(request: web.Request, session: Session) -> web.StreamResponse:
    """``POST /devices/{device_id}/diagnose``: ask the till for a fresh report now (the
    console's ``diag.request``: same role, scope, job and audit); its page shows it in words."""
    await checked_form(request, session)
    state = request.app[STATE]
    device = await active_device(request, session, "diag.request")
    run = WebRun(device.id, "", "", session.user.username)
    asked = DiagnosticsRequest(id=1, device_id=device.id, timeout=DIAGNOSE_TIMEOUT)
    job_id = await route_request(session.user, run, state, asked)
    if job_id is None:
        raise ScopeError(f"{session.user.username} may not ask for diagnostics")
    run.job_id = job_id
    remember(request.app, run)
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


@page
async def restore_backup(request: web.Request, session: Session) -> web.StreamResponse:
    """``POST /jobs/{job_id}/restore``: put back the files that run backed up (the console's
    ``script.restore``: same role, scope, job and audit); on to the restore's own job page."""
    await checked_form(request, session)
    job = await _visible_job(request, session)
    ran = request.app[RUNS].get(job.id)
    backup_id = ran.finished.backup_id if ran and ran.finished else None
    if ran is None or backup_id is None:
        raise NotFound("no backup known for this job")
    state = request.app[STATE]
    device = await state.storage.get_device(job.device_id)
    await refuse_inactive(state, session, device, "script.restore")
    restore = WebRun(job.device_id, ran.script, ran.version, session.user.username)
    restore.restoring = backup_id
    asked = ScriptRestoreRequest(id=1, device_id=job.device_id, backup_id=backup_id)
    job_id = await route_request(session.user, restore, state, asked)
    if job_id is None:
        raise ScopeError(f"{session.user.username} may not restore backups")
    restore.job_id = job_id
    remember(request.app, restore)
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


@page
async def cancel_run(request: web.Request, session: Session) -> web.StreamResponse:
    """``POST /jobs/{job_id}/cancel``: stop the running script (``POST /v1/jobs/{id}/cancel``'s
    own checks, audit and wait); back to the job's page, which shows how it ended."""
    await checked_form(request, session)
    state = request.app[STATE]
    job_id = request.match_info["job_id"]
    await cancel_job(state, session.user, job_id, via="web")
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


def _report_rows(report: DiagnosticsReport, lang: str) -> dict[str, Any]:
    """A report for people: its findings worst first, then each section's state in words."""
    sections = report.sections
    states = []
    items: list[tuple[Any, Any]] = list(sections.items())  # the till's keys: maybe not all str
    for name, section in items:
        if not isinstance(name, str):
            continue
        ok = section.get("ok") if isinstance(section, dict) else None
        status = section.get("status") if isinstance(section, dict) else None
        status = status if isinstance(status, str) else ("ok" if ok else "unreadable")
        heading = HEADINGS.get(name, name)
        zh, _, en = heading.partition(" / ")
        states.append(
            {
                "name": (en or zh) if lang == "en" else zh,
                "status": status if status in STATUS else "unreadable",
                "words": _status_words(status, lang),
            }
        )
    return {
        "findings": finding_rows(all_findings({"sections": sections}), lang),
        "sections": states,
    }


def _status_words(status: str, lang: str) -> str:
    """A section's state in the page's language (the CLI's ``OK 正常`` split in two)."""
    en, _, zh = STATUS.get(status, status).partition(" ")
    return en if lang == "en" or not zh else zh


async def _visible_job(request: web.Request, session: Session) -> Any:
    state = request.app[STATE]
    job_id = request.match_info["job_id"]
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", job_id):
        raise NotFound("not a job id")
    try:
        job = await state.storage.get_job(job_id)
    except NotFound:
        raise NotFound("job") from None
    if not await state.device_in_scope(job.device_id, session.user.scope):
        await state.audit(
            f"user:{session.user.username}",
            "job.read",
            f"job:{job_id}",
            Outcome.REFUSED,
            {"reason": "out of scope", "via": "web"},
        )
        raise NotFound("job out of scope")
    return job


def _consent_words(step: str, detail: Mapping[str, Any], lang: str) -> str | None:
    """A consent step in the page's language (the console's words, client/render.py
    ``CONSENT_WORDS``), or None for any other step."""
    timeout = detail.get("timeout")
    seconds = (
        f"{timeout:.0f}"
        if isinstance(timeout, int | float) and not isinstance(timeout, bool)
        else "?"
    )
    if step == "consent_asked":
        return (
            f"等待商户确认 ({seconds} 秒)" if lang != "en" else f"asking the merchant ({seconds} s)"
        )
    if step != "consent_answered":
        return None
    decision = str(detail.get("decision"))
    zh, en = CONSENT_WORDS.get(decision, (decision, decision))
    text = (en if lang == "en" else zh).format(timeout=seconds)
    by = detail.get("answered_by")
    return f"{text} ({by})" if isinstance(by, str) and by else text


def _step_words(step: str, detail: Mapping[str, Any], lang: str) -> str:
    """A ``script.progress`` step for people: consent in words, the rest by name with its few
    facts."""
    consent = _consent_words(step, detail, lang)
    if consent is not None:
        return consent
    facts = "; ".join(f"{k} {_fact(v, lang)}" for k, v in detail.items() if not isinstance(v, dict))
    return f"{word('step_' + step, lang)}{': ' + facts if facts else ''}"


def _fact(value: Any, lang: str) -> str:
    """One step fact in words: a list spelled out (none as ``—``), yes/no, never a repr."""
    if isinstance(value, bool):
        return ("yes" if value else "no") if lang == "en" else ("是" if value else "否")
    if isinstance(value, list | tuple):
        return ", ".join(_fact(v, lang) for v in value if not isinstance(v, dict)) or "—"
    return str(value)


def _finished_words(status: str, lang: str) -> str:
    """A run's end status in the page's language (``成功``, ``failed``…)."""
    key = "job_" + status
    return word(key, lang) if key in WORDS else status


async def _job_values(request: web.Request, session: Session, job: Any) -> dict[str, Any]:
    state = request.app[STATE]
    device = await state.storage.get_device(job.device_id)
    active = device.status is DeviceStatus.ACTIVE  # a revoked till's page offers no restore
    store = await state.storage.get_store(device.store_id) if device.store_id else None
    lang = sessions.language(request)
    runs = request.app[RUNS]
    run = runs.get(job.id)
    done = job.status.finished and (run is None or run.done)
    steps = [_step_words(step, detail, lang) for step, detail in run.steps] if run else []
    consent: tuple[str, str] | None = None  # (state for the page's class, words)
    for step, detail in run.steps if run else ():
        words = _consent_words(step, detail, lang)
        if words is not None:
            decision = "asked" if step == "consent_asked" else str(detail.get("decision"))
            consent = (decision, words)
    if done and consent is not None and consent[0] == "asked":
        consent = None  # ended (cancelled, timed out) while asking: the end says how
    backup = run.finished.backup_id if run and run.finished else None
    restored = backup is not None and any(
        other.restoring == backup
        and other.finished is not None
        and other.finished.status == "succeeded"
        for other in list(runs.values())
    )
    finished = finished_detail(run.finished.detail, lang) if run and run.finished else ""
    return {
        "report": _report_rows(run.report, lang) if run and run.report else None,
        "job": job,
        "kind": word_or("kind_", job.kind, lang),
        "place": device_label(store.name if store else None, device.facts, device.id),
        "run": run,
        "steps": steps,
        "finished_words": (
            _finished_words(run.finished.status, lang) if run and run.finished else ""
        ),
        "finished_detail": finished,
        "error": "" if finished else job_error(job.error, lang),
        "consent": consent,
        "output": run.output.decode("utf-8", "replace") if run else "",
        "done": done,
        "may_run": may_run(session),
        "active": active,
        "restored": restored,
    }


@page
async def job_page(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /jobs/{job_id}``: a run's steps, consent, output and end, live until it ends."""
    job = await _visible_job(request, session)
    return render(request, "job.html", session=session, **await _job_values(request, session, job))


@page
async def job_progress(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /jobs/{job_id}/progress``: the live part alone, for htmx to swap in."""
    job = await _visible_job(request, session)
    return render(
        request, "job_progress.html", session=session, **await _job_values(request, session, job)
    )
