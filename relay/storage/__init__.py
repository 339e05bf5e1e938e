"""The relay's data layer: small interfaces, one SQLAlchemy Core implementation, migrations.

storage = open_storage("sqlite:///data/relay.db")  # or postgresql://…
await storage.migrate()
"""

from __future__ import annotations

from posassist.relay.storage.engine import map_db_errors, normalise_url
from posassist.relay.storage.interfaces import (
    AuditLog,
    DeviceStore,
    EnrolmentStore,
    JobStore,
    TenancyStore,
    TokenStore,
    UserStore,
)
from posassist.relay.storage.models import (
    ChainHead,
    Device,
    DeviceStatus,
    EnrolmentToken,
    Job,
    JobStatus,
    Merchant,
    Organisation,
    RetailStore,
    Role,
    Scope,
    ScopeKind,
    TenantPath,
    User,
)
from posassist.relay.storage.sql import SqlStorage, head_revision, open_storage

__all__ = [
    "AuditLog",
    "ChainHead",
    "Device",
    "DeviceStatus",
    "DeviceStore",
    "EnrolmentStore",
    "EnrolmentToken",
    "Job",
    "JobStatus",
    "JobStore",
    "Merchant",
    "Organisation",
    "RetailStore",
    "Role",
    "Scope",
    "ScopeKind",
    "SqlStorage",
    "TenancyStore",
    "TenantPath",
    "TokenStore",
    "User",
    "UserStore",
    "head_revision",
    "map_db_errors",
    "normalise_url",
    "open_storage",
]
