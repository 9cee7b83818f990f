"""Bot updates taken: exactly one reply per Telegram update across a change of leader.

Telegram hands an update out again until a ``getUpdates`` confirms it (the next call's
``offset``). A leader that dies between taking an update and confirming it leaves the update
to the next leader, which may already have been answered. Each leader claims an update here
before it answers; the primary key (channel, update_id) lets one insert win, on SQLite and on
PostgreSQL alike, however many instances race for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..util import as_utc, utcnow
from .tables import BotUpdateRow

BOT_UPDATE_KEEP = timedelta(days=1)  # Telegram keeps an unconfirmed update for 24 hours


class BotUpdateStore:
    """The bot-update methods of ``Store`` (it provides ``session``)."""

    session: Any

    def claim_update(self, channel: str, update_id: int, now: datetime | None = None) -> bool:
        """Take update ``update_id`` of the bot of ``channel``: True for the one caller that
        took it, False when it was taken before (by this instance or another)."""
        values = {
            "channel": channel,
            "update_id": update_id,
            "handled_at": as_utc(now or utcnow()),
        }
        with self.session() as s, s.begin():
            conn = s.connection()
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                insert: Any = pg_insert(BotUpdateRow.__table__)
            else:
                insert = sqlite_insert(BotUpdateRow.__table__)
            # RETURNING, not rowcount: psycopg's rowcount here is -1; the row comes back
            # only from the insert that won
            taken = conn.execute(
                insert.values(**values)
                .on_conflict_do_nothing()
                .returning(BotUpdateRow.__table__.c.update_id)
            ).first()
            return taken is not None

    def prune_bot_updates(self, before: datetime) -> int:
        """Forget updates taken before ``before``; returns how many. Past
        ``BOT_UPDATE_KEEP`` Telegram no longer hands an update out, so its claim is moot."""
        c = BotUpdateRow.__table__.c
        with self.session() as s, s.begin():
            result = s.connection().execute(
                delete(BotUpdateRow.__table__).where(c.handled_at < as_utc(before))
            )
            return int(result.rowcount)
