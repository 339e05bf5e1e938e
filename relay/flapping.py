"""Agents that keep replacing each other: two tills holding one device identity (a cloned disk
image), each connect closing the other with 4002 (docs/relay.md#flapping-agents).

Pure (``now`` is passed in). :class:`FlapDetector` counts replacements per device in fixed
windows; past ``threshold`` in one window the device is *flapping*: the first crossing in a
window is reported once (the relay audits ``agent.flapping`` with the addresses seen), and the
device stays flagged until a whole window passes without crossing the threshold again.
Memory is bounded: at most ``max_devices`` devices are tracked, the least recently replaced
forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["FlapDetector", "FlapReport"]

#: Distinct peer addresses kept per device and window (they go into the audit record).
MAX_ADDRESSES = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class FlapReport:
    """A device crossed the threshold in the window that began at ``since``."""

    device_id: str
    replacements: int
    since: float
    addresses: tuple[str, ...]

    @property
    def detail(self) -> dict[str, object]:
        return {
            "replacements": self.replacements,
            "since": self.since,
            "addresses": list(self.addresses),
        }


@dataclass(slots=True)
class _Device:
    started: float
    count: int = 0
    addresses: list[str] = field(default_factory=list)
    reported: bool = False
    #: Flagged as flapping until then (None: never flagged).
    flagged_until: float | None = None


class FlapDetector:
    """Replacements per device and ``window`` seconds; more than ``threshold`` is flapping."""

    __slots__ = ("_devices", "max_devices", "threshold", "window")

    def __init__(self, window: float, threshold: int, max_devices: int = 10_000) -> None:
        if not window > 0:
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, not {threshold!r}")
        if max_devices < 1:
            raise ValueError(f"max_devices must be at least 1, not {max_devices!r}")
        self.window = window
        self.threshold = threshold
        self.max_devices = max_devices
        self._devices: OrderedDict[str, _Device] = OrderedDict()

    def __len__(self) -> int:
        return len(self._devices)

    def replaced(
        self, device_id: str, old_address: str, new_address: str, now: float
    ) -> FlapReport | None:
        """A new connection of ``device_id`` (from ``new_address``) replaced the one from
        ``old_address``. A report the first time in a window that the count passes the
        threshold (audit it), else None."""
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _Device(started=now)
            while len(self._devices) > self.max_devices:
                self._devices.popitem(last=False)
        else:
            self._devices.move_to_end(device_id)
            if now >= device.started + self.window or now < device.started:
                device.started, device.count, device.reported = now, 0, False
                device.addresses.clear()
        device.count += 1
        for address in (old_address, new_address):
            if address not in device.addresses and len(device.addresses) < MAX_ADDRESSES:
                device.addresses.append(address)
        if device.count <= self.threshold:
            return None
        device.flagged_until = device.started + 2 * self.window
        if device.reported:
            return None
        device.reported = True
        return FlapReport(
            device_id=device_id,
            replacements=device.count,
            since=device.started,
            addresses=tuple(device.addresses),
        )

    def is_flapping(self, device_id: str, now: float) -> bool:
        """Whether ``device_id`` passed the threshold in this window or the one before."""
        device = self._devices.get(device_id)
        return (
            device is not None and device.flagged_until is not None and now < device.flagged_until
        )

    def flapping(self, now: float) -> int:
        """How many devices are flapping now (for ``/metrics``). O(n) over tracked devices."""
        return sum(
            1
            for d in self._devices.values()
            if d.flagged_until is not None and now < d.flagged_until
        )
