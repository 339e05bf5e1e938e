"""Rows of the relay's database as frozen dataclasses, and the enums their columns take.

Times are epoch seconds as floats, always passed in by the caller (``now``); nothing here reads a
clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ChainHead",
    "Device",
    "DeviceStatus",
    "EnrolmentToken",
    "Job",
    "JobStatus",
    "Merchant",
    "Organisation",
    "RetailStore",
    "Role",
    "Scope",
    "ScopeKind",
    "TenantPath",
    "User",
]


class ScopeKind(enum.StrEnum):
    """Levels of the tenancy tree; ``ROOT`` is the whole relay (operators)."""

    ROOT = "root"
    ORGANISATION = "organisation"
    MERCHANT = "merchant"
    STORE = "store"
    DEVICE = "device"


class Role(enum.StrEnum):
    ADMIN = "admin"
    TECHNICIAN = "technician"
    VIEWER = "viewer"
    MERCHANT = "merchant"


class DeviceStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    #: moved to another provider's relay by the agent itself (``device.handover``)
    HANDED_OVER = "handed_over"


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    #: The relay lost track of a script that may have run (its route expired, or the agent left
    #: with the request in flight); reconciled when the agent reports (docs/protocol.md#requests).
    UNKNOWN = "unknown"
    #: A technician stopped the run (``script.cancel``, docs/protocol.md#cancel); migration 0008.
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class Scope:
    """A node of the tenancy tree: ``Scope(ScopeKind.STORE, "sto_…")``, or ``Scope.root()``."""

    kind: ScopeKind
    id: str | None = None

    def __post_init__(self) -> None:
        if (self.kind is ScopeKind.ROOT) != (self.id is None):
            raise ValueError("a root scope has no id; every other scope has one")

    @classmethod
    def root(cls) -> Scope:
        return cls(ScopeKind.ROOT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Organisation:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Merchant:
    id: str
    organisation_id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RetailStore:
    """A shop or till location (the ``stores`` table); named so as not to clash with storage."""

    id: str
    merchant_id: str
    name: str
    created_at: float
    #: IANA zone the store's clocks, SLA and times shown to people use.
    timezone: str = "Asia/Shanghai"
    #: Opening hours in the JSON form of :mod:`posassist.relay.hours` (``{}``: always open).
    hours: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantPath:
    """Where a device sits in the tenancy tree."""

    organisation_id: str
    merchant_id: str
    store_id: str
    device_id: str

    def within(self, scope: Scope) -> bool:
        """Whether ``scope`` covers this device."""
        match scope.kind:
            case ScopeKind.ROOT:
                return True
            case ScopeKind.ORGANISATION:
                return scope.id == self.organisation_id
            case ScopeKind.MERCHANT:
                return scope.id == self.merchant_id
            case ScopeKind.STORE:
                return scope.id == self.store_id
            case ScopeKind.DEVICE:
                return scope.id == self.device_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    id: str
    store_id: str
    public_key: bytes
    status: DeviceStatus
    enrolled_at: float
    revoked_at: float | None = None
    last_seen: float | None = None
    handed_over_at: float | None = None
    agent_version: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    id: str
    username: str
    password_hash: str
    role: Role
    scope: Scope
    failed_logins: int
    locked_until: float | None
    created_at: float

    def is_locked(self, now: float) -> bool:
        return self.locked_until is not None and now < self.locked_until


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolmentToken:
    """An enrolment token's record; the secret itself is never stored, only its SHA-256."""

    id: str
    store_id: str
    relay_id: str
    created_at: float
    expires_at: float
    used_at: float | None = None
    used_by_device: str | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: str
    device_id: str
    kind: str
    status: JobStatus
    requested_by: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    #: the script a ``script.run`` job ran, and its version (None for other kinds, older jobs)
    script: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainHead:
    """The audit chain's last ``seq`` and ``hash`` (seq 0 and 32 zero bytes when empty)."""

    seq: int
    hash: bytes
