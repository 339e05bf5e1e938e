"""Health alerts (issue 13): alerts and their events, check policies, webhooks and their
delivery queue, unattended remediation attempts (relay/storage/schema_health.py).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(40)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("check_name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("opened_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("resolved_at", sa.Double(), nullable=True),
        sa.Column("first_observed_at", sa.Double(), nullable=False),
        sa.Column("last_observed_at", sa.Double(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("reopened", sa.Integer(), nullable=False),
        sa.Column("acknowledged_at", sa.Double(), nullable=True),
        sa.Column("acknowledged_by", sa.String(150), nullable=True),
        sa.Column("escalated_at", sa.Double(), nullable=True),
        sa.Column("ticket_id", sa.String(64), nullable=True),
        sa.Column("held_until", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_alerts_device_id_devices")
        ),
        sa.CheckConstraint(
            _in("status", ("open", "acknowledged", "resolved")), name=op.f("ck_alerts_status")
        ),
    )
    op.create_index("ix_alerts_device_id_status", "alerts", ["device_id", "status"])
    op.create_index(
        "uq_alerts_one_unresolved",
        "alerts",
        ["device_id", "check_name"],
        unique=True,
        sqlite_where=sa.text("status <> 'resolved'"),
        postgresql_where=sa.text("status <> 'resolved'"),
    )
    op.create_table(
        "alert_events",
        sa.Column("device_id", ID, nullable=False),
        sa.Column("alert_key", sa.String(128), nullable=False),
        sa.Column("alert_id", ID, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("observed_at", sa.Double(), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("handling", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "alert_key", name=op.f("pk_alert_events")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_alert_events_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_events_alert_id_alerts")
        ),
    )
    op.create_index(op.f("ix_alert_events_alert_id"), "alert_events", ["alert_id"])
    op.create_table(
        "policies",
        sa.Column("scope_kind", sa.String(16), nullable=False),
        sa.Column("scope_id", ID, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("updated_by", sa.String(150), nullable=False),
        sa.PrimaryKeyConstraint("scope_kind", "scope_id", name=op.f("pk_policies")),
        sa.CheckConstraint(
            "scope_kind IN ('root', 'organisation', 'merchant', 'store', 'device')",
            name=op.f("ck_policies_scope_kind"),
        ),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", ID, nullable=False),
        sa.Column("scope_kind", sa.String(16), nullable=False),
        sa.Column("scope_id", ID, nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.String(150), nullable=False),
        sa.Column("disabled_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        sa.CheckConstraint(
            "scope_kind IN ('root', 'organisation', 'merchant')",
            name=op.f("ck_webhooks_scope_kind"),
        ),
    )
    op.create_index("ix_webhooks_scope_kind_scope_id", "webhooks", ["scope_kind", "scope_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", ID, nullable=False),
        sa.Column("webhook_id", ID, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_webhooks"),
        ),
        sa.CheckConstraint(
            _in("status", ("pending", "delivered", "failed")),
            name=op.f("ck_webhook_deliveries_status"),
        ),
    )
    op.create_index(op.f("ix_webhook_deliveries_webhook_id"), "webhook_deliveries", ["webhook_id"])
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt_at",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_table(
        "remediations",
        sa.Column("id", ID, nullable=False),
        sa.Column("alert_id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("check_name", sa.String(128), nullable=False),
        sa.Column("script", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remediations")),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_remediations_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_remediations_device_id_devices")
        ),
        sa.CheckConstraint(
            _in("status", ("running", "succeeded", "failed")),
            name=op.f("ck_remediations_status"),
        ),
    )
    op.create_index(op.f("ix_remediations_alert_id"), "remediations", ["alert_id"])
    op.create_index(
        "ix_remediations_device_id_check_name", "remediations", ["device_id", "check_name"]
    )


def downgrade() -> None:
    for table in (
        "remediations",
        "webhook_deliveries",
        "webhooks",
        "policies",
        "alert_events",
        "alerts",
    ):
        op.drop_table(table)
