"""Storing alerts: each new alert_id once, with one pending delivery per target."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from ..models import Alert
from ..util import as_utc, utcnow
from .tables import AlertRow, DeliveryRow, alert_to_payload


def insert_alerts(
    conn: Connection, alerts: list[tuple[Alert, list[tuple[str, str]]]], now: datetime
) -> int:
    """Bulk: one lookup of the ids already stored, one insert of each table.

    An alert_id that is stored already is the same transition re-processed (another
    process, a retried poll): it is skipped, so it is stored and delivered once.
    """
    if not alerts:
        return 0
    a = AlertRow.__table__.c
    fresh = list({alert.alert_id: (alert, targets) for alert, targets in alerts}.values())
    known = set(
        conn.execute(
            select(a.alert_id).where(a.alert_id.in_([x.alert_id for x, _ in fresh]))
        ).scalars()
    )
    fresh = [(x, t) for x, t in fresh if x.alert_id not in known]
    if not fresh:
        return 0
    conn.execute(
        insert(AlertRow.__table__),
        [
            {
                "alert_id": alert.alert_id,
                "kind": alert.kind,
                "rule_id": alert.rule_id,
                "watch_id": alert.watch_id,
                "product_id": alert.product.id if alert.product else None,
                "detected_at": as_utc(alert.detected_at),
                "batch": alert.batch,
                "payload": alert_to_payload(alert),
            }
            for alert, _targets in fresh
        ],
    )
    deliveries = [
        {
            "alert_id": alert.alert_id,
            "channel": channel,
            "target": target,
            "next_attempt_at": now,
            "created_at": now,
        }
        for alert, targets in fresh
        for channel, target in dict.fromkeys(targets)
    ]
    if deliveries:
        conn.execute(insert(DeliveryRow.__table__), deliveries)
    return len(fresh)


class AlertStore:
    """Alert methods of ``Store`` (it provides ``engine``)."""

    engine: Any

    def add_alerts(
        self, alerts: list[tuple[Alert, list[tuple[str, str]]]], now: datetime | None = None
    ) -> int:
        """Store notices outside a poll commit; returns how many were new."""
        with self.engine.begin() as conn:
            return insert_alerts(conn, alerts, as_utc(now or utcnow()))
