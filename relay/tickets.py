"""Tickets: support codes, the states and who may move a ticket between them, SLA due times.

Pure (no I/O): relay/storage/tickets.py keeps tickets, relay/handlers/tickets.py serves the
agent's ``help.requested`` / ``ticket.query`` / ``ticket.rate`` and the technicians' API.
docs/protocol.md#help-and-tickets and docs/relay.md#tickets say the same in prose.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from posassist.protocol.messages import TICKET_STATUSES

from .errors import BadRequest
from .hours import BusinessHours, add_business_seconds, business_seconds, local_iso

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CODE_ALPHABET",
    "OPEN_STATES",
    "STATE_WORDS",
    "TRANSITIONS",
    "BadSla",
    "BadTicketField",
    "BadTicketQuery",
    "BadTicketText",
    "ReportTooLarge",
    "Sla",
    "due_times",
    "new_support_code",
    "normalise_code",
    "resume_clock",
]


class BadTicketText(BadRequest):
    """A note, description, comment or contact a ticket can't keep as it is; nothing stored."""

    public_reason = (
        "text: 1-2000 characters (a contact 32), newlines allowed, no control characters "
        "or bidi marks"
    )
    public_reason_zh = "内容须为 1-2000 字 (联系方式最多 32 字), 不能包含控制字符"


class BadTicketField(BadRequest):
    """A ticket field that is not one of the values it takes; nothing stored."""

    public_reason = (
        "store_id, device_id (a till of that store), category (printer, scanner, …), "
        "language (zh-CN, en) or state is wrong"
    )
    public_reason_zh = "工单字段无效: 门店、设备、类别 (printer 等) 或语言 (zh-CN|en) 有误"


class BadTicketQuery(BadRequest):
    """A listing or report asked for with a filter it does not take."""

    public_reason = (
        "state (new, accepted, … reopened), breached (1 or 0), since (like 2026-12-01) "
        "or format (json, html) is wrong"
    )
    public_reason_zh = (
        "查询条件无效: 状态、breached (1 或 0)、since (如 2026-12-01) 或格式 (json|html) 有误"
    )


class BadSla(BadRequest):
    """An SLA target out of range; the merchant's SLA is unchanged."""

    public_reason = "response_seconds and resolve_seconds are each null or 60 s to 90 days"
    public_reason_zh = "SLA 时限须为空或 60 秒至 90 天"


class ReportTooLarge(BadRequest):
    """More tickets than one report may hold: refused rather than cut short (it claims to be
    complete)."""

    public_reason = (
        "more tickets than one report holds: ask for a later since date (several reports "
        "cover the whole history)"
    )
    public_reason_zh = "工单过多, 无法生成完整报告: 请指定较晚的起始日期"


#: Letters and digits nobody confuses when reading them out on the phone: no 0/O, 1/I/L.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
#: 8 characters of 31: about 40 bits, shown as two groups of four (``K7Q2-XM9P``). Guessing
#: one among even a million open tickets takes ~850 000 tries; lookups that miss are limited to
#: a handful a minute per user (relay/handlers/tickets.py) and each is audited.
CODE_LENGTH = 8
_CODE_INPUT = re.compile(r"[ \-]")

#: State → the states a technician (or the merchant's rating) may move it to.
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"accepted"}),
    "reopened": frozenset({"accepted"}),
    "accepted": frozenset({"in_progress", "waiting_merchant", "resolved"}),
    "in_progress": frozenset({"waiting_merchant", "resolved"}),
    "waiting_merchant": frozenset({"in_progress", "resolved"}),
    "resolved": frozenset({"closed", "reopened"}),
    "closed": frozenset({"reopened"}),
}
assert set(TRANSITIONS) == set(TICKET_STATUSES)
#: States in which a ticket is still being worked on (its SLA clocks run).
OPEN_STATES = frozenset({"new", "accepted", "in_progress", "waiting_merchant", "reopened"})

#: What the merchant's window says for each state: (Chinese, English).
STATE_WORDS: dict[str, tuple[str, str]] = {
    "new": (
        "已收到您的求助，正在等待技术员接单",
        "We have your request; a technician will take it",
    ),
    "accepted": ("技术员 {tech} 已接单", "{tech} has taken your ticket"),
    "in_progress": ("技术员 {tech} 正在处理", "{tech} is working on it"),
    "waiting_merchant": ("技术员 {tech} 需要您的回复", "{tech} needs an answer from you"),
    "resolved": ("问题已解决，请为本次服务评分", "Resolved: please rate the service"),
    "closed": ("工单已关闭，感谢您的评价", "Closed: thank you"),
    "reopened": ("工单已重新打开，正在等待技术员接单", "Reopened: a technician will take it"),
}


def new_support_code() -> str:
    """A fresh random support code, ``XXXX-XXXX`` over :data:`CODE_ALPHABET`."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalise_code(text: str) -> str | None:
    """What a caller typed (any case, with or without the dash or spaces) as a stored code, or
    None when it can't be one: the caller gets the same answer as for an unknown code."""
    if len(text) > 32:
        return None
    raw = _CODE_INPUT.sub("", text).upper()
    if len(raw) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in raw):
        return None
    return f"{raw[:4]}-{raw[4:]}"


@dataclass(frozen=True, slots=True)
class Sla:
    """A merchant's targets, in seconds of the store's business hours (None: no target)."""

    response_seconds: float | None = None
    resolve_seconds: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {
            "response_seconds": self.response_seconds,
            "resolve_seconds": self.resolve_seconds,
        }


def due_times(sla: Sla, hours: BusinessHours, start: float) -> tuple[float | None, float | None]:
    """(response due, resolution due) for a clock started at ``start``: each target counted in
    the store's open seconds from then on. Computed once, when the clock starts (a ticket opened
    or reopened), and kept as instants: a later change of the store's hours or zone applies to
    tickets opened after it, and a relay restart changes nothing."""

    def due(seconds: float | None) -> float | None:
        if seconds is None:
            return None
        at = add_business_seconds(hours, start, seconds)
        return None if at == float("inf") else at

    return due(sla.response_seconds), due(sla.resolve_seconds)


def resume_clock(
    hours: BusinessHours, paused_at: float, resolve_due: float | None, now: float
) -> tuple[float | None, float]:
    """The resolution clock stopped at ``paused_at`` (the ticket waited for the merchant) starts
    again at ``now``: (the new resolution due time, the store's open seconds it was stopped).

    What was left of the target when it stopped is counted again from ``now`` in the store's
    hours; a target already missed when it stopped stays missed (its due time is kept)."""
    stopped = business_seconds(hours, paused_at, now)
    if resolve_due is None or resolve_due <= paused_at:
        return resolve_due, stopped
    left = business_seconds(hours, paused_at, resolve_due)
    due = add_business_seconds(hours, max(now, paused_at), left)
    return (None if due == float("inf") else due), stopped


def business_elapsed(hours: BusinessHours, start: float, end: float | None) -> float | None:
    """Open seconds from ``start`` to ``end`` (None when ``end`` is None)."""
    return None if end is None else business_seconds(hours, start, end)


def local_times(hours: BusinessHours, times: Mapping[str, float | None]) -> dict[str, str | None]:
    """Each instant as the store's wall clock (``2026-12-05T12:30+08:00``), None kept."""
    return {k: None if v is None else local_iso(hours, v) for k, v in times.items()}
