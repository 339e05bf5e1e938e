"""The small interfaces routing and handlers program against; they never see SQL.

:class:`relay.storage.sql.SqlStorage` implements all of them on SQLite and PostgreSQL. Every
method raises only :mod:`relay.errors` exceptions (``NotFound``, ``Conflict``,
``StorageUnavailable``, … and the token/enrolment refusals named in its docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Mapping, Sequence

    from posassist.relay.audit import AuditEntry, AuditRecord, Outcome
    from posassist.relay.storage.models import (
        ChainHead,
        Device,
        EnrolmentToken,
        Job,
        JobStatus,
        Merchant,
        Organisation,
        RetailStore,
        Role,
        Scope,
        TenantPath,
        User,
    )

__all__ = [
    "AuditLog",
    "DeviceStore",
    "EnrolmentStore",
    "JobStore",
    "TenancyStore",
    "TokenStore",
    "UserStore",
]


class TenancyStore(Protocol):
    """Organisations → merchants → stores; devices hang off stores (see :class:`DeviceStore`)."""

    async def create_organisation(self, name: str, *, now: float) -> Organisation: ...
    async def create_merchant(self, organisation_id: str, name: str, *, now: float) -> Merchant: ...
    async def create_store(self, merchant_id: str, name: str, *, now: float) -> RetailStore: ...
    async def get_store(self, store_id: str) -> RetailStore: ...
    async def update_store(
        self,
        store_id: str,
        *,
        now: float,
        timezone: str | None = None,
        hours: Mapping[str, Any] | None = None,
    ) -> RetailStore: ...
    async def scope_exists(self, scope: Scope) -> bool: ...
    async def device_path(self, device_id: str) -> TenantPath: ...
    async def device_in_scope(self, device_id: str, scope: Scope) -> bool: ...
    async def scope_ancestors(self, scope: Scope) -> list[Scope]: ...


class DeviceStore(Protocol):
    async def get_device(self, device_id: str) -> Device: ...
    async def get_devices(self, device_ids: Sequence[str]) -> dict[str, Device]: ...
    async def find_device_by_key(self, public_key: bytes) -> Device | None: ...
    async def list_devices(self, scope: Scope) -> list[Device]: ...
    async def revoke_device(self, device_id: str, *, now: float) -> Device: ...
    async def hand_over_device(self, device_id: str, *, now: float) -> Device: ...
    async def record_presences(
        self, seen: Mapping[str, tuple[float, str | None, Mapping[str, Any] | None]]
    ) -> None: ...
    async def record_presence(
        self,
        device_id: str,
        *,
        now: float,
        agent_version: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> None: ...


class UserStore(Protocol):
    async def create_user(
        self, username: str, password_hash: str, role: Role, scope: Scope, *, now: float
    ) -> User: ...
    async def get_user(self, username: str) -> User: ...
    async def get_user_by_id(self, user_id: str) -> User: ...
    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...
    async def record_login_failure(
        self, user_id: str, *, now: float, max_failures: int, lockout_timeout: float
    ) -> User: ...
    async def record_login_success(self, user_id: str) -> None: ...


class TokenStore(Protocol):
    """Bearer tokens; only their SHA-256 is stored."""

    async def issue_token(self, user_id: str, *, now: float, ttl: float) -> str: ...
    async def authenticate_token(self, token: str, *, now: float) -> User: ...
    async def authenticate_token_until(self, token: str, *, now: float) -> tuple[User, float]: ...
    async def revoke_token(self, token: str, *, now: float) -> None: ...
    async def revoke_user_tokens(
        self, user_id: str, *, now: float, keep: str | None = None
    ) -> int: ...
    async def revoked_tokens(self, token_hashes: Collection[bytes]) -> dict[bytes, str]: ...


class EnrolmentStore(Protocol):
    """One-time, expiring, store-scoped enrolment tokens; only their SHA-256 is stored."""

    async def create_enrolment(
        self, store_id: str, relay_id: str, *, now: float, ttl: float
    ) -> tuple[EnrolmentToken, str]: ...
    async def revoke_enrolment(self, enrolment_id: str, *, now: float) -> EnrolmentToken: ...
    async def consume_enrolment(
        self,
        secret: str,
        *,
        relay_id: str,
        public_key: bytes,
        now: float,
        agent_version: str | None = None,
    ) -> Device: ...


class JobStore(Protocol):
    async def create_job(
        self,
        device_id: str,
        kind: str,
        requested_by: str,
        *,
        now: float,
        audit: AuditEntry | None = None,
    ) -> Job: ...
    async def get_job(self, job_id: str) -> Job: ...
    async def start_job(self, job_id: str, *, now: float) -> Job: ...
    async def finish_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        now: float,
        error: str | None = None,
        audit: AuditEntry | None = None,
    ) -> Job: ...
    async def reconcile_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        now: float,
        error: str | None = None,
        audit: AuditEntry | None = None,
    ) -> Job: ...
    async def unknown_jobs(self, device_id: str, *, limit: int) -> list[Job]: ...
    async def mark_unfinished_jobs_unknown(
        self, kinds: Collection[str], reason: str, *, now: float
    ) -> list[Job]: ...
    async def mark_running_jobs_failed(self, reason: str, *, now: float) -> int: ...


class AuditLog(Protocol):
    """The append-only, hash-chained audit log (:mod:`relay.audit`)."""

    async def append(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: Outcome,
        now: float,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord: ...
    async def head(self) -> ChainHead: ...
    async def extent(self) -> tuple[ChainHead | None, int]: ...
    async def actions_after(
        self, seq: int, actions: Collection[str], *, limit: int = 1000
    ) -> tuple[int, list[AuditRecord]]:
        """Records after ``seq`` with one of ``actions`` and outcome ``ok``; the next seq."""
        ...

    def records(
        self, *, start_seq: int = 1, stop_seq: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[AuditRecord]: ...
