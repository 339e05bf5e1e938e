"""Alembic migrations for the relay database, applied by ``SqlStorage.migrate()``."""
