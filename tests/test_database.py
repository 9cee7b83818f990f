"""The database layer on whichever backend the suite runs against (SQLite or PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import create_engine

from watcher.store import Store


def test_the_suite_runs_on_the_backend_it_was_asked_for(db_url, db_backend):
    """WATCHER_TEST_DB must really switch the backend, or the PostgreSQL run proves nothing."""
    store = Store(db_url)
    try:
        assert store.engine.dialect.name == db_backend
        assert store.ping()
    finally:
        store.close()
    engine = create_engine(db_url)
    assert engine.dialect.name == db_backend
    engine.dispose()
