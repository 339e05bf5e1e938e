"""A store's time zone and opening hours, and clocks that count only while it is open.

Pure (no I/O beyond the system's time-zone database): the SLA of a ticket and the holding of an
alert outside hours both ask these questions, so there is one answer.

The JSON form a store keeps (``stores.hours``) and the API takes::

    {"weekly": {"mon": [["09:00", "21:00"]], "tue": [["09:00", "12:00"], ["13:00", "21:00"]], ...},
     "closed": ["2026-12-25"]}

``{}`` (the default) is open every day around the clock. When ``weekly`` is given, a day it does
not name is closed. An interval ends after it starts, on the same day (``"24:00"`` is midnight at
the end); a store open past midnight gives two intervals, one on each day. Times are wall-clock
times in the store's time zone, so a change of zone or of summer time moves them with the shop.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from posassist.relay.errors import BadRequest

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DAYS",
    "DEFAULT_TIMEZONE",
    "BadDayHours",
    "BadHours",
    "BusinessHours",
    "add_business_seconds",
    "business_seconds",
    "is_open",
    "local_iso",
    "next_open",
    "parse_hours",
    "parse_timezone",
]

DEFAULT_TIMEZONE = "Asia/Shanghai"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_INTERVALS_PER_DAY = 8
MAX_CLOSED_DATES = 400
#: How far the clocks look ahead or back; an SLA is hours or days, never years.
HORIZON_DAYS = 3 * 366

_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}")
_CLOCK = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])")
_ALL_DAY = ((0, 24 * 60),)


class BadTimezone(BadRequest):
    """A time zone this machine does not know; nothing changed. (The exception's own text names
    the value, for the log; the answer is this fixed sentence: no input echoed.)"""

    public_reason = "timezone must be an IANA zone name such as Asia/Shanghai"
    public_reason_zh = "时区无效: 请使用 IANA 时区名, 例如 Asia/Shanghai"


class BadHours(BadRequest):
    """Opening hours that can't be read; nothing changed (docs/relay.md#store-hours)."""

    public_reason = (
        'hours: {"weekly": {"mon": [["09:00", "21:00"]]}, "closed": ["2026-12-25"]}; '
        "each interval ending after it starts"
    )
    public_reason_zh = (
        '营业时间无效: 格式如 {"weekly": {"mon": [["09:00", "21:00"]]}, "closed": ["2026-12-25"]}'
    )


class BadDayHours(BadHours):
    """Opening hours from the web console's per-day form that can't be read; nothing changed.
    The same checks as :class:`BadHours`, said as the form asks them."""

    public_reason = (
        "opening hours: each open day opens before it closes (past midnight: close at 00:00),"
        " dates like 2026-12-25"
    )
    public_reason_zh = "营业时间无效: 每天须先开门后关门 (跨午夜请在 00:00 关门), 日期如 2026-12-25"


