"""Schema migrations: Alembic revisions shipped in the package, applied under a lock.

Every process that opens the database runs ``upgrade`` first. The check is one read when the
schema is current; otherwise the upgrade runs inside one transaction that holds a lock
(PostgreSQL: a transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE``), so a daemon,
a ``watcher once`` and a second daemon starting together apply each revision exactly once,
and a crash mid-upgrade leaves the old schema, not half of the new one.

A database made before Alembic (tables and ``meta.schema_version`` 1, no
``alembic_version``) is adopted: stamped as revision 0001, then upgraded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:  # Alembic is imported only when a database is not at HEAD
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")
FIRST_REVISION = "0001"  # the schema watcher created before Alembic
HEAD = "0006"  # the newest revision in migrations/versions (test_database keeps them in step)
_LOCK_KEY = 0x7761746368  # "watch": the advisory lock every watcher process agrees on


class SchemaError(RuntimeError):
    """The database's schema is not one this watcher can use (newer, or unknown)."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: an empty database
    head: str
    adopted: bool = False  # a pre-Alembic database was stamped

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


def head() -> str:
    rev = script().get_current_head()
    assert rev is not None
    return rev


def current(engine: Engine) -> SchemaState:
    """The revision the database is at, read without a lock (and without changing it)."""
    with engine.connect() as conn:
        return SchemaState(_revision(conn), head())


def upgrade(engine: Engine) -> tuple[SchemaState, SchemaState]:
    """Bring the database to the newest revision; returns (before, after)."""
    if _stored_revision(engine) == HEAD:  # the usual case: one read, no Alembic
        state = SchemaState(HEAD, HEAD)
        return state, state
    target = head()
    before = current(engine)
    check_known(before.current)
    if before.up_to_date:
        return before, before
    from alembic import command

    with _locked(engine) as conn:
        now = _revision(conn)  # another process may have upgraded while we waited
        check_known(now)
        adopted = False
        if now is None and _is_pre_alembic(conn):
            command.stamp(_alembic_config(conn), FIRST_REVISION)
            adopted = True
        if now != target:
            command.upgrade(_alembic_config(conn), "head")
        after = SchemaState(_revision(conn), target, adopted)
    return SchemaState(now, target), after


def _stored_revision(engine: Engine) -> str | None:
    """``alembic_version`` read with plain SQL; None when it cannot be (Alembic decides)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return None
    return rows[0][0] if len(rows) == 1 else None


def _revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def check_known(revision: str | None) -> None:
    if revision is None:
        return
    known = {s.revision for s in script().walk_revisions()}
    if revision not in known:
        raise SchemaError(
            f"database schema revision {revision} is newer than this watcher "
            f"(which knows up to {head()}); upgrade watcher"
        )


def _is_pre_alembic(conn: Connection) -> bool:
    if not inspect(conn).has_table("meta"):
        return False
    version = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
    if version not in (None, "1"):
        raise SchemaError(
            f"database has schema_version {version} but no alembic_version: not a schema "
            "this watcher made; refusing to touch it"
        )
    return True


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it commits."""
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        # an in-memory database is this process's alone (and a second engine would open
        # another one): no lock to take
        with engine.begin() as conn:
            yield conn
        return
    if engine.dialect.name == "sqlite":
        # A connection of its own, with the driver's implicit transactions off, so that
        # BEGIN IMMEDIATE really is the transaction the DDL runs in (pysqlite would otherwise
        # run DDL outside any transaction).
        lock_engine = create_engine(
            engine.url,
            poolclass=NullPool,
            connect_args={"isolation_level": None, "timeout": 60},
        )

        @event.listens_for(lock_engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with lock_engine.begin() as conn:
                yield conn
        finally:
            lock_engine.dispose()
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        yield conn
