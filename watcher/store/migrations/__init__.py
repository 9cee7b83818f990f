"""Alembic migrations of the watcher database (run by ``watcher.store.schema``)."""
