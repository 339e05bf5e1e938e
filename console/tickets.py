"""``posassist tickets``, ``posassist ticket …`` and ``posassist report``: tickets and the
merchant's service report, through the relay's API (relay/handlers/tickets.py, reports.py).

Everything the relay or a merchant typed is printed through :func:`printable`; times are shown
as the relay gives them, on the store's wall clock (with its UTC offset).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from posassist.client import http
from posassist.client.files import write_private
from posassist.protocol.errors import BadArgument
from posassist.protocol.messages import HELP_CATEGORIES

from .api import Names, exchange, pick_node, store_names
from .render import printable, printable_data, table

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

__all__ = ["add_parsers", "command", "start_work"]

#: What the technician sees for each state (English / 中文).
STATE_WORDS = {
    "new": "new / 新工单",
    "accepted": "accepted / 已接单",
    "in_progress": "in progress / 处理中",
    "waiting_merchant": "waiting for the merchant / 等待商户",
    "resolved": "resolved / 已解决",
    "closed": "closed / 已关闭",
    "reopened": "reopened / 重新打开",
}


#: A ticket's history steps (the relay's ``ticket_events.kind``) in words.
EVENT_WORDS = {
    "opened": "opened / 创建",
    "accepted": "accepted / 接单",
    "working": "working on it / 处理",
    "note": "note / 备注",
    "reply": "the merchant replied / 商户回复",
    "resolved": "resolved / 已解决",
    "reopened": "reopened / 重新打开",
    "rated": "rated / 评分",
    "closed": "closed / 关闭",
    "breach.response": "response target missed / 响应超时",
    "breach.resolution": "resolution target missed / 解决超时",
}

#: The largest report the console reads (a merchant's whole history): far above a JSON answer.
MAX_REPORT = 64 * 1024 * 1024


def _on_ticket(
    session: dict[str, str],
    method: str,
    code: str,
    suffix: str = "",
    body: dict[str, Any] | None = None,
) -> http.Response:
    """One call on a ticket by its support code; the relay's bare 404 and 403 in words."""
    try:
        return exchange(session, method, f"/v1/tickets/{_code(code)}{suffix}", body)
    except http.HttpStatusError as exc:
        if exc.status == 404:
            raise BadArgument(
                f"no ticket {code} that you may see (posassist tickets lists them) / 未找到该工单"
            ) from None
        if exc.status == 403 and method == "POST":
            raise http.HttpRefusedError(
                403,
                exc.error,
                "only technicians and admins work tickets; a merchant account reads them"
                " / 只有技术员和管理员可以处理工单",
            ) from None
        raise


def _store_id(session: dict[str, str], text: str | None) -> str | None:
    """A store named by its id or by a name unique in your scope (None stays None)."""
    return None if text is None else str(pick_node(session, "store", text)["id"])


def _code(text: str) -> str:
    """The code as typed, made safe for a URL path (the relay reads it loosely)."""
    if not 0 < len(text) <= 32:
        raise BadArgument("CODE is the support code the merchant reads out, e.g. K7Q2-XM9P")
    return quote(text, safe="")


def _line(ticket: dict[str, Any], stores: dict[str, str] | None = None) -> str:
    """A ticket in one line; its store by name when ``stores`` (:func:`store_names`) has it."""
    breached = [k for k, v in (ticket.get("breached") or {}).items() if v]
    flags = f"  SLA MISSED / 超时: {', '.join(breached)}" if breached else ""
    if ticket.get("sla_paused"):
        flags += "  SLA paused, waiting for the merchant / 计时暂停 (等待商户)"
    due = (ticket.get("local") or {}).get("response_due") or "-"
    store = (stores or {}).get(ticket["store_id"], ticket["store_id"])
    text = (
        f"{ticket['code']:<10} {STATE_WORDS.get(ticket['status'], ticket['status']):<24} "
        f"{ticket['category']:<12} {store:<26} "
        f"{ticket.get('technician') or '-':<12} {ticket['local']['created_at']}  due {due}{flags}"
    )
    return printable(text, multiline=False)


