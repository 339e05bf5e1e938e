"""Tables of health alerts (issue 13): alerts and their events, check policies, webhooks and
their delivery queue, unattended remediation attempts. Registered on ``schema.metadata``.

Migrations 0005 and 0006 create them; ``schema.py`` imports this module so the metadata is complete.
"""

from __future__ import annotations

import sqlalchemy as sa

from posassist.relay.storage.schema import ID, metadata

__all__ = [
    "ALERT_STATUSES",
    "DELIVERY_STATUSES",
    "REMEDIATION_STATUSES",
    "alert_events",
    "alerts",
    "policies",
    "remediations",
    "webhook_deliveries",
    "webhooks",
]

#: An alert is ``open`` (firing, nobody has said they are on it), ``acknowledged`` (a technician
#: is on it; still firing) or ``resolved`` (the check recovered). Resolved alerts reopen.
ALERT_STATUSES = ("open", "acknowledged", "resolved")
#: ``cancelled``: a held notification whose alert resolved before it was due (nobody need hear).
DELIVERY_STATUSES = ("pending", "delivered", "failed", "cancelled")
REMEDIATION_STATUSES = ("running", "succeeded", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# One row per alert. At most one not-resolved alert per (device, check): a partial unique index.
# Times: ``*_at`` are the relay's clock (receipt); ``*_observed_at`` are the agent's own clock,
# kept alongside and labelled so, never used for ordering (an agent's clock may be hours off).
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("device_id", ID, sa.ForeignKey("devices.id"), nullable=False),
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
    #: Its notifications wait until then: raised outside the store's hours under ``hold``.
    sa.Column("held_until", sa.Double(), nullable=True),
    sa.CheckConstraint(_in("status", ALERT_STATUSES), name="status"),
    sa.Index("ix_alerts_device_id_status", "device_id", "status"),
    sa.Index(
        "uq_alerts_one_unresolved",
        "device_id",
        "check_name",
        unique=True,
        sqlite_where=sa.text("status <> 'resolved'"),
        # and ``postgresql_where`` alike, added by add_postgresql_options() when PostgreSQL is
        # opened: naming it here would load SQLAlchemy's PostgreSQL dialect (3 MB) into every
        # relay on SQLite (tests/relay/test_idle_imports.py). Migration 0005 makes the index.
    ),
)


def add_postgresql_options() -> None:
    """Give the metadata's partial index its PostgreSQL ``WHERE`` (idempotent): called when a
    PostgreSQL database is opened, which loads that dialect anyway."""
    for index in alerts.indexes:
        if index.name == "uq_alerts_one_unresolved":
            index.dialect_options["postgresql"]["where"] = sa.text("status <> 'resolved'")


# Every alert event an agent delivered, once: the primary key (device, alert_key) is what makes
# a redelivery (the agent's outbox sends at least once) a no-op. ``alert_id`` is null for a
# recovery of a check that had no alert (nothing to resolve).
alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("device_id", ID, sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("alert_key", sa.String(128), primary_key=True),
    sa.Column("alert_id", ID, sa.ForeignKey("alerts.id"), nullable=True, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("observed_at", sa.Double(), nullable=False),
    sa.Column("received_at", sa.Double(), nullable=False),
    #: How the relay judged it (relay/policies.py): null, silenced, held or downgraded.
    sa.Column("handling", sa.String(16), nullable=True),
)

# A check policy document set on one node of the tenancy tree (nearest wins for a device).
# ``version`` comes from one counter over all rows, so a device's resolved version only grows;
# a removed policy stays as a row with no document (its version still counts).
policies = sa.Table(
    "policies",
    metadata,
    sa.Column("scope_kind", sa.String(16), primary_key=True),
    sa.Column("scope_id", ID, primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("document", sa.JSON(), nullable=True),
    sa.Column("updated_at", sa.Double(), nullable=False),
    sa.Column("updated_by", sa.String(150), nullable=False),
    sa.CheckConstraint(
        "scope_kind IN ('root', 'organisation', 'merchant', 'store', 'device')", name="scope_kind"
    ),
)

# A webhook of an organisation or a merchant: alert notifications for its devices, signed with
# ``secret`` (HMAC-SHA256; docs/webhooks.md).
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("scope_kind", sa.String(16), nullable=False),
    sa.Column("scope_id", ID, nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("created_by", sa.String(150), nullable=False),
    sa.Column("disabled_at", sa.Double(), nullable=True),
    sa.CheckConstraint("scope_kind IN ('root', 'organisation', 'merchant')", name="scope_kind"),
    sa.Index("ix_webhooks_scope_kind_scope_id", "scope_kind", "scope_id"),
)

# The durable delivery queue: a row per (webhook, notification), written in the transaction that
# made the notification; ``next_attempt_at`` is when a sender may (re)try it, and is moved ahead
# (a lease) when one takes it, so a relay killed mid-send leaves it to be sent again.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("webhook_id", ID, sa.ForeignKey("webhooks.id"), nullable=False, index=True),
    #: the alert the notification is about (to cancel its held notifications on recovery)
    sa.Column("alert_id", ID, nullable=True, index=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("next_attempt_at", sa.Double(), nullable=False),
    sa.Column("finished_at", sa.Double(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
    sa.Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

# One unattended remediation attempt on an alert: the vetted script the policy names, its job,
# and how it ended (also in the audit chain).
remediations = sa.Table(
    "remediations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("alert_id", ID, sa.ForeignKey("alerts.id"), nullable=False, index=True),
    sa.Column("device_id", ID, sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("check_name", sa.String(128), nullable=False),
    sa.Column("script", sa.String(128), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("job_id", ID, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", sa.Double(), nullable=False),
    sa.Column("finished_at", sa.Double(), nullable=True),
    sa.Column("detail", sa.Text(), nullable=True),
    sa.CheckConstraint(_in("status", REMEDIATION_STATUSES), name="status"),
    sa.Index("ix_remediations_device_id_check_name", "device_id", "check_name"),
)
