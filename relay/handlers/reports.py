"""The merchant's service report and history export: ``GET /v1/reports?store=&since=&format=``.

Every ticket of the store(s) active since the date, its response and resolution against the
SLA (counted in the store's business hours, shown on its wall clock), what was run on the till
and how it ended, backups taken, consent given or refused, ratings, and the audit records
behind each line (seq and hash) with the chain head when the report was made: with the relay's
``audit verify`` they prove the record is complete. JSON, or HTML that prints on A4.

Without ``store`` the report covers every store in the caller's scope, and without ``since``
the whole history: a merchant's full export, for a dispute or a change of provider.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import TYPE_CHECKING, Any

from aiohttp import web

from posassist.client.render import weekly_hours
from posassist.protocol.text import printable

from ..audit import Outcome
from ..errors import ScopeError, StorageError
from ..hours import business_seconds, local_iso
from ..storage import Scope, ScopeKind
from ..tickets import BadTicketQuery, ReportTooLarge
from .tickets import (
    _user,
    linked_jobs,
    state_tickets,
    store_hours,
    ticket_json,
)

if TYPE_CHECKING:
    from ..hours import BusinessHours
    from ..state import RelayState
    from ..storage import RetailStore, User
    from ..storage.tickets import Ticket

#: Tickets one report may hold per store. A report that could not hold them all is refused
#: (400, saying so), never cut short: it claims to be complete.
MAX_TICKETS = 20_000


def _since(text: str | None, hours: BusinessHours) -> float | None:
    """Midnight of ``YYYY-MM-DD`` on the store's wall clock, as an epoch."""
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise BadTicketQuery("since must be a date like 2026-12-01")
    return dt.datetime(day.year, day.month, day.day, tzinfo=hours.zone).timestamp()


def _clock(
    hours: BusinessHours,
    start: float,
    done: float | None,
    due: float | None,
    now: float,
    *,
    paused_at: float | None = None,
    paused_seconds: float = 0.0,
) -> dict[str, Any]:
    """One SLA clock of a ticket: when it was due, when it was met, open seconds it took (not
    counting the time it stood still while the ticket waited for the merchant)."""
    end = done if done is not None else now
    until = end if paused_at is None else min(end, paused_at)
    if paused_at is not None:
        paused_seconds += business_seconds(hours, paused_at, end)
    took = max(0.0, business_seconds(hours, start, end) - paused_seconds)
    return {
        "due": due,
        "due_local": None if due is None else local_iso(hours, due),
        "done_at": done,
        "done_local": None if done is None else local_iso(hours, done),
        "business_seconds": round(took),
        "paused": paused_at is not None and done is None,
        "paused_seconds": round(paused_seconds),
        "met": None if due is None else (done is not None and done <= due),
        "missed": due is not None
        and ((done is not None and done > due) or (done is None and until > due)),
    }


async def _merchant_name(state: RelayState, merchant_id: str) -> str:
    """The merchant's name, for the report's reader ("" if it can't be read now)."""
    try:
        return await state_tickets(state).merchant_name(merchant_id)
    except StorageError:
        return ""


