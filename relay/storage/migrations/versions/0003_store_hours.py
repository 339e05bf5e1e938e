"""Stores get a time zone and opening hours (SLA clocks and alert holding count in them).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("stores") as batch:
        batch.add_column(
            sa.Column("timezone", sa.String(64), nullable=False, server_default="Asia/Shanghai")
        )
        batch.add_column(sa.Column("hours", sa.Text(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("stores") as batch:
        batch.drop_column("hours")
        batch.drop_column("timezone")
