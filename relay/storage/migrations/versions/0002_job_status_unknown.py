"""Jobs may end ``unknown``: the route expired or the agent left while a script may have run.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_OLD = "status IN ('pending', 'running', 'succeeded', 'failed', 'timed_out')"
_NEW = "status IN ('pending', 'running', 'succeeded', 'failed', 'timed_out', 'unknown')"


def _replace_check(condition: str) -> None:
    # SQLite cannot alter a constraint: batch mode rebuilds the table (env.py render_as_batch).
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), condition)


def upgrade() -> None:
    _replace_check(_NEW)


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'failed' WHERE status = 'unknown'")
    _replace_check(_OLD)