def _minutes(seconds: object) -> str:
    """Business seconds as whole minutes (``-`` for none)."""
    if not isinstance(seconds, int | float) or seconds <= 0:
        return "-"
    return f"{round(seconds / 60)} min (business / 营业时间)"


def list_tickets(
    session: dict[str, str],
    store: str | None,
    states: list[str],
    breached: bool,
    as_json: bool,
) -> int:
    query: dict[str, str] = {}
    store = _store_id(session, store)
    if store:
        query["store"] = store
    if states:
        query["state"] = ",".join(states)
    if breached:
        query["breached"] = "1"
    path = "/v1/tickets" + (f"?{urlencode(query)}" if query else "")
    answer = exchange(session, "GET", path).json()
    tickets = answer["tickets"]
    if as_json:
        print(json.dumps(printable_data(tickets), ensure_ascii=False, indent=2))
        return 0
    names = store_names(session) if tickets else {}
    rows = []
    for ticket in tickets:
        breaches = [k for k, v in (ticket.get("breached") or {}).items() if v]
        sla = f"MISSED / 超时: {', '.join(breaches)}" if breaches else ""
        if ticket.get("sla_paused"):
            sla = (sla + " " if sla else "") + "paused / 计时暂停"
        local = ticket.get("local") or {}
        rows.append(
            [
                ticket["code"],
                STATE_WORDS.get(ticket["status"], ticket["status"]),
                ticket["category"],
                names.get(ticket["store_id"], ticket["store_id"]),
                ticket.get("technician"),
                local.get("created_at"),
                local.get("response_due"),
                sla,
            ]
        )
    headers = ["code", "state / 状态", "category", "store / 门店", "technician", "opened", "due"]
    print(table([*headers, "SLA"], rows, empty="no tickets / 没有工单"))
    if answer.get("truncated"):
        print(f"(the newest {len(tickets)} only: narrow with --store or --state / 仅显示最新的)")
    return 0


def show(session: dict[str, str], code: str, as_json: bool) -> int:
    ticket = _on_ticket(session, "GET", code).json()
    if as_json:
        print(json.dumps(printable_data(ticket), ensure_ascii=False, indent=2))
        return 0
    names, stores = Names(session), {}
    device = till = ticket.get("device_id")
    with contextlib.suppress(http.HttpStatusError):  # a relay that won't list them: ids
        stores = {str(r["id"]): str(r.get("name") or r["id"]) for r in names.rows("store")}
        if device and names.device(device):
            till = f"{names.device_label(device)} ({device})"
    print(_line(ticket, stores))  # the store by name, the till as `store / host (id)`: M4
    local = ticket["local"]
    rows = [
        ("device / 设备", till or "-"),
        ("channel / 渠道", ticket["channel"]),
        ("contact / 联系方式", ticket.get("contact") or "-"),
        ("response due / 响应时限", local.get("response_due") or "-"),
        ("resolve due / 解决时限", local.get("resolve_due") or "-"),
        ("waited for the merchant / 等待商户", _minutes(ticket.get("sla_paused_seconds"))),
        ("rating / 评分", ticket.get("rating") or "-"),
    ]
    for label, value in rows:
        print(printable(f"  {label}: {value}", multiline=False))
    print("  description / 描述:")
    for line in printable(str(ticket["description"])).splitlines():
        print(f"    {line}")
    findings = (ticket.get("diagnostics") or {}).get("findings") or []
    for finding in findings[:16]:
        if isinstance(finding, dict):
            words = finding.get("zh") or finding.get("en") or ""
            text = f"  [{finding.get('severity', '?')}] {finding.get('code', '?')} {words}"
            print(printable(text, multiline=False))
    print("  history / 记录:")
    events = list(ticket.get("events", []))
    for i, event in enumerate(events):
        later = events[i + 1] if i + 1 < len(events) else None
        if (  # one run after another for the same ticket: the step is said once
            event["kind"] == "working"
            and later is not None
            and (later["kind"], later["actor"]) == ("working", event["actor"])
        ):
            continue
        what = EVENT_WORDS.get(event["kind"], event["kind"])
        if event["kind"] == "note" and event.get("status") == "waiting_merchant":
            what = "asked the merchant / 提问商户"
        text = (
            f"    {event['local']} {event['actor']} {what} {event.get('text') or ''}"
            f" (audit #{event['audit_seq']})"
        )
        print(printable(text, multiline=False))
    if ticket.get("jobs"):
        print("  runs / 操作:")
    for job in ticket.get("jobs", []):
        consent = ", ".join(f"{c['decision']}" for c in job.get("consent", []))
        why = str(job.get("error") or "").partition(":")[2].strip()
        text = (
            f"    {job['local']['created_at']} {job.get('script') or job['kind']} "
            f"{job.get('version') or ''} {job.get('outcome') or job['status']}"
            + (f" ({why})" if why else "")
        )
        text += (f", consent: {consent}" if consent else "") + f"  [{job['id']}]"
        print(printable(text, multiline=False))
    return 0


