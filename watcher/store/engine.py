"""The engine: which database, how it is opened, the SQLite pragmas (WAL, busy timeout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import Engine
from sqlmodel import create_engine


def default_db_url() -> str:
    """Spec section 8: $STATE_DIRECTORY under systemd, else ./watcher.db."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    base = Path(state_dir.split(":")[0]) if state_dir else Path.cwd()
    return f"sqlite:///{base / 'watcher.db'}"


def resolve_url(url: str | None) -> str:
    """The database a command uses: ``--db``, else $WATCHER_DB, else the default file."""
    return url or os.environ.get("WATCHER_DB") or default_db_url()


def is_postgresql(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def require_existing(url: str) -> None:
    """Read-only commands must not create an empty database where the user mistyped a path."""
    parsed = make_url(url)
    on_disk = parsed.get_backend_name() == "sqlite" and parsed.database not in (
        None,
        "",
        ":memory:",
    )
    if on_disk and not Path(parsed.database).exists():  # type: ignore[arg-type]
        raise RuntimeError(
            f"no database at {parsed.database}; run `watcher once` or `watcher run` first, "
            "or pass --db / set WATCHER_DB"
        )


def make_engine(url: str, *, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def libpq_conninfo(url: str) -> str:
    """The libpq form (``postgresql://…``) of a SQLAlchemy PostgreSQL URL, for code that
    opens its own psycopg connections (the cluster's job queue, the bot's leader lock)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
