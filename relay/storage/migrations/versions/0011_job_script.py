"""A job may name the script it ran: ``script`` and ``version`` (nullable: other kinds, and jobs
made before this revision, have none), so job lists say which script ran (issue 15).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Batch mode (env.py render_as_batch) so SQLite can take it the same way as PostgreSQL.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("script", sa.String(64), nullable=True))
        batch.add_column(sa.Column("version", sa.String(32), nullable=True))


def downgrade() -> None:
    # Loses only the names; the audit log still records which script each job ran.
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("version")
        batch.drop_column("script")
