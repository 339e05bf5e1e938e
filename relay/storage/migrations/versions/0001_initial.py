"""Initial schema: tenancy tree, devices, users, tokens, enrolment, jobs, audit chain.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(40)


def _timestamps(*names: str, nullable: bool = False) -> list[sa.Column[float]]:
    return [sa.Column(name, sa.Double(), nullable=nullable) for name in names]


def upgrade() -> None:
    op.create_table(
        "organisations",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *_timestamps("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
    )
    op.create_table(
        "merchants",
        sa.Column("id", ID, nullable=False),
        sa.Column("organisation_id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *_timestamps("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_merchants_organisation_id_organisations"),
        ),
    )
    op.create_index(op.f("ix_merchants_organisation_id"), "merchants", ["organisation_id"])
    op.create_table(
        "stores",
        sa.Column("id", ID, nullable=False),
        sa.Column("merchant_id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *_timestamps("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stores")),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_stores_merchant_id_merchants")
        ),
    )
    op.create_index(op.f("ix_stores_merchant_id"), "stores", ["merchant_id"])
    op.create_table(
        "devices",
        sa.Column("id", ID, nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps("enrolled_at"),
        *_timestamps("revoked_at", "last_seen", nullable=True),
        sa.Column("agent_version", sa.String(64), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_devices_store_id_stores")
        ),
        sa.UniqueConstraint("public_key", name=op.f("uq_devices_public_key")),
        sa.CheckConstraint("status IN ('active', 'revoked')", name=op.f("ck_devices_status")),
    )
    op.create_index(op.f("ix_devices_store_id"), "devices", ["store_id"])
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("username", sa.String(150), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("scope_kind", sa.String(16), nullable=False),
        sa.Column("scope_id", ID, nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        *_timestamps("locked_until", nullable=True),
        *_timestamps("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
        sa.CheckConstraint(
            "role IN ('admin', 'technician', 'viewer', 'merchant')", name=op.f("ck_users_role")
        ),
        sa.CheckConstraint(
            "scope_kind IN ('root', 'organisation', 'merchant', 'store', 'device')",
            name=op.f("ck_users_scope_kind"),
        ),
    )
    op.create_table(
        "bearer_tokens",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        *_timestamps("created_at", "expires_at"),
        *_timestamps("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_bearer_tokens")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_bearer_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_bearer_tokens_user_id"), "bearer_tokens", ["user_id"])
    op.create_table(
        "enrolment_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("relay_id", sa.String(200), nullable=False),
        *_timestamps("created_at", "expires_at"),
        *_timestamps("used_at", nullable=True),
        sa.Column("used_by_device", ID, nullable=True),
        *_timestamps("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enrolment_tokens_token_hash")),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_enrolment_tokens_store_id_stores")
        ),
        sa.ForeignKeyConstraint(
            ["used_by_device"],
            ["devices.id"],
            name=op.f("fk_enrolment_tokens_used_by_device_devices"),
        ),
    )
    op.create_index(op.f("ix_enrolment_tokens_store_id"), "enrolment_tokens", ["store_id"])
    op.create_table(
        "jobs",
        sa.Column("id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(150), nullable=False),
        *_timestamps("created_at"),
        *_timestamps("started_at", "finished_at", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_jobs_device_id_devices")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'timed_out')",
            name=op.f("ck_jobs_status"),
        ),
    )
    op.create_index(op.f("ix_jobs_device_id"), "jobs", ["device_id"])
    op.create_index(op.f("ix_jobs_status"), "jobs", ["status"])
    op.create_table(
        "audit",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        *_timestamps("at"),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit")),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_head_single_row")),
    )
    # The empty chain: seq 0, and the genesis hash the first record chains from.
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": bytes(32)}])


def downgrade() -> None:
    for table in (
        "audit_head",
        "audit",
        "jobs",
        "enrolment_tokens",
        "bearer_tokens",
        "users",
        "devices",
        "stores",
        "merchants",
        "organisations",
    ):
        op.drop_table(table)
