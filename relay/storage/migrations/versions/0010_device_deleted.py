"""A device may be ``deleted``: an admin removed a revoked till from its store for good. The row
stays (its jobs, alerts and tickets point at it; the audit log names it), with no store, so the
store can be deleted too (docs/api.md, ``DELETE /v1/devices/{id}``).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

_OLD = "status IN ('active', 'revoked', 'handed_over')"
_NEW = "status IN ('active', 'revoked', 'handed_over', 'deleted')"


def upgrade() -> None:
    # SQLite cannot alter a column or a constraint: batch mode rebuilds the table (env.py
    # render_as_batch), with foreign keys off while it does (SqlStorage.run_schema_write).
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("deleted_at", sa.Double(), nullable=True))
        batch.alter_column("store_id", existing_type=sa.String(40), nullable=True)
        batch.drop_constraint(op.f("ck_devices_status"), type_="check")
        batch.create_check_constraint(op.f("ck_devices_status"), _NEW)


def downgrade() -> None:
    # A deleted device has no store, which 0009 can't hold; dropping it would drop its jobs'
    # history. Refused: restore the pre-upgrade backup instead.
    deleted = op.get_bind().scalar(sa.text("SELECT count(*) FROM devices WHERE status = 'deleted'"))
    if deleted:
        raise RuntimeError(
            f"{deleted} deleted devices have no store; 0009 can't hold them: restore a backup"
        )
    with op.batch_alter_table("devices") as batch:
        batch.drop_constraint(op.f("ck_devices_status"), type_="check")
        batch.create_check_constraint(op.f("ck_devices_status"), _OLD)
        batch.alter_column("store_id", existing_type=sa.String(40), nullable=False)
        batch.drop_column("deleted_at")
