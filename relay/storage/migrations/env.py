"""Alembic environment: runs on the connection that ``SqlStorage.migrate()`` hands over.

There is no alembic.ini; the caller puts a synchronous ``Connection`` (from ``run_sync``) in
``config.attributes["connection"]``, already inside a transaction.
"""

from __future__ import annotations

from alembic import context

from posassist.relay.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE is limited
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
