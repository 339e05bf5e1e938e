"""A device may be ``handed_over``: its agent moved to another provider's relay with the
merchant's consent, and said so (``device.handover``, docs/protocol.md#changing-provider).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

_OLD = "status IN ('active', 'revoked')"
_NEW = "status IN ('active', 'revoked', 'handed_over')"


def upgrade() -> None:
    # SQLite cannot alter a constraint: batch mode rebuilds the table (env.py render_as_batch),
    # with foreign keys off while it does (SqlStorage.run_schema_write).
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("handed_over_at", sa.Double(), nullable=True))
        batch.drop_constraint(op.f("ck_devices_status"), type_="check")
        batch.create_check_constraint(op.f("ck_devices_status"), _NEW)


def downgrade() -> None:
    # A handed-over device is refused like a revoked one: that is what it becomes.
    op.execute(
        "UPDATE devices SET status = 'revoked', revoked_at = handed_over_at "
        "WHERE status = 'handed_over'"
    )
    with op.batch_alter_table("devices") as batch:
        batch.drop_constraint(op.f("ck_devices_status"), type_="check")
        batch.create_check_constraint(op.f("ck_devices_status"), _OLD)
        batch.drop_column("handed_over_at")
