"""Check policies on the relay: the document each device runs (nearest wins, organisation →
merchant → store → device, :func:`protocol.health_policy.merge_layers`), its store's hours, and
the relay's judgement of a firing alert against both (docs/alerts.md#business-hours).

The agent has no time-zone database (Windows 7), so the relay decides, in the store's zone:

- inside a maintenance window that covers the check, a firing event is **silenced**: recorded,
  audited, and changes no alert;
- outside the store's hours the check's ``outside_hours`` applies: ``page`` as usual,
  ``downgrade`` one severity step (critical → warning → info), or ``hold``: the alert opens,
  and its notifications wait until the store opens.

A recovery is never silenced or held.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from posassist.protocol.errors import PosAssistError
from posassist.protocol.health_policy import (
    HealthPolicy,
    PolicyError,
    default_policy,
    merge_layers,
    parse_policy,
)

from .batching import Batcher
from .errors import NotFound
from .hours import BusinessHours, is_open, next_open, parse_hours

if TYPE_CHECKING:
    from .alerts import AlertEvent
    from .storage.health import HealthStore, PolicyLayers

__all__ = ["DevicePolicy", "PolicyBook", "event_time", "judge"]

log = logging.getLogger("posassist.relay")

#: Seconds a device's resolved policy and store hours are kept before being read again (a change
#: made through another relay, or a store's hours edited, reaches judgement within this).
POLICY_TTL = 30.0
#: Devices whose resolved policy is kept in memory.
MAX_CACHED = 100_000
#: Distinct merged policies, and distinct store hours, kept to be shared between devices.
MAX_SHARED = 4096
_LOWER = {"critical": "warning", "warning": "info", "info": "info"}


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePolicy:
    """What one device runs: the merged document (its ``version`` the relay's), the parsed
    policy, and its store's hours (with the store's time zone)."""

    device_id: str
    version: int
    document: dict[str, Any]
    policy: HealthPolicy
    hours: BusinessHours
    read_at: float


@dataclass(frozen=True, slots=True)
class Judgement:
    """How a firing event is taken: ``handling`` None (as usual), ``silenced``, ``held``
    (notify at ``hold_until``) or ``downgraded`` (to ``severity``)."""

    handling: str | None
    severity: str
    hold_until: float | None = None
    reason: str = ""


#: How old a delivered event may say it is (an outbox that waited out a long outage) before its
#: own time is no longer believed; and it may never say it happened after it arrived.
MAX_EVENT_AGE = 30 * 86400.0
MAX_EVENT_AHEAD = 60.0


def event_time(event: AlertEvent) -> float:
    """When the event happened on the relay's clock: the agent's time corrected by the clock
    offset it measured (``details.clock_offset``, relay minus agent), else the receipt time; a
    time more than :data:`MAX_EVENT_AGE` before its receipt or after it (a till's wrong or
    hostile numbers: 1e300 crashed the judgement and the connection) is the receipt time."""
    offset = event.details.get("clock_offset")
    if type(offset) in (int, float) and abs(offset) < 10 * 365 * 86400:  # type: ignore[arg-type]
        when = event.observed_at + float(offset)  # type: ignore[arg-type]
        if -MAX_EVENT_AGE <= when - event.received_at <= MAX_EVENT_AHEAD:
            return when
    return event.received_at


def judge(device: DevicePolicy, event: AlertEvent) -> Judgement:
    """The relay's judgement of a firing ``event`` under the device's policy and hours."""
    if event.state != "firing":
        return Judgement(None, event.severity)
    when = event_time(event)
    zone = device.hours.zone
    local = dt.datetime.fromtimestamp(when, zone)
    window = device.policy.silencing_window(
        event.check_name, when, (local.weekday(), local.hour * 60 + local.minute)
    )
    if window is not None:
        return Judgement("silenced", event.severity, reason=window.reason or "maintenance window")
    if is_open(device.hours, when):
        return Judgement(None, event.severity)
    check = device.policy.checks.get(event.check_name)
    mode = check.outside_hours if check is not None else device.policy.outside_hours
    if mode == "downgrade":
        return Judgement("downgraded", _LOWER[event.severity], reason="outside business hours")
    if mode == "hold":
        opens = next_open(device.hours, max(when, event.received_at))
        return Judgement("held", event.severity, hold_until=opens, reason="outside business hours")
    return Judgement(None, event.severity)


def resolve(version: int, layers: list[dict[str, Any]]) -> tuple[dict[str, Any], HealthPolicy]:
    """The merged document (with the relay's ``version``) and its policy. A merge that the
    validator refuses (layers valid alone, too many windows together) falls back to the
    nearest layers that merge, dropping the farthest first, and is logged."""
    for start in range(len(layers) + 1):
        try:
            document = merge_layers(layers[start:])
        except PolicyError as exc:
            log.error("policy layers %d.. do not merge: %s", start, exc)
            continue
        document["version"] = version
        return document, parse_policy(document)
    return {"version": version}, default_policy()  # pragma: no cover - [] always merges


class PolicyBook:
    """Resolved policies per device, read through (one storage read) and kept for
    :data:`POLICY_TTL` seconds.

    Devices whose layers and store hours are the same share one merged document, parsed policy
    and parsed hours (most of a fleet runs its organisation's policy): a device costs the relay
    a small record, not a copy of its policy (benchmarks/bench_relay.py, idle sockets).
    """

    def __init__(self, health: HealthStore, *, ttl: float = POLICY_TTL):
        self.health = health
        self.ttl = ttl
        self._cache: dict[str, DevicePolicy] = {}
        self._documents: dict[str, tuple[dict[str, Any], HealthPolicy]] = {}
        self._hours: dict[tuple[str, str], BusinessHours] = {}
        # a storm of sign-ins reads its devices' layers together (relay/batching.py)
        self._reads: Batcher[str, PolicyLayers] = Batcher(health.policy_layers_many)

    async def for_device(self, device_id: str, now: float) -> DevicePolicy:
        cached = self._cache.get(device_id)
        if cached is not None and now - cached.read_at < self.ttl:
            return cached
        read = await self._reads.get(device_id)
        if read is None:
            raise NotFound(f"device {device_id!r}")
        document, policy = self._resolved(read.version, read.layers)
        resolved = DevicePolicy(
            device_id=device_id,
            version=read.version,
            document=document,
            policy=policy,
            hours=self._store_hours(read.store_id, read.timezone, read.hours),
            read_at=now,
        )
        if len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[device_id] = resolved
        return resolved

    def _resolved(
        self, version: int, layers: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], HealthPolicy]:
        key = json.dumps([version, layers], sort_keys=True, separators=(",", ":"))
        shared = self._documents.get(key)
        if shared is None:
            if len(self._documents) >= MAX_SHARED:
                self._documents.clear()  # a relay with that many distinct policies rebuilds
            shared = self._documents[key] = resolve(version, layers)
        return shared

    def _store_hours(self, store_id: str, timezone: str, stored: str) -> BusinessHours:
        hours = self._hours.get((timezone, stored))
        if hours is None:
            try:
                hours = parse_hours(json.loads(stored), timezone)
            except (PosAssistError, ValueError) as exc:  # a stored value the parser now refuses
                log.error("store %s hours unreadable, taken as always open: %s", store_id, exc)
                return BusinessHours()
            if len(self._hours) >= MAX_SHARED:
                self._hours.clear()
            self._hours[(timezone, stored)] = hours
        return hours

    def forget(self, device_ids: list[str] | None = None) -> None:
        """Read these devices' policies again next time (all of them with None)."""
        if device_ids is None:
            self._cache.clear()
        for device_id in device_ids or ():
            self._cache.pop(device_id, None)
