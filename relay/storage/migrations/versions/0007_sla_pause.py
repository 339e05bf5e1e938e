"""A ticket's resolution clock stops while it waits for the merchant (``waiting_merchant``):
when it stopped, and the store's open seconds it has been stopped in all (docs/relay.md#sla).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("sla_paused_at", sa.Double(), nullable=True))
        batch.add_column(
            sa.Column("sla_paused_seconds", sa.Double(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("sla_paused_seconds")
        batch.drop_column("sla_paused_at")