async def build_report(
    state: RelayState, user: User, stores: list[RetailStore], since_text: str | None
) -> dict[str, Any]:
    tickets = state_tickets(state)
    now = state.now()
    head = await state.storage.head()
    out_stores = []
    summary: dict[str, Any] = {
        "tickets": 0,
        "response_met": 0,
        "response_missed": 0,
        "resolution_met": 0,
        "resolution_missed": 0,
        "breaches_recorded": 0,
        "waited_for_merchant": 0,
        "waited_for_merchant_seconds": 0,
        "ratings": 0,
        "rating_average": None,
        "jobs": {},
        "consent": {},
        "backups": 0,
    }
    rating_total = 0
    seqs: set[int] = set()
    # What every store's tickets need, read first: their history in one query, and the audit
    # records of their devices in one pass over the chain from the oldest ticket's opening.
    chosen: list[tuple[RetailStore, BusinessHours, float | None, list[Ticket]]] = []
    for store in stores:
        _, hours = await store_hours(state, store.id)
        since = _since(since_text, hours)
        found = await tickets.search(
            Scope.root(), store_id=store.id, since=since, limit=MAX_TICKETS + 1
        )
        if len(found) > MAX_TICKETS:
            raise ReportTooLarge(
                f"more than {MAX_TICKETS} tickets in {store.id} since {since_text or 'the start'}"
                ": ask for a later since date (several reports cover the history)"
            )
        chosen.append((store, hours, since, found))
    every = [ticket for *_, found in chosen for ticket in found]
    events = await tickets.events([ticket.id for ticket in every])
    first = min(
        (e.audit_seq for evs in events.values() for e in evs if e.audit_seq is not None),
        default=head.seq + 1,
    )
    devices = {f"device:{ticket.device_id}" for ticket in every if ticket.device_id}
    records = await tickets.audit_for(devices, first) if devices else []
    marks: dict[str, list[tuple[float, str, str]]] = {}  # each device's, read once
    for store, hours, since, found in chosen:
        sla = await tickets.sla(store.merchant_id)
        rows = []
        for ticket in reversed(found):  # oldest first, as a record reads
            row = await ticket_json(state, ticket, hours=hours, events=events[ticket.id])
            row["response"] = _clock(
                hours, ticket.clock_started_at, ticket.first_response_at, ticket.response_due, now
            )
            row["resolution"] = _clock(
                hours,
                ticket.clock_started_at,
                ticket.resolved_at,
                ticket.resolve_due,
                now,
                paused_at=ticket.sla_paused_at,
                paused_seconds=ticket.sla_paused_seconds,
            )
            for which in ("response", "resolution"):
                # a reopened ticket's clocks start again; a target it missed before stays missed
                if any(e["kind"] == f"breach.{which}" for e in row["events"]):
                    row[which]["missed"] = True
                    row[which]["met"] = False if row[which]["met"] is not None else None
            row["jobs"] = await linked_jobs(state, ticket, hours, events[ticket.id], records, marks)
            rows.append(row)
            summary["tickets"] += 1
            for which in ("response", "resolution"):
                if row[which]["met"]:
                    summary[f"{which}_met"] += 1
                if row[which]["missed"]:
                    summary[f"{which}_missed"] += 1
            if row["resolution"]["paused_seconds"]:
                summary["waited_for_merchant"] += 1
                summary["waited_for_merchant_seconds"] += row["resolution"]["paused_seconds"]
            summary["breaches_recorded"] += sum(
                1 for e in row["events"] if str(e["kind"]).startswith("breach.")
            )
            if ticket.rating is not None:
                summary["ratings"] += 1
                rating_total += ticket.rating
            for event in row["events"]:
                if event["audit_seq"] is not None:
                    seqs.add(int(event["audit_seq"]))
            for job in row["jobs"]:
                summary["jobs"][job["outcome"]] = summary["jobs"].get(job["outcome"], 0) + 1
                summary["backups"] += len(job["backups"])
                for consent in job["consent"]:
                    decision = str(consent["decision"])
                    summary["consent"][decision] = summary["consent"].get(decision, 0) + 1
                seqs.update(int(a["seq"]) for a in job["audit"])
        out_stores.append(
            {
                "id": store.id,
                "name": store.name,
                "merchant_id": store.merchant_id,
                "merchant_name": await _merchant_name(state, store.merchant_id),
                "generated_local": local_iso(hours, now),
                "timezone": store.timezone,
                "hours": dict(store.hours),
                "sla": sla.to_json(),
                "since": since,
                "since_local": None if since is None else local_iso(hours, since),
                "tickets": rows,
            }
        )
    if summary["ratings"]:
        summary["rating_average"] = round(rating_total / summary["ratings"], 2)
    records = await tickets.audit_records(seqs)
    return {
        "title": "服务报告 / Service report",
        "relay_id": state.config.relay_id,
        "generated_at": now,
        "generated_local": out_stores[0]["generated_local"] if out_stores else None,
        "generated_by": user.username,
        "since": since_text,
        "stores": out_stores,
        "summary": summary,
        "audit": {
            "head": {"seq": head.seq, "hash": head.hash.hex()},
            "records": [
                {
                    "seq": r.seq,
                    "at": r.at,
                    "action": r.action,
                    "outcome": r.outcome,
                    "prev_hash": r.prev_hash.hex(),
                    "hash": r.hash.hex(),
                }
                for r in records
            ],
            "how_to_check": (
                "every record listed is in the relay's hash chain up to the head above: "
                "`posassist-relay audit verify` checks the chain and its signed checkpoints / "
                "以上每条记录均在审计哈希链中，可用 audit verify 验证"
            ),
        },
    }


