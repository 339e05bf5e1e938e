"""Jobs may end ``cancelled``: a technician stopped the run (docs/protocol.md#cancel).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_OLD = "status IN ('pending', 'running', 'succeeded', 'failed', 'timed_out', 'unknown')"
_NEW = (
    "status IN ('pending', 'running', 'succeeded', 'failed', 'timed_out', 'unknown', 'cancelled')"
)


def _replace_check(condition: str) -> None:
    # SQLite cannot alter a constraint: batch mode rebuilds the table (env.py render_as_batch).
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), condition)


def upgrade() -> None:
    _replace_check(_NEW)


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'failed' WHERE status = 'cancelled'")
    _replace_check(_OLD)
