"""``posassist alerts``: the health alerts in the technician's scope, and ``alerts ack ID``.

Times are shown in the store's time zone when the relay says which (``store_timezone``), else
in this computer's, and labelled: "relay" times are when the relay received the event, "till"
times the till's own clock (which may be off: docs/alerts.md#times).
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from posassist.client import http
from posassist.client.render import when
from posassist.protocol.errors import BadArgument
from posassist.protocol.text import printable

from .api import Names, pick_node
from .render import named_zone, printable_data

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping

__all__ = ["add_parser", "run"]

STATUS = {
    "open": "OPEN 未处理",
    "acknowledged": "ACKED 已受理",
    "resolved": "RESOLVED 已恢复",
}
SEVERITY = {"critical": "严重 critical", "warning": "警告 warning", "info": "提示 info"}


def add_parser(commands: Any) -> None:
    """``alerts [--store S] [--open] [--json]`` and ``alerts ack ID`` on the console's parser."""
    a = commands.add_parser("alerts", help="health alerts in your scope (and `alerts ack ID`)")
    a.add_argument("--store", help="only this store's alerts (its name or id)")
    a.add_argument("--open", action="store_true", help="only alerts not yet resolved")
    a.add_argument("--json", action="store_true", help="the relay's JSON, made printable")
    a_commands = a.add_subparsers(dest="alerts_command")
    ack = a_commands.add_parser("ack", help="say you are on an alert (acknowledge it)")
    ack.add_argument("alert_id")


def _check_id(value: str, what: str) -> str:
    if not value or len(value) > 40 or not all(c.isalnum() or c in "_-" for c in value):
        raise BadArgument(f"{what} must be an id such as {what[:3]}_…, as listed")
    return value


def render_alert(
    alert: dict[str, Any], now: float, tills: Mapping[str, str] | None = None
) -> list[str]:
    """One alert as lines for a terminal (its text made printable); ``tills`` names devices
    (``Main St / till-1``, :func:`till_names`): the till by name, its id second."""
    tz = named_zone(alert.get("store_timezone"))
    status = STATUS.get(str(alert.get("status")), str(alert.get("status")))
    severity = SEVERITY.get(str(alert.get("severity")), str(alert.get("severity")))
    device = alert.get("device_id")
    label = (tills or {}).get(str(device))
    where = (
        f"{label} ({device})"
        if label
        else f"device {device}  store {alert.get('store_id')}"  # a till we can't name
    )
    head = f"{alert.get('id')}  {status}  {severity}  {alert.get('check')}  {where}"
    lines = [head, f"  {alert.get('summary', '')}"]
    lines.append(
        f"  opened (relay) {when(alert.get('opened_at'), tz, now)}; "
        f"last change {when(alert.get('updated_at'), tz, now)}; "
        f"{alert.get('events')} event(s), reopened {alert.get('reopened')}x / 事件 "
        f"{alert.get('events')} 次"
    )
    lines.append(
        f"  till clock: first seen {when(alert.get('agent_first_observed_at'), tz)}, "
        f"last {when(alert.get('agent_last_observed_at'), tz)} / 收银机时钟"
    )
    if alert.get("resolved_at") is not None:
        lines.append(f"  resolved (relay) {when(alert.get('resolved_at'), tz, now)} / 已恢复")
    if alert.get("acknowledged_by"):
        lines.append(
            f"  acknowledged by {alert.get('acknowledged_by')} "
            f"{when(alert.get('acknowledged_at'), tz, now)} / 已受理"
        )
    if alert.get("escalated_at") is not None:
        lines.append(
            f"  ESCALATED {when(alert.get('escalated_at'), tz, now)}: remediation did not fix it "
            "/ 自动修复无效, 已升级"
        )
    details = alert.get("details")
    relay = details.get("relay") if isinstance(details, dict) else None
    held = alert.get("held_until")
    if isinstance(held, (int, float)) and alert.get("status") != "resolved" and held > now:
        lines.append(
            f"  HELD: outside store hours, notified when the store opens {when(held, tz, now)} "
            "/ 非营业时间, 开店时通知"
        )
    if isinstance(relay, dict) and relay.get("downgraded_from"):
        lines.append(
            f"  downgraded from {relay.get('downgraded_from')} outside store hours "
            "/ 非营业时间, 已降级"
        )
    if alert.get("ticket_id"):
        lines.append(f"  ticket {alert.get('ticket_id')} / 工单")
    return [printable(line, multiline=False) for line in lines]


def till_names(session: dict[str, str]) -> dict[str, str]:
    """Device id → ``store name / host name`` (client/render.py ``device_label``) for the tills
    in the caller's scope; {} from a relay that can't list them (readme-walk 15 M4)."""
    names = Names(session)
    try:
        return {
            str(row.get("id")): names.device_label(row.get("id")) for row in names.rows("device")
        }
    except http.HttpStatusError:
        return {}


def run(
    args: argparse.Namespace,
    session: dict[str, str],
    call: Callable[..., Any],
) -> int:
    """The ``alerts`` command, over the relay's API with the saved session."""
    base = http.http_url(session["relay"]) + "/v1/alerts"
    token, pin = session["token"], session.get("tls_pin")
    if args.alerts_command == "ack":
        alert_id = _check_id(args.alert_id, "alert")
        try:
            answer = call(f"{base}/{alert_id}/ack", {}, token=token, pin=pin)
        except http.HttpStatusError as exc:
            if exc.status != 409:
                raise
            # acknowledged already, or resolved: say by whom and when, in the store's zone
            alert = call(f"{base}/{alert_id}", token=token, pin=pin)
            tz = named_zone(alert.get("store_timezone"))
            if alert.get("status") == "resolved":
                said = f"{alert_id} is resolved already / 已恢复, 无需受理"
            else:
                said = (
                    f"{alert_id} was acknowledged already by {alert.get('acknowledged_by')} "
                    f"{when(alert.get('acknowledged_at'), tz, time.time())} / 已由 "
                    f"{alert.get('acknowledged_by')} 受理"
                )
            print(printable(said, multiline=False), file=sys.stderr)
            return 1
        print(printable(f"acknowledged {answer.get('id')} / 已受理", multiline=False))
        return 0
    query: dict[str, str] = {}
    if args.store:
        query["store"] = str(pick_node(session, "store", args.store)["id"])
    if args.open:
        query["open"] = "1"
    url = base + ("?" + urlencode(query) if query else "")
    alerts = call(url, token=token, pin=pin)["alerts"]
    if args.json:
        print(json.dumps(printable_data(alerts), ensure_ascii=False, indent=2))
        return 0
    if not alerts:
        print("no alerts / 没有告警")
        return 0
    now = time.time()
    tills = till_names(session)
    for alert in alerts:
        print("\n".join(render_alert(alert, now, tills)))
    return 0