async def get_report(request: web.Request) -> web.StreamResponse:
    state, user = await _user(request)
    query = request.query
    fmt = query.get("format", "json")
    if fmt not in ("json", "html"):
        raise BadTicketQuery("format must be json or html")
    store_id = query.get("store") or None
    actor = f"user:{user.username}"
    if store_id is not None:
        if not await state.covers(user, Scope(ScopeKind.STORE, store_id)):
            await state.audit(
                actor,
                "report.fetch",
                f"store:{store_id[:64]}",
                Outcome.REFUSED,
                {"reason": "out of scope"},
            )
            raise ScopeError(f"{user.username} may not see that store's report")
        stores = [await state.storage.get_store(store_id)]
    else:
        stores = await state_tickets(state).stores_in(user.scope)
    report = await build_report(state, user, stores, query.get("since") or None)
    await state.audit(
        actor,
        "report.fetch",
        f"store:{store_id}" if store_id else f"{user.scope.kind}:{user.scope.id}",
        Outcome.OK,
        {
            "since": query.get("since", "")[:10],
            "tickets": report["summary"]["tickets"],
            "format": fmt,
        },
    )
    if fmt == "json":
        return web.json_response(report)
    return web.Response(text=render_html(report), content_type="text/html", charset="utf-8")


# --- HTML ---------------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Anything a peer or a person typed, safe in HTML: no escapes, no controls, no markup."""
    return html.escape(printable("" if value is None else str(value)))


