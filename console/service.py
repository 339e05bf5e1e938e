"""``posassist sla`` and ``posassist store``: a merchant's SLA targets and a store's time zone
and opening hours, through the relay's API (``/v1/merchants/{id}/sla``, ``/v1/stores/{id}``).

The relay checks everything again and answers what is wrong; here the command line's own forms
(``30m``, ``mon-fri 09:00-21:00; sat 10:00-18:00``) become the API's JSON, and a name is
looked up among the stores or merchants the user may see. What the relay says is printed
through :func:`printable`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from posassist.client import http
from posassist.client.cli import seconds_from
from posassist.client.render import DAYS, weekly_hours
from posassist.protocol.errors import BadArgument

from . import admin
from .api import exchange, pick_node
from .render import local_time, printable, printable_data, table

if TYPE_CHECKING:
    import argparse

__all__ = ["COMMANDS", "add_parsers", "command", "hours_from_text", "hours_text"]

COMMANDS = ("sla", "store")
_SPAN = re.compile(r"(\d{2}:\d{2})-(\d{2}:\d{2})")
_HOURS_EXAMPLE = (
    "e.g. 'mon-fri 09:00-12:00,13:00-21:00; sat,sun 10:00-18:00' or 'always' / "
    "格式如 'mon-fri 09:00-12:00,13:00-21:00; sat,sun 10:00-18:00'"
)
#: What ``store set --help`` says of ``--hours`` (docs/cli.md#opening-hours).
_HOURS_HELP = (
    "opening hours: groups 'DAYS SPANS' joined by ';'. DAYS is mon … sun, a range (mon-fri), a "
    "list (sat,sun) or daily; SPANS are HH:MM-HH:MM (00:00 … 24:00) on the store's clock, a "
    "lunch break as two spans split by a comma or a space (09:00-12:00,13:00-21:00); days not "
    "named are closed; 'always' is open all the time. E.g. "
    "'mon-fri 09:00-12:00,13:00-21:00; sat,sun 10:00-18:00'"
)


def _time_of_day(text: str, span: str) -> None:
    """BadArgument unless ``text`` (HH:MM) is a time on a clock: 00:00 … 23:59, or 24:00."""
    hour, minute = int(text[:2]), int(text[3:])
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise BadArgument(
            f"hours: {text} (in {span}) is not a time of day: 00:00 … 24:00 ({_HOURS_EXAMPLE})"
        )


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "none / 无"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _days(text: str) -> list[str]:
    """``mon-fri`` / ``sat,sun`` / ``daily`` → day names, in week order."""
    if text == "daily":
        return list(DAYS)
    chosen: list[str] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise BadArgument(f"hours: {part!r} is not a day or range of days (mon … sun)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise BadArgument(f"hours: {part!r} runs backwards (write mon-fri, not fri-mon)")
        chosen.extend(DAYS[a : b + 1])
    return chosen


def hours_from_text(text: str) -> dict[str, Any]:
    """The command line's opening hours as the API's JSON (relay/hours.py checks the times):
    ``always`` is ``{}``; otherwise groups ``DAYS HH:MM-HH:MM [HH:MM-HH:MM …]`` joined by ``;``.
    A day named twice is refused rather than guessed."""
    text = text.strip().lower()
    if text in ("always", "24/7", "{}"):
        return {}
    weekly: dict[str, list[list[str]]] = {}
    for group in filter(None, (g.strip() for g in text.split(";"))):
        days_text, *rest = re.split(r"\s+", group, maxsplit=1)
        spans = [span for span in re.split(r"[\s,]+", "".join(rest)) if span]  # comma or space
        if not spans:
            raise BadArgument(f"hours: {group!r} names no times ({_HOURS_EXAMPLE})")
        times = []
        for span in spans:
            found = _SPAN.fullmatch(span)
            if found is None:
                raise BadArgument(f"hours: {span!r} is not HH:MM-HH:MM ({_HOURS_EXAMPLE})")
            _time_of_day(found.group(1), span)
            _time_of_day(found.group(2), span)
            if found.group(2) <= found.group(1):
                raise BadArgument(
                    f"hours: {span} ends before it starts; a shop open past midnight gives two "
                    "spans, e.g. 'mon 18:00-24:00; tue 00:00-02:00' / 跨午夜请分成两段"
                )
            times.append([found.group(1), found.group(2)])
        for day in _days(days_text):
            if day in weekly:
                raise BadArgument(f"hours: {day} is named twice")
            weekly[day] = times
    if not weekly:
        raise BadArgument(f"hours: nothing given ({_HOURS_EXAMPLE})")
    return {"weekly": {day: weekly[day] for day in DAYS if day in weekly}}


def hours_text(hours: dict[str, Any]) -> str:
    """The API's JSON back in the command line's form (days with equal hours run together)."""
    weekly = hours.get("weekly")
    if not isinstance(weekly, dict):
        return "always open / 全天营业"
    return weekly_hours(weekly) + " (closed otherwise / 其余时间休息)"


def _print_sla(merchant: dict[str, Any], sla: dict[str, Any]) -> None:
    print(printable(f"{merchant.get('name', '')} ({merchant['id']})", multiline=False))
    counted = "(business time / 营业时间)"
    print(f"  response / 响应时限: {_duration(sla.get('response_seconds'))} {counted}")
    print(f"  resolution / 解决时限: {_duration(sla.get('resolve_seconds'))} {counted}")


def sla_command(args: argparse.Namespace, session: dict[str, str]) -> int:
    merchant = pick_node(session, "merchant", args.merchant)
    path = f"/v1/merchants/{quote(merchant['id'], safe='')}/sla"
    current = exchange(session, "GET", path).json()
    if args.sla_command == "set":
        if args.response is None and args.resolve is None:
            raise BadArgument("sla set: give --response and/or --resolve (e.g. 30m, 4h, none)")
        body = {
            "response_seconds": current.get("response_seconds"),
            "resolve_seconds": current.get("resolve_seconds"),
        }
        if args.response is not None:
            body["response_seconds"] = seconds_from(args.response, "--response")
        if args.resolve is not None:
            body["resolve_seconds"] = seconds_from(args.resolve, "--resolve")
        current = exchange(session, "POST", path, body).json()
        print("(for tickets opened from now on / 仅适用于此后新开的工单)")
    if args.json:
        print(json.dumps(printable_data(current), ensure_ascii=False, indent=2))
    else:
        _print_sla(merchant, current)
    return 0


def store_command(args: argparse.Namespace, session: dict[str, str]) -> int:
    if args.store_command == "list":
        stores = exchange(session, "GET", "/v1/stores").json()["stores"]
        if args.json:
            print(json.dumps(printable_data(stores), ensure_ascii=False, indent=2))
            return 0
        merchants = {m["id"]: m.get("name") for m in _merchants(session)}
        rows = [
            [
                row.get("name"),
                merchants.get(row.get("merchant_id"), row.get("merchant_id")),
                row.get("timezone"),
                local_time(row.get("created_at"), row.get("timezone")),
                row["id"],
            ]
            for row in stores
        ]
        headers = ["store / 门店", "merchant / 商户", "time zone / 时区", "created / 创建", "id"]
        print(table(headers, rows, empty="no stores / 没有门店"))
        return 0
    store = pick_node(session, "store", args.store)
    path = f"/v1/stores/{quote(store['id'], safe='')}"
    if args.store_command == "set":
        body: dict[str, Any] = {}
        if args.name is not None:
            body["name"] = args.name
        if args.timezone is not None:
            body["timezone"] = args.timezone
        if args.hours is not None or args.closed is not None:
            current = exchange(session, "GET", path).json().get("hours") or {}
            hours = hours_from_text(args.hours) if args.hours is not None else dict(current)
            closed = current.get("closed", []) if args.closed is None else args.closed
            if closed:
                hours["closed"] = closed
            else:
                hours.pop("closed", None)
            body["hours"] = hours
        if not body:
            raise BadArgument("store set: give --name, --timezone, --hours and/or --closed")
        try:
            exchange(session, "PATCH", path, body)
        except http.HttpStatusError as exc:
            if "hours" not in body or exc.error not in ("BadHours", "BadDayHours"):
                raise
            # the relay's sentence describes its JSON (readme-walk 15 M6): say it as typed
            raise BadArgument(
                "hours: the relay refused these opening hours (spans of a day must not overlap; "
                f"closed dates like 2026-12-25); nothing was changed ({_HOURS_EXAMPLE})"
            ) from None
    shown = exchange(session, "GET", path).json()
    if args.json:
        print(json.dumps(printable_data(shown), ensure_ascii=False, indent=2))
        return 0
    print(printable(f"{shown.get('name', '')} ({shown['id']})", multiline=False))
    print(printable(f"  time zone / 时区: {shown.get('timezone')}", multiline=False))
    hours = shown.get("hours") or {}
    print(printable(f"  hours / 营业时间: {hours_text(hours)}", multiline=False))
    closed = hours.get("closed") or []
    if closed:
        print(printable(f"  closed / 休息日: {', '.join(closed)}", multiline=False))
    return 0


def _merchants(session: dict[str, str]) -> list[dict[str, Any]]:
    return list(exchange(session, "GET", "/v1/merchants").json()["merchants"])


def _closed_dates(text: str) -> list[str]:
    """``2026-12-25,2027-01-01`` → a list (``none`` clears); the relay checks each date."""
    if text.strip().lower() in ("none", ""):
        return []
    return [d.strip() for d in text.split(",") if d.strip()]


def add_parsers(commands: Any) -> None:
    """The two commands on the console's parser (console/__main__.py)."""
    sla = commands.add_parser("sla", help="a merchant's response and resolution targets / SLA")
    sla_verbs = sla.add_subparsers(dest="sla_command", required=True)
    show = sla_verbs.add_parser("show", help="the merchant's targets")
    show.add_argument("merchant", help="the merchant's id or name")
    show.add_argument("--json", action="store_true")
    set_ = sla_verbs.add_parser("set", help="set targets, in the store's business time")
    set_.add_argument("merchant", help="the merchant's id or name")
    set_.add_argument("--response", help="first answer within, e.g. 30m (none: no target)")
    set_.add_argument("--resolve", help="resolved within, e.g. 4h or 2d (none: no target)")
    set_.add_argument("--json", action="store_true")
    store = commands.add_parser("store", help="a store's time zone and opening hours")
    store_verbs = store.add_subparsers(dest="store_command", required=True)
    listing = store_verbs.add_parser("list", help="the stores you may see")
    listing.add_argument("--json", action="store_true")
    show = store_verbs.add_parser("show", help="name, time zone and hours")
    show.add_argument("store", help="the store's id or name")
    show.add_argument("--json", action="store_true")
    set_ = store_verbs.add_parser("set", help="change the name, time zone or hours")
    set_.add_argument("store", help="the store's id or name")
    set_.add_argument("--name")
    set_.add_argument("--timezone", help="an IANA zone, e.g. Asia/Shanghai")
    set_.add_argument("--hours", help=_HOURS_HELP)
    set_.add_argument(
        "--closed", type=_closed_dates, help="closed dates, e.g. 2026-12-25,2027-01-01 (none)"
    )
    set_.add_argument("--json", action="store_true")
    admin.add_store_verbs(store_verbs)  # console/admin.py: rename, delete


def command(args: argparse.Namespace, session: dict[str, str]) -> int:
    if args.command == "sla":
        return sla_command(args, session)
    return store_command(args, session)