@dataclass(frozen=True)
class BusinessHours:
    """When a store is open: wall-clock minutes per weekday (Monday first) in ``timezone``."""

    timezone: str = DEFAULT_TIMEZONE
    weekly: tuple[tuple[tuple[int, int], ...], ...] = (_ALL_DAY,) * 7
    closed: frozenset[dt.date] = field(default_factory=frozenset)
    #: True when ``{}`` was given: open around the clock, shown as such.
    always: bool = True

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (without the zone, which the store keeps in its own column)."""
        if self.always and not self.closed:
            return {}
        out: dict[str, Any] = {
            "weekly": {
                day: [[_clock(a), _clock(b)] for a, b in spans]
                for day, spans in zip(DAYS, self.weekly, strict=True)
                if spans
            }
        }
        if self.closed:
            out["closed"] = sorted(d.isoformat() for d in self.closed)
        return out


#: Names the zone database answers to that are not a place: ``localtime`` is whatever zone the
#: relay's own machine is set to (a store's clock would move with the server's settings).
_NOT_A_PLACE = frozenset({"localtime", "posixrules", "Factory"})


def parse_timezone(name: object) -> str:
    """An IANA zone name this machine knows, or :class:`BadRequest` saying what is wrong."""
    if not isinstance(name, str) or not _ZONE_NAME.fullmatch(name) or len(name) > 64:
        raise BadTimezone("timezone must be an IANA name such as Asia/Shanghai")
    if name in _NOT_A_PLACE:  # files of the zone database that name no place's clock
        raise BadTimezone(f"{name!r} is not a place's timezone (expected e.g. Asia/Shanghai)")
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadTimezone(f"unknown timezone {name!r} (expected e.g. Asia/Shanghai)") from None
    return name


def parse_hours(obj: object, timezone: str = DEFAULT_TIMEZONE) -> BusinessHours:
    """Check and read the JSON form; :class:`BadRequest` names the first thing wrong."""
    timezone = parse_timezone(timezone)
    if not isinstance(obj, dict):
        raise BadHours('hours must be an object like {"weekly": {"mon": [["09:00", "21:00"]]}}')
    unknown = set(obj) - {"weekly", "closed"}
    if unknown:
        raise BadHours(f"hours: unknown field {sorted(unknown)[0]!r} (expected weekly, closed)")
    closed = _parse_closed(obj.get("closed", []))
    if "weekly" not in obj:
        return BusinessHours(timezone=timezone, closed=closed, always=True)
    weekly_obj = obj["weekly"]
    if not isinstance(weekly_obj, dict):
        raise BadHours("hours.weekly must be an object keyed by mon, tue, … sun")
    bad_days = set(weekly_obj) - set(DAYS)
    if bad_days:
        raise BadHours(f"hours.weekly: unknown day {sorted(bad_days)[0]!r} (use mon … sun)")
    weekly = tuple(_parse_day(day, weekly_obj.get(day, [])) for day in DAYS)
    if not any(weekly):
        raise BadHours("hours.weekly: the store must be open at least once a week")
    return BusinessHours(timezone=timezone, weekly=weekly, closed=closed, always=False)


def is_open(hours: BusinessHours, when: float) -> bool:
    """Whether the store is open at the epoch ``when``."""
    local = dt.datetime.fromtimestamp(when, hours.zone)
    if local.date() in hours.closed:
        return False
    minute = local.hour * 60 + local.minute
    return any(a <= minute < b for a, b in hours.weekly[local.weekday()])


def business_seconds(hours: BusinessHours, start: float, end: float) -> float:
    """Seconds the store was open between two epochs (0 when ``end`` is not after ``start``)."""
    if end <= start:
        return 0.0
    total = 0.0
    for a, b in _open_spans(hours, start):
        if a >= end:
            break
        total += max(0.0, min(b, end) - max(a, start))
    return total


def add_business_seconds(hours: BusinessHours, start: float, seconds: float) -> float:
    """The epoch when the store will have been open ``seconds`` since ``start``.

    ``math.inf`` when that lies beyond the horizon (a store that has closed for years).
    """
    remaining = max(0.0, seconds)
    for a, b in _open_spans(hours, start):
        a = max(a, start)
        if b <= a:
            continue
        if remaining <= b - a:
            return a + remaining
        remaining -= b - a
    return math.inf


def next_open(hours: BusinessHours, when: float) -> float:
    """``when`` if the store is open then, else when it next opens (``math.inf`` if never)."""
    for a, b in _open_spans(hours, when):
        if b > when:
            return max(a, when)
    return math.inf


def local_iso(hours: BusinessHours, when: float) -> str:
    """``when`` as the store's wall clock, with its UTC offset: ``2026-12-05T12:30+08:00``."""
    return dt.datetime.fromtimestamp(when, hours.zone).isoformat(timespec="minutes")


# -- internals ------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _parse_clock(text: object, where: str) -> int:
    match = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise BadHours(f"{where}: {text!r} is not a time like 09:00")
    minute = int(match.group(1)) * 60 + int(match.group(2))
    if minute > 24 * 60:
        raise BadHours(f"{where}: {text!r} is after 24:00")
    return minute


def _parse_day(day: str, spans: object) -> tuple[tuple[int, int], ...]:
    where = f"hours.weekly.{day}"
    if not isinstance(spans, list) or len(spans) > MAX_INTERVALS_PER_DAY:
        raise BadHours(f"{where} must be a list of at most {MAX_INTERVALS_PER_DAY} [open, close]")
    out: list[tuple[int, int]] = []
    for span in spans:
        if not isinstance(span, list) or len(span) != 2:
            raise BadHours(f'{where}: each interval is [open, close], e.g. ["09:00", "21:00"]')
        a, b = _parse_clock(span[0], where), _parse_clock(span[1], where)
        if b <= a:
            raise BadHours(
                f"{where}: {span[0]}-{span[1]} ends before it starts; a store open past midnight "
                'gives two intervals, [..., "24:00"] and the next day\'s ["00:00", ...]'
            )
        out.append((a, b))
    out.sort()
    for (_, end), (start, _) in itertools.pairwise(out):
        if start < end:
            raise BadHours(f"{where}: intervals overlap")
    return tuple(out)


def _parse_closed(obj: object) -> frozenset[dt.date]:
    if not isinstance(obj, list) or len(obj) > MAX_CLOSED_DATES:
        raise BadHours(f"hours.closed must be a list of at most {MAX_CLOSED_DATES} dates")
    dates = set()
    for item in obj:
        try:
            if not isinstance(item, str) or len(item) != 10:
                raise ValueError
            dates.add(dt.date.fromisoformat(item))
        except ValueError:
            raise BadHours(f"hours.closed: {item!r} is not a date like 2026-12-25") from None
    return frozenset(dates)


def _open_spans(hours: BusinessHours, start: float) -> Iterator[tuple[float, float]]:
    """Opening intervals as epoch pairs, in order, from the local day of ``start`` on."""
    zone = hours.zone
    day = dt.datetime.fromtimestamp(start, zone).date()
    for _ in range(HORIZON_DAYS):
        if day not in hours.closed:
            for a, b in hours.weekly[day.weekday()]:
                yield _epoch(day, a, zone), _epoch(day, b, zone)
        day += dt.timedelta(days=1)


def _epoch(day: dt.date, minute: int, zone: ZoneInfo) -> float:
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    if minute == 24 * 60:
        following = day + dt.timedelta(days=1)
        return dt.datetime(following.year, following.month, following.day, tzinfo=zone).timestamp()
    return (midnight + dt.timedelta(minutes=minute)).timestamp()
