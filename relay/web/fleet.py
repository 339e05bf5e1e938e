"""The fleet as the web console shows it: devices grouped by merchant and store, each with its
online state, last seen (in the store's time zone), agent version and a one-word health.

Pure: the page handler gathers devices, stores, open alerts and who is online; this groups,
filters and words them (tested and benchmarked without a relay).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from posassist.client.units import span

from ..storage import DeviceStatus

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

    from ..alerts import Alert
    from ..storage import Device, RetailStore

__all__ = ["SHOWS", "DeviceRow", "StoreGroup", "group_fleet", "health_word", "human_time", "zone"]

#: The fleet filter's choices.
SHOWS = ("all", "online", "offline", "problems")
#: Open alert severity → the one-word health; the worst open alert decides.
_RANK = {"info": 1, "warning": 2, "critical": 3}
_ZH_UNITS = (("days", "天"), ("min", "分钟"), (" s", " 秒"), (" h", " 小时"))


def zone(name: str) -> ZoneInfo:
    """The store's zone; UTC if the name is unknown to this machine (shown, never a 500)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def human_time(epoch: float | None, tz: ZoneInfo, now: float, lang: str) -> str:
    """``2026-12-06 11:23 (3 min ago)`` in ``tz``; ``3 分钟前`` in Chinese; empty for None."""
    if epoch is None:
        return ""
    try:
        moment = datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "?"
    length = span(now - epoch)
    if lang == "en":
        relative = f"{length} ago" if epoch <= now else f"in {length}"
    else:
        for en, zh in _ZH_UNITS:
            length = length.replace(en, zh)
        relative = f"{length}前" if epoch <= now else f"{length}后"
    return f"{moment} ({relative})"


def health_word(alerts: Iterable[Alert]) -> str:
    """``ok`` with no open alert, else the worst open alert's severity."""
    worst = "ok"
    for alert in alerts:
        if alert.is_open and _RANK.get(alert.severity, 0) > _RANK.get(worst, 0):
            worst = alert.severity if alert.severity in _RANK else worst
    return worst


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    host: str
    state: str  # online, offline, revoked, handed_over
    flapping: bool
    last_seen: str
    version: str
    health: str
    pos: str
    #: when its agent moved it to another provider (docs/protocol.md#changing-provider), or ""
    handed_over: str = ""


@dataclass(slots=True)
class StoreGroup:
    merchant: str
    store: str
    store_id: str
    timezone: str
    devices: list[DeviceRow] = field(default_factory=list)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def group_fleet(
    devices: Iterable[Device],
    places: Iterable[tuple[RetailStore, str]],
    alerts: Mapping[str, list[Alert]],
    online: Collection[str],
    flapping: Collection[str],
    *,
    now: float,
    lang: str,
    query: str = "",
    show: str = "all",
) -> list[StoreGroup]:
    """Devices under their store under their merchant (both by name), filtered by ``query``
    (any of merchant, store, host, device id, case-insensitive) and ``show`` (SHOWS); stores
    left without a device are left out."""
    needle = query.casefold().strip()
    groups: dict[str, StoreGroup] = {}
    for store, merchant in places:
        groups[store.id] = StoreGroup(merchant, store.name, store.id, store.timezone)
    zones: dict[str, ZoneInfo] = {}
    for device in devices:
        group = groups.get(device.store_id)
        if group is None:
            continue
        host = _text(device.facts.get("hostname"))
        if needle and not any(
            needle in text.casefold() for text in (group.merchant, group.store, host, device.id)
        ):
            continue
        if device.status is DeviceStatus.REVOKED:
            state = "revoked"
        elif device.status is DeviceStatus.HANDED_OVER:
            state = "handed_over"
        else:
            state = "online" if device.id in online else "offline"
        health = health_word(alerts.get(device.id, ()))
        wanted = {
            "all": True,
            "online": state == "online",
            "offline": state == "offline",
            "problems": health in ("warning", "critical") or device.id in flapping,
        }
        if not wanted.get(show, True):
            continue
        tz = zones.get(group.timezone) or zones.setdefault(group.timezone, zone(group.timezone))
        group.devices.append(
            DeviceRow(
                id=device.id,
                host=host,
                state=state,
                flapping=device.id in flapping,
                last_seen=human_time(device.last_seen, tz, now, lang),
                version=_text(device.agent_version) or _text(device.facts.get("agent_version")),
                health=health,
                pos=_text(device.facts.get("pos_name")) or _text(device.facts.get("pos_profile")),
                handed_over=human_time(device.handed_over_at, tz, now, lang),
            )
        )
    for group in groups.values():
        group.devices.sort(key=lambda row: (row.host.casefold(), row.id))
    return [g for g in groups.values() if g.devices]