_CSS = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; font-size: 11pt; }
body { margin: 2em; }
h1 { font-size: 16pt; } h2 { font-size: 13pt; margin-top: 1.5em; } h3 { font-size: 11pt; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0; }
th, td { border: 1px solid #999; padding: 3px 5px; text-align: left; vertical-align: top; }
th { background: #eee; }
.missed { color: #b00; font-weight: bold; } .met { color: #060; }
.hash { font-family: monospace; font-size: 8pt; word-break: break-all; }
.ticket { page-break-inside: avoid; border-top: 2px solid #333; margin-top: 1em; }
@media print { body { margin: 0; } a { color: inherit; text-decoration: none; } }
@page { size: A4; margin: 15mm; }
"""


#: What the report's codes say, in the merchant's words first (it is their document).
_STATES = {
    "new": "新工单 / new",
    "accepted": "已接单 / accepted",
    "in_progress": "处理中 / in progress",
    "waiting_merchant": "等待商户 / waiting for the merchant",
    "resolved": "已解决 / resolved",
    "closed": "已关闭 / closed",
    "reopened": "重新打开 / reopened",
}
_CATEGORIES = {
    "printer": "打印机 / printer",
    "cash_drawer": "钱箱 / cash drawer",
    "scanner": "扫码枪 / scanner",
    "pos_software": "收银软件 / POS software",
    "network": "网络 / network",
    "other": "其他 / other",
}
_CHANNELS = {"agent": "收银机求助 / from the till", "phone": "电话 / by phone"}
_EVENTS = {
    "opened": "创建 / opened",
    "accepted": "接单 / accepted",
    "working": "开始处理 / work started",
    "note": "备注 / note",
    "reply": "商户回复 / the merchant replied",
    "resolved": "已解决 / resolved",
    "reopened": "重新打开 / reopened",
    "rated": "评分 / rated",
    "closed": "关闭 / closed",
    "breach.response": "响应超时 / response target missed",
    "breach.resolution": "解决超时 / resolution target missed",
}
_OUTCOMES = {
    "succeeded": "成功 / succeeded",
    "failed": "失败 / failed",
    "refused": "未运行 / refused",
    "cancelled": "已取消 / cancelled",
    "timed_out": "超时 / timed out",
    "running": "进行中 / running",
    "pending": "等待中 / pending",
    "unknown": "结果未知 / outcome unknown",
}
_CONSENT = {
    "granted": "商户同意 / approved",
    "denied": "商户拒绝 / denied",
    "timed_out": "无应答 / no answer",
    "no_window": "未打开求助窗口 / no window open",
}


def _word(table: dict[str, str], code: object) -> str:
    return table.get(str(code), str(code))


def _actor(actor: object) -> str:
    kind, _, name = str(actor).partition(":")
    if kind == "user":
        return f"技术员 / technician {name}"
    if kind == "device":
        return f"收银机 / till ({name})"
    return "系统 / the service" if kind == "relay" else str(actor)


def _span(seconds: object) -> str:
    """``15 分钟 / 15 min``, ``4 小时 / 4 h``; ``—`` for no target."""
    if not isinstance(seconds, int | float):
        return "—"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} 小时 / {int(seconds // 3600)} h"
    return f"{round(seconds / 60)} 分钟 / {round(seconds / 60)} min"


def _counts(table: dict[str, str], counts: dict[str, int]) -> str:
    return " · ".join(f"{_word(table, k)} {v}" for k, v in sorted(counts.items())) or "—"


def _outcome(job: dict[str, Any]) -> str:
    """How a run ended, in words, with the reason the till gave."""
    why = str(job.get("error") or "").partition(":")[2].strip()
    word = _word(_OUTCOMES, job["outcome"])
    return f"{word}: {why}" if why else word


def _hours_words(hours: dict[str, Any]) -> str:
    weekly = hours.get("weekly")
    if not isinstance(weekly, dict):
        return "全天营业 / always open"
    closed = ", ".join(str(d) for d in hours.get("closed") or [])
    return weekly_hours(weekly) + (f" (休息日 / closed: {closed})" if closed else "")


def _sla_cell(clock: dict[str, Any]) -> str:
    if clock["due"] is None:
        return "—"
    verdict = (
        '<span class="missed">超时 / missed</span>'
        if clock["missed"]
        else '<span class="met">达标 / met</span>'
        if clock["met"]
        else "暂停: 等待商户 / paused: waiting for the merchant"
        if clock.get("paused")
        else "进行中 / running"
    )
    done = clock["done_local"] or "—"
    minutes = round(clock["business_seconds"] / 60)
    waited = round(clock.get("paused_seconds", 0) / 60)
    stood = f"<br>等待商户 / waiting for the merchant: {waited} min" if waited else ""
    return (
        f"{verdict}<br>due {_e(clock['due_local'])}<br>done {_e(done)}<br>{minutes} min (business)"
        + stood
    )


def render_html(report: dict[str, Any]) -> str:
    s = report["summary"]
    parts = [
        "<!DOCTYPE html><html lang='zh-CN'><head><meta charset='utf-8'>",
        f"<title>{_e(report['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(report['title'])}</h1>",
        f"<p>生成 / generated {_e(report.get('generated_local') or '')} "
        f"by {_e(report['generated_by'])} · relay {_e(report['relay_id'])} · "
        f"since {_e(report['since'] or 'the beginning / 全部历史')}</p>",
        "<h2>汇总 / Summary</h2><table>",
        f"<tr><th>工单 / tickets</th><td>{s['tickets']}</td></tr>",
        f"<tr><th>响应达标 / response met</th><td>{s['response_met']}</td></tr>",
        f"<tr><th>响应超时 / response missed</th><td>{s['response_missed']}</td></tr>",
        f"<tr><th>解决达标 / resolution met</th><td>{s['resolution_met']}</td></tr>",
        f"<tr><th>解决超时 / resolution missed</th><td>{s['resolution_missed']}</td></tr>",
        "<tr><th>等待商户 (计时暂停) / waited for the merchant (clock stopped)</th>"
        f"<td>{s['waited_for_merchant']} ticket(s), "
        f"{round(s['waited_for_merchant_seconds'] / 60)} min</td></tr>",
        f"<tr><th>评分 / ratings</th><td>{s['ratings']} (avg {_e(s['rating_average'])})</td></tr>",
        f"<tr><th>操作 / runs</th><td>{_e(_counts(_OUTCOMES, s['jobs']))}</td></tr>",
        f"<tr><th>同意 / consent</th><td>{_e(_counts(_CONSENT, s['consent']))}</td></tr>",
        f"<tr><th>备份 / backups</th><td>{s['backups']}</td></tr>",
        "</table>",
    ]
    for store in report["stores"]:
        sla = store["sla"]
        parts.append(
            f"<h2>{_e(store['name'])} "
            f"<small>({_e(store.get('merchant_name') or '')} · {_e(store['id'])}, "
            f"{_e(store['timezone'])})</small></h2>"
            f"<p>营业时间 / hours: {_e(_hours_words(store['hours']))}</p>"
            f"<p>服务承诺 / SLA: 响应 / response {_e(_span(sla['response_seconds']))}, "
            f"解决 / resolution {_e(_span(sla['resolve_seconds']))} "
            "(营业时间内计算 / counted in business hours)</p>"
        )
        if not store["tickets"]:
            parts.append("<p>无工单 / no tickets</p>")
        for t in store["tickets"]:
            parts += [
                "<div class='ticket'>",
                f"<h3>{_e(t['code'])} · {_e(_word(_STATES, t['status']))} · "
                f"{_e(_word(_CATEGORIES, t['category']))} · "
                f"{_e(_word(_CHANNELS, t['channel']))}</h3>",
                "<table>",
                f"<tr><th>opened / 创建</th><td>{_e(t['local']['created_at'])}</td></tr>",
                f"<tr><th>technician / 技术员</th><td>{_e(t['technician'] or '—')}</td></tr>",
                f"<tr><th>description / 描述</th><td>{_e(t['description'])}</td></tr>",
                f"<tr><th>response / 响应</th><td>{_sla_cell(t['response'])}</td></tr>",
                f"<tr><th>resolution / 解决</th><td>{_sla_cell(t['resolution'])}</td></tr>",
                f"<tr><th>rating / 评分</th><td>{_e(t['rating'] or '—')} "
                f"{_e(t['rating_comment'] or '')}</td></tr>",
                "</table>",
            ]
            if t["jobs"]:
                parts.append(
                    "<table><tr><th>job</th><th>脚本 / script</th><th>when / 时间</th>"
                    "<th>结果 / outcome</th>"
                    "<th>consent / 同意</th><th>backup / 备份</th></tr>"
                )
                for job in t["jobs"]:
                    consent = ", ".join(
                        _word(_CONSENT, c["decision"])
                        + (f" ({c['answered_by']})" if c["answered_by"] else "")
                        for c in job["consent"]
                    )
                    parts.append(
                        f"<tr><td>{_e(job['id'])}</td><td>{_e(job['script'] or job['kind'])} "
                        f"{_e(job['version'] or '')}</td><td>{_e(job['local']['created_at'])}</td>"
                        f"<td>{_e(_outcome(job))}</td><td>{_e(consent or '—')}</td>"
                        f"<td>{_e(', '.join(job['backups']) or '—')}</td></tr>"
                    )
                parts.append("</table>")
            parts.append(
                "<table><tr><th>when / 时间</th><th>who / 谁</th><th>what / 事件</th>"
                "<th>audit / 审计</th></tr>"
            )
            for event in t["events"]:
                what = _word(_EVENTS, event["kind"])
                if event["kind"] == "note" and event["status"] == "waiting_merchant":
                    what = "提问商户 / asked the merchant"
                parts.append(
                    f"<tr><td>{_e(event['local'])}</td><td>{_e(_actor(event['actor']))}</td>"
                    f"<td>{_e(what)} {_e(event['text'])}</td>"
                    f"<td>#{_e(event['audit_seq'])}</td></tr>"
                )
            parts.append("</table></div>")
    audit = report["audit"]
    parts += [
        "<h2>审计记录 / Audit records</h2>",
        f"<p>chain head #{audit['head']['seq']} "
        f"<span class='hash'>{_e(audit['head']['hash'])}</span></p>",
        f"<p>{_e(audit['how_to_check'])}</p>",
        "<table><tr><th>seq</th><th>action</th><th>hash</th></tr>",
    ]
    for record in audit["records"]:
        parts.append(
            f"<tr><td>{record['seq']}</td><td>{_e(record['action'])}</td>"
            f"<td class='hash'>{_e(record['hash'])}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)


def add_routes(app: web.Application) -> None:
    """``GET /v1/reports``: a merchant's service report over its stores' tickets."""
    app.router.add_get("/v1/reports", get_report)
