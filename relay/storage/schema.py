"""The relay's tables as SQLAlchemy Core metadata: what the newest migration produces.

Migrations in ``migrations/versions`` are the source of truth for the database; a test checks
that applying them all yields exactly this metadata.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "audit",
    "audit_head",
    "bearer_tokens",
    "devices",
    "enrolment_tokens",
    "jobs",
    "merchants",
    "metadata",
    "organisations",
    "sla_policies",
    "stores",
    "ticket_events",
    "tickets",
    "users",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String(40)

organisations = sa.Table(
    "organisations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
)

merchants = sa.Table(
    "merchants",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("organisation_id", ID, sa.ForeignKey("organisations.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
)

stores = sa.Table(
    "stores",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("merchant_id", ID, sa.ForeignKey("merchants.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="Asia/Shanghai"),
    sa.Column("hours", sa.Text(), nullable=False, server_default="{}"),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", ID, primary_key=True),
    # Migration 0010: NULL once the device is deleted (status 'deleted'): it left its store.
    sa.Column("store_id", ID, sa.ForeignKey("stores.id"), nullable=True, index=True),
    sa.Column("public_key", sa.LargeBinary(), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("enrolled_at", sa.Double(), nullable=False),
    sa.Column("revoked_at", sa.Double(), nullable=True),
    sa.Column("last_seen", sa.Double(), nullable=True),
    sa.Column("agent_version", sa.String(64), nullable=True),
    sa.Column("facts", sa.JSON(), nullable=False),
    # Migration 0009: moved to another provider (docs/protocol.md#changing-provider).
    sa.Column("handed_over_at", sa.Double(), nullable=True),
    sa.Column("deleted_at", sa.Double(), nullable=True),
    sa.CheckConstraint("status IN ('active', 'revoked', 'handed_over', 'deleted')", name="status"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("username", sa.String(150), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("scope_kind", sa.String(16), nullable=False),
    sa.Column("scope_id", ID, nullable=True),
    sa.Column("failed_logins", sa.Integer(), nullable=False),
    sa.Column("locked_until", sa.Double(), nullable=True),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.CheckConstraint("role IN ('admin', 'technician', 'viewer', 'merchant')", name="role"),
    sa.CheckConstraint(
        "scope_kind IN ('root', 'organisation', 'merchant', 'store', 'device')", name="scope_kind"
    ),
)

bearer_tokens = sa.Table(
    "bearer_tokens",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(), primary_key=True),
    sa.Column(
        "user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False),
    sa.Column("revoked_at", sa.Double(), nullable=True),
)

enrolment_tokens = sa.Table(
    "enrolment_tokens",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("token_hash", sa.LargeBinary(), nullable=False, unique=True),
    sa.Column("store_id", ID, sa.ForeignKey("stores.id"), nullable=False, index=True),
    sa.Column("relay_id", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False),
    sa.Column("used_at", sa.Double(), nullable=True),
    sa.Column("used_by_device", ID, sa.ForeignKey("devices.id"), nullable=True),
    sa.Column("revoked_at", sa.Double(), nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("device_id", ID, sa.ForeignKey("devices.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("requested_by", sa.String(150), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("started_at", sa.Double(), nullable=True),
    sa.Column("finished_at", sa.Double(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.CheckConstraint(
        # migration 0008 adds 'cancelled'
        "status IN ('pending', 'running', 'succeeded', 'failed', 'timed_out', 'unknown', "
        "'cancelled')",
        name="status",
    ),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("action", sa.Text(), nullable=False),
    sa.Column("target", sa.Text(), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.JSON(), nullable=False),
    sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
    sa.Column("hash", sa.LargeBinary(), nullable=False),
)

# One row (id = 1) holding the chain's last seq and hash. Appends lock it (SELECT … FOR UPDATE on
# PostgreSQL; BEGIN IMMEDIATE on SQLite), which serialises them so the chain cannot fork, and it
# lets verification notice records deleted from the end of the log.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("hash", sa.LargeBinary(), nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

# Issue 12 (migration 0004): tickets, their history, and each merchant's SLA. The states, the
# channels and the categories are checked here as well as by relay/tickets.py.
TICKET_STATES = (
    "('new', 'accepted', 'in_progress', 'waiting_merchant', 'resolved', 'closed', 'reopened')"
)

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("support_code", sa.String(16), nullable=False, unique=True),
    sa.Column("store_id", ID, sa.ForeignKey("stores.id"), nullable=False, index=True),
    sa.Column("device_id", ID, sa.ForeignKey("devices.id"), nullable=True, index=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("contact", sa.String(64), nullable=False),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("diagnostics", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("technician", sa.String(150), nullable=True),
    sa.Column("opened_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
    sa.Column("clock_started_at", sa.Double(), nullable=False),
    sa.Column("first_response_at", sa.Double(), nullable=True),
    sa.Column("resolved_at", sa.Double(), nullable=True),
    sa.Column("closed_at", sa.Double(), nullable=True),
    sa.Column("response_due", sa.Double(), nullable=True),
    sa.Column("resolve_due", sa.Double(), nullable=True),
    sa.Column("response_breached_at", sa.Double(), nullable=True),
    sa.Column("resolve_breached_at", sa.Double(), nullable=True),
    sa.Column("rating", sa.Integer(), nullable=True),
    sa.Column("rating_comment", sa.Text(), nullable=True),
    sa.Column("rated_at", sa.Double(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    # Migration 0007: the resolution clock stops while the ticket waits for the merchant.
    sa.Column("sla_paused_at", sa.Double(), nullable=True),
    sa.Column("sla_paused_seconds", sa.Double(), nullable=False, server_default="0"),
    sa.CheckConstraint(f"status IN {TICKET_STATES}", name="status"),
    sa.CheckConstraint("channel IN ('agent', 'phone')", name="channel"),
    sa.CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="rating"),
)

ticket_events = sa.Table(
    "ticket_events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("ticket_id", ID, sa.ForeignKey("tickets.id"), nullable=False, index=True),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(20), nullable=True),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("audit_seq", sa.BigInteger(), nullable=True),
)

sla_policies = sa.Table(
    "sla_policies",
    metadata,
    sa.Column("merchant_id", ID, sa.ForeignKey("merchants.id"), primary_key=True),
    sa.Column("response_seconds", sa.Double(), nullable=True),
    sa.Column("resolve_seconds", sa.Double(), nullable=True),
    sa.Column("updated_at", sa.Double(), nullable=False),
)
# The health alert tables (issue 13) live in their own module, on this metadata.
from posassist.relay.storage import schema_health as _health  # noqa: E402, F401