def change(
    session: dict[str, str], verb: str, code: str, text: str = "", state: str | None = None
) -> int:
    body: dict[str, Any] = {"text": text}
    if state:
        body["state"] = state
    ticket = _on_ticket(session, "POST", code, f"/{verb}", body).json()
    print(_line(ticket))
    return 0


def start_work(session: dict[str, str], code: str) -> None:
    """``run --ticket CODE``: mark the ticket in progress (yours) before the run starts, so the
    run is on the ticket's record (the relay links every job on its device while it is open)."""
    ticket = _on_ticket(session, "POST", code, "/work", {"text": ""}).json()
    print(_line(ticket))


def open_for_caller(
    session: dict[str, str],
    store: str,
    device: str | None,
    category: str,
    description: str,
    contact: str,
    language: str,
) -> int:
    body: dict[str, Any] = {
        "store_id": _store_id(session, store),
        "category": category,
        "description": description,
        "contact": contact,
        "language": language,
    }
    if device:
        body["device_id"] = device
    ticket = exchange(session, "POST", "/v1/tickets", body).json()
    print(_line(ticket))
    print(printable(f"support code / 服务码: {ticket['code']}", multiline=False))
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    """The report's summary in words; the whole report is a file (--html, --json)."""
    s = summary
    counts = [
        ("tickets / 工单", s["tickets"]),
        ("response met / 响应达标", s["response_met"]),
        ("response missed / 响应超时", s["response_missed"]),
        ("resolution met / 解决达标", s["resolution_met"]),
        ("resolution missed / 解决超时", s["resolution_missed"]),
        ("waited for the merchant / 等待商户", s.get("waited_for_merchant", 0)),
        ("ratings / 评分", f"{s['ratings']} (average {s['rating_average'] or '-'})"),
        ("runs / 操作", ", ".join(f"{k} {v}" for k, v in sorted(s["jobs"].items())) or "-"),
        ("consent / 同意", ", ".join(f"{k} {v}" for k, v in sorted(s["consent"].items())) or "-"),
        ("backups / 备份", s["backups"]),
    ]
    for label, value in counts:
        print(printable(f"{label:<32} {value}", multiline=False))
    print("the whole report: --html FILE (prints on A4), --json FILE / 完整报告: --html 或 --json")


