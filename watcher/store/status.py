"""What the cluster's job queue holds for each watch, for ``watcher status`` and /status.

On PostgreSQL the polls are procrastinate jobs (task ``watcher.poll``, lock and queueing lock
the watch id); this reads their table with plain SQL, so a status report needs neither
procrastinate's app nor a worker. SQLite has no queue: the daemon's own scheduler holds the
next polls in memory.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text

from ..util import as_utc

POLL_TASK = "watcher.poll"

# per watch, a poll running beats one waiting (the next is deferred while one runs)
_QUEUED = text(
    "SELECT lock, status::text, scheduled_at FROM procrastinate_jobs "
    "WHERE task_name = :task AND status IN ('todo', 'doing') AND lock IS NOT NULL "
    "ORDER BY lock, status = 'doing' DESC, scheduled_at NULLS FIRST, id"
)


class StatusStore:
    """Job-queue reads of ``Store`` (it provides ``session`` and ``engine``)."""

    session: Any
    engine: Any

    def queued_polls(self) -> dict[str, tuple[datetime | None, str]]:
        """Watch id → (scheduled_at, status) of its poll job in status todo or doing; a
        doing job wins over a todo one. ``scheduled_at`` None is "as soon as a worker is
        free". {} on SQLite (no job queue)."""
        if self.engine.dialect.name != "postgresql":
            return {}
        out: dict[str, tuple[datetime | None, str]] = {}
        with self.session() as s:
            for lock, status, at in s.connection().execute(_QUEUED, {"task": POLL_TASK}):
                if lock not in out:
                    out[lock] = (None if at is None else as_utc(at), status)
        return out
