"""Retention: deleting settled alerts and old history in small batches."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import delete

from ..util import as_utc
from .botupdates import BOT_UPDATE_KEEP
from .tables import AlertRow, DeliveryRow, HistoryRow


class RetentionStore:
    """The retention method of ``Store`` (it provides ``session`` and ``prune_bot_updates``)."""

    session: Any
    prune_bot_updates: Any

    def prune_batch(
        self,
        now: datetime,
        retention: timedelta,
        history_retention: timedelta | None = None,
        *,
        batch: int = 500,
    ) -> tuple[int, int]:
        """Delete one small batch of what retention allows; returns (alerts, history rows).

        Alerts go only with all their deliveries settled (sent or dead): a pending one, even
        a year old, is still owed. Each batch is its own short transaction, so a poll's commit
        never waits behind a big delete; the caller loops until both counts are 0. Claims of
        bot updates older than a day go too (one delete, not counted: a row per command).
        """
        cutoff = as_utc(now) - retention
        a, d = AlertRow.__table__.c, DeliveryRow.__table__.c
        owed = select(d.alert_id).where(d.alert_id == a.alert_id).where(d.status == "pending")
        with self.session() as s, s.begin():
            conn = s.connection()
            ids = [
                row[0]
                for row in conn.execute(
                    select(a.alert_id)
                    .where(a.detected_at < cutoff)
                    .where(~owed.exists())
                    .order_by(a.detected_at)
                    .limit(batch)
                )
            ]
            if ids:
                conn.execute(delete(DeliveryRow.__table__).where(d.alert_id.in_(ids)))
                conn.execute(delete(AlertRow.__table__).where(a.alert_id.in_(ids)))
        history = 0
        if history_retention is not None:
            h = HistoryRow.__table__.c
            oldest = (
                select(h.id)
                .where(h.at < as_utc(now) - history_retention)
                .order_by(h.at)
                .limit(batch)
            )
            with self.session() as s, s.begin():
                conn = s.connection()
                old = [row[0] for row in conn.execute(oldest)]
                if old:
                    history = conn.execute(
                        delete(HistoryRow.__table__).where(h.id.in_(old))
                    ).rowcount
        self.prune_bot_updates(as_utc(now) - BOT_UPDATE_KEEP)  # a handful of small rows
        return len(ids), history
