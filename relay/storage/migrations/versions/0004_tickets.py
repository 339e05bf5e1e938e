"""Tickets (issue 12): the merchant's help requests, their history, and each merchant's SLA.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(40)
_STATES = "('new', 'accepted', 'in_progress', 'waiting_merchant', 'resolved', 'closed', 'reopened')"


def _times(*names: str, nullable: bool = True) -> list[sa.Column[float]]:
    return [sa.Column(name, sa.Double(), nullable=nullable) for name in names]


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", ID, nullable=False),
        sa.Column("support_code", sa.String(16), nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("contact", sa.String(64), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("diagnostics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("technician", sa.String(150), nullable=True),
        sa.Column("opened_by", sa.String(200), nullable=False),
        *_times("created_at", "updated_at", "clock_started_at", nullable=False),
        *_times("first_response_at", "resolved_at", "closed_at", "response_due", "resolve_due"),
        *_times("response_breached_at", "resolve_breached_at"),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("rating_comment", sa.Text(), nullable=True),
        *_times("rated_at"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
        sa.UniqueConstraint("support_code", name=op.f("uq_tickets_support_code")),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_tickets_store_id_stores")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_tickets_device_id_devices")
        ),
        sa.CheckConstraint(f"status IN {_STATES}", name=op.f("ck_tickets_status")),
        sa.CheckConstraint("channel IN ('agent', 'phone')", name=op.f("ck_tickets_channel")),
        sa.CheckConstraint(
            "rating IS NULL OR rating BETWEEN 1 AND 5", name=op.f("ck_tickets_rating")
        ),
    )
    op.create_index(op.f("ix_tickets_store_id"), "tickets", ["store_id"])
    op.create_index(op.f("ix_tickets_device_id"), "tickets", ["device_id"])
    op.create_index(op.f("ix_tickets_status"), "tickets", ["status"])
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("ticket_id", ID, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(20), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("audit_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_events")),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_ticket_events_ticket_id_tickets")
        ),
    )
    op.create_index(op.f("ix_ticket_events_ticket_id"), "ticket_events", ["ticket_id"])
    op.create_table(
        "sla_policies",
        sa.Column("merchant_id", ID, nullable=False),
        sa.Column("response_seconds", sa.Double(), nullable=True),
        sa.Column("resolve_seconds", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_sla_policies")),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_sla_policies_merchant_id_merchants")
        ),
    )


def downgrade() -> None:
    op.drop_table("sla_policies")
    op.drop_index(op.f("ix_ticket_events_ticket_id"), table_name="ticket_events")
    op.drop_table("ticket_events")
    op.drop_index(op.f("ix_tickets_status"), table_name="tickets")
    op.drop_index(op.f("ix_tickets_device_id"), table_name="tickets")
    op.drop_index(op.f("ix_tickets_store_id"), table_name="tickets")
    op.drop_table("tickets")
