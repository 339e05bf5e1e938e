"""Held notifications can be cancelled: a webhook delivery names its alert, and may end
``cancelled`` when the alert resolved before the store opened (docs/alerts.md).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_OLD = "status IN ('pending', 'delivered', 'failed')"
_NEW = "status IN ('pending', 'delivered', 'failed', 'cancelled')"


def upgrade() -> None:
    # SQLite cannot alter a constraint: batch mode rebuilds the table (env.py render_as_batch).
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("alert_id", sa.String(40), nullable=True))
        batch.drop_constraint(op.f("ck_webhook_deliveries_status"), type_="check")
        batch.create_check_constraint(op.f("ck_webhook_deliveries_status"), _NEW)
    op.create_index(op.f("ix_webhook_deliveries_alert_id"), "webhook_deliveries", ["alert_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_deliveries_alert_id"), table_name="webhook_deliveries")
    op.execute("UPDATE webhook_deliveries SET status = 'failed' WHERE status = 'cancelled'")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_constraint(op.f("ck_webhook_deliveries_status"), type_="check")
        batch.create_check_constraint(op.f("ck_webhook_deliveries_status"), _OLD)
        batch.drop_column("alert_id")