def report(
    session: dict[str, str],
    store: str | None,
    since: str | None,
    html_out: Path | None,
    json_out: Path | None,
) -> int:
    query: dict[str, str] = {}
    store = _store_id(session, store)
    if store:
        query["store"] = store
    if since:
        query["since"] = since
    base = "/v1/reports?" + urlencode(query)
    wrote = False
    if json_out is not None or html_out is None:
        body = exchange(session, "GET", base + "&format=json", max_bytes=MAX_REPORT).body
        if json_out is None:
            _print_summary(json.loads(body.decode("utf-8"))["summary"])
        else:
            write_private(json_out, body.decode("utf-8"))
            wrote = True
    if html_out is not None:
        page = exchange(session, "GET", base + "&format=html", max_bytes=MAX_REPORT).body
        write_private(html_out, page.decode("utf-8"))
        wrote = True
    if wrote:
        done = ", ".join(str(p) for p in (html_out, json_out) if p is not None)
        print(printable(f"report written / 报告已保存: {done}", multiline=False))
    return 0


def add_parsers(commands: Any) -> None:
    """The ticket commands on the console's parser (console/__main__.py)."""
    from pathlib import Path

    ts = commands.add_parser("tickets", help="tickets in your scope / 工单列表")
    ts.add_argument("--store", help="only this store's")
    ts.add_argument(
        "--state", action="append", default=[], choices=sorted(STATE_WORDS), help="only these"
    )
    ts.add_argument("--breached", action="store_true", help="only those that missed their SLA")
    ts.add_argument("--json", action="store_true")
    t = commands.add_parser("ticket", help="one ticket: show, accept, note, resolve, reopen, open")
    verbs = t.add_subparsers(dest="ticket_command", required=True)
    sh = verbs.add_parser("show", help="a ticket, its history and the jobs run for it")
    sh.add_argument("code", help="the support code, e.g. K7Q2-XM9P")
    sh.add_argument("--json", action="store_true")
    ac = verbs.add_parser("accept", help="take a new or reopened ticket")
    ac.add_argument("code")
    no = verbs.add_parser("note", help="add a note; --state to say you work or wait")
    no.add_argument("code")
    no.add_argument("text")
    no.add_argument("--state", choices=("in_progress", "waiting_merchant"))
    for verb, words in (("resolve", "mark resolved"), ("reopen", "reopen a resolved ticket")):
        v = verbs.add_parser(verb, help=words)
        v.add_argument("code")
        v.add_argument("--note", default="", help="what was done / why")
    op = verbs.add_parser("open", help="open a ticket for a merchant who phoned")
    op.add_argument("--store", required=True)
    op.add_argument("--device")
    op.add_argument("--category", choices=HELP_CATEGORIES, default="other")
    op.add_argument("--description", required=True)
    op.add_argument("--contact", default="")
    op.add_argument("--language", choices=("zh-CN", "en"), default="zh-CN")
    rp = commands.add_parser("report", help="the service report (HTML and JSON) / 服务报告")
    rp.add_argument("--store", help="one store (default: every store you may see: an export)")
    rp.add_argument("--since", help="YYYY-MM-DD, on the store's calendar (default: all)")
    rp.add_argument("--html", type=Path, help="write the printable report here")
    rp.add_argument("--json", type=Path, help="write the report's JSON here")


COMMANDS = ("tickets", "ticket", "report")


def command(args: argparse.Namespace, session: dict[str, str]) -> int:
    if args.command == "tickets":
        return list_tickets(session, args.store, args.state, args.breached, args.json)
    if args.command == "report":
        return report(session, args.store, args.since, args.html, args.json)
    verb = args.ticket_command
    if verb == "show":
        return show(session, args.code, args.json)
    if verb == "accept":
        return change(session, "accept", args.code)
    if verb == "note":
        return change(session, "note", args.code, args.text, args.state)
    if verb in ("resolve", "reopen"):
        return change(session, verb, args.code, args.note)
    if verb == "open":
        return open_for_caller(
            session,
            args.store,
            args.device,
            args.category,
            args.description,
            args.contact,
            args.language,
        )
    print(f"unknown ticket command {verb!r}", file=sys.stderr)  # pragma: no cover - argparse
    return 2
