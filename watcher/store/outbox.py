"""The outbox: claim what is due, mark it sent, failed, dead or held.

Claims name the claiming instance (one per Store: a process, never a PID or a host name) and
carry a lease, so two dispatchers never send the same delivery; ``instances`` hands back
the claims of an instance whose heartbeat stopped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from ..models import Alert, Delivery
from ..util import as_utc
from .tables import (
    AlertRow,
    DeliveryRow,
    alert_from_row,
    delivery_from_row,
)

CLAIM_LEASE = timedelta(minutes=15)  # longer than one pass may take (Telegram: 20/min a group)


class OutboxStore:
    """Outbox methods of ``Store`` (it provides ``session``)."""

    session: Any
    instance_id: str

    # ------------------------------------------------------------ outbox

    def due_deliveries(
        self, now: datetime, channels: Iterable[str] | None = None
    ) -> list[tuple[Delivery, Alert]]:
        """What is due now (read only; ``claim_due`` is what a dispatcher uses)."""
        with self.session() as s:
            q = (
                select(DeliveryRow, AlertRow)
                .join(AlertRow, AlertRow.alert_id == DeliveryRow.alert_id)
                .where(DeliveryRow.status == "pending")
                .where(DeliveryRow.next_attempt_at <= as_utc(now))
                .order_by(DeliveryRow.id)
            )
            if channels is not None:
                q = q.where(DeliveryRow.channel.in_(list(channels)))  # type: ignore[attr-defined]
            return [(delivery_from_row(d), alert_from_row(a)) for d, a in s.exec(q).all()]

    def claim_due(
        self,
        now: datetime,
        channels: Iterable[str] | None = None,
        *,
        lease: timedelta = CLAIM_LEASE,
        limit: int = 200,
    ) -> list[tuple[Delivery, Alert]]:
        """Take what is due for this process only: two dispatchers (a daemon and a manual
        ``watcher once``) never send the same delivery at once.

        The claim pushes ``next_attempt_at`` a lease ahead; sending ends it (sent, failed,
        held). A process that dies mid-send leaves the lease to expire, and the delivery is
        retried then: at-least-once.
        """
        now = as_utc(now)
        token = f"{self.instance_id}:{uuid.uuid4().hex}"
        d = DeliveryRow.__table__.c
        with self.session() as s, s.begin():
            q = (
                select(d.id)
                .where(d.status == "pending")
                .where(d.next_attempt_at <= now)
                # the most overdue first; this order is also ix_delivery_due's, so the claim
                # reads a few index entries instead of scanning every delivery ever sent
                .order_by(d.next_attempt_at, d.id)
                .limit(limit)
            )
            if channels is not None:
                q = q.where(d.channel.in_(list(channels)))
            conn = s.connection()
            if conn.dialect.name == "postgresql":
                # instances claiming at once each take other rows, none waits for another's
                q = q.with_for_update(skip_locked=True)
            ids = [row[0] for row in conn.execute(q)]
            if not ids:
                return []
            s.connection().execute(
                update(DeliveryRow.__table__)
                .where(d.id.in_(ids))
                .where(d.status == "pending")
                .where(d.next_attempt_at <= now)
                .values(claim=token, next_attempt_at=now + lease)
            )
        with self.session() as s:
            rows = s.exec(
                select(DeliveryRow, AlertRow)
                .join(AlertRow, AlertRow.alert_id == DeliveryRow.alert_id)
                .where(DeliveryRow.claim == token)
                .order_by(DeliveryRow.id)
            ).all()
            return [(delivery_from_row(row), alert_from_row(a)) for row, a in rows]

    def release_claim(self, token: str, now: datetime) -> None:
        """Hand back claimed deliveries that were not sent, failed or held: due now."""
        d = DeliveryRow.__table__.c
        with self.session() as s, s.begin():
            s.connection().execute(
                update(DeliveryRow.__table__)
                .where(d.claim == token)
                .where(d.status == "pending")
                .values(claim=None, next_attempt_at=as_utc(now))
            )

    def next_due(self, channels: Iterable[str] | None = None) -> datetime | None:
        with self.session() as s:
            q = select(func.min(DeliveryRow.next_attempt_at)).where(
                DeliveryRow.status == "pending"
            )
            if channels is not None:
                q = q.where(DeliveryRow.channel.in_(list(channels)))  # type: ignore[attr-defined]
            at = s.exec(q).scalar()
        return at if at else None

    def mark_sent(self, delivery_ids: Iterable[int], now: datetime) -> None:
        ids = list(delivery_ids)
        with self.session() as s, s.begin():
            s.connection().execute(
                update(DeliveryRow.__table__)
                .where(DeliveryRow.__table__.c.id.in_(ids))
                .values(
                    status="sent",
                    sent_at=as_utc(now),
                    attempts=DeliveryRow.attempts + 1,
                    claim=None,
                )
            )

    def hold(self, delivery_ids: Iterable[int], until: datetime) -> None:
        """Quiet hours or a mute: keep these pending, untried, until the window ends."""
        ids = list(delivery_ids)
        with self.session() as s, s.begin():
            s.connection().execute(
                update(DeliveryRow.__table__)
                .where(DeliveryRow.__table__.c.id.in_(ids))
                .values(held=True, next_attempt_at=as_utc(until), claim=None)
            )

    def mark_failed(
        self,
        delivery_ids: Iterable[int],
        *,
        error: str,
        dead: bool,
        next_attempt_at: datetime | None,
    ) -> None:
        ids = list(delivery_ids)
        values: dict[str, Any] = {
            "attempts": DeliveryRow.attempts + 1,
            "last_error": error[:1000],
            "status": "dead" if dead else "pending",
            "claim": None,
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = as_utc(next_attempt_at)
        with self.session() as s, s.begin():
            s.connection().execute(
                update(DeliveryRow.__table__)
                .where(DeliveryRow.__table__.c.id.in_(ids))
                .values(values)
            )

    def recent_alerts(
        self, *, limit: int = 50, failed: bool = False
    ) -> list[tuple[Alert, list[Delivery]]]:
        with self.session() as s:
            q = select(AlertRow).order_by(AlertRow.detected_at.desc()).limit(limit)  # type: ignore[attr-defined]
            if failed:
                q = (
                    select(AlertRow)
                    .join(DeliveryRow, DeliveryRow.alert_id == AlertRow.alert_id)
                    .where(DeliveryRow.status == "dead")
                    .distinct()
                    .order_by(AlertRow.detected_at.desc())  # type: ignore[attr-defined]
                    .limit(limit)
                )
            alerts = list(s.exec(q).scalars())
            out = []
            for a in alerts:
                ds = [
                    delivery_from_row(d)
                    for d in s.exec(
                        select(DeliveryRow).where(DeliveryRow.alert_id == a.alert_id)
                    ).scalars()
                ]
                out.append((alert_from_row(a), ds))
        return out

    def delivery_counts(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.exec(
                select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status)
            ).all()
        return dict(rows)
