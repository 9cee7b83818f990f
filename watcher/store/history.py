"""Reading the recorded history: prices, product changes, when a rule last alerted."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, true

from ..models import HistoryPoint, LastAlert, PricePoint, ProductHistory
from ..util import as_utc
from .tables import (
    AlertRow,
    HistoryRow,
    SnapshotRow,
    WatchStateRow,
    product_from_json,
    product_from_snapshot,
)


class HistoryStore:
    """History methods of ``Store`` (it provides ``session``)."""

    session: Any

    def price_history(
        self, watch_id: str, product_ids: Iterable[str], *, since_seq: int = 0
    ) -> dict[str, list[PricePoint]]:
        """Recorded prices, oldest first, from polls after seq ``since_seq`` (the baseline)."""
        ids = list(product_ids)
        out: dict[str, list[PricePoint]] = {i: [] for i in ids}
        if not ids:
            return out
        with self.session() as s:
            rows = s.exec(
                select(HistoryRow.product_id, HistoryRow.at, HistoryRow.price)
                .where(HistoryRow.watch_id == watch_id)
                .where(HistoryRow.product_id.in_(ids))  # type: ignore[attr-defined]
                .where(HistoryRow.price.is_not(None))  # type: ignore[union-attr]
                .where(HistoryRow.seq > since_seq)
                .order_by(HistoryRow.at, HistoryRow.id)
            ).all()
        for pid, at, price in rows:
            out[pid].append(PricePoint(at=at, price=Decimal(price)))
        return out

    def product_history(self, product_id: str) -> list[HistoryPoint]:
        """Every recorded change of a product, oldest first, across the watches that saw it."""
        h = HistoryRow
        with self.session() as s:
            rows = s.exec(
                select(
                    h.watch_id,
                    h.at,
                    h.price,
                    h.original_price,
                    h.discount_percent,
                    h.rank,
                    h.sold,
                    h.present,
                )
                .where(h.product_id == product_id)
                .order_by(h.at, h.id)
            ).all()
        return [
            HistoryPoint(
                watch_id=watch_id,
                product_id=product_id,
                at=as_utc(at),
                price=None if price is None else Decimal(price),
                original_price=None if original is None else Decimal(original),
                discount_percent=discount,
                rank=rank,
                sold=sold,
                present=present,
            )
            for watch_id, at, price, original, discount, rank, sold, present in rows
        ]

    def product_record(self, product_id: str) -> ProductHistory:
        """The product's changes with its latest snapshot (title, currency) and the last
        successful poll of the watches that saw it: everything a history view shows."""
        points = tuple(self.product_history(product_id))
        snap = SnapshotRow
        with self.session() as s:
            rows = s.scalars(select(snap).where(snap.product_id == product_id)).all()
            watches = sorted({p.watch_id for p in points})
            polled = (
                s.scalar(
                    select(func.max(WatchStateRow.last_success_at)).where(
                        WatchStateRow.watch_id.in_(watches)  # type: ignore[attr-defined]
                    )
                )
                if watches
                else None
            )
        latest = max(
            rows,
            key=lambda r: (r.present, as_utc(r.updated_at) if r.updated_at else _EPOCH),
            default=None,
        )
        return ProductHistory(
            product_id=product_id,
            points=points,
            product=None if latest is None else product_from_snapshot(latest),
            polled_until=None if polled is None else as_utc(polled),
        )

    def last_alerted(
        self, watch_id: str, product_ids: Iterable[str], since: datetime | None = None
    ) -> dict[tuple[str, str], LastAlert]:
        """Per (rule, product) of this watch: its latest alert's time and product (what
        the cooldown compares a repeat with); only alerts from ``since`` on (the longest
        cooldown: older ones cool nothing down). Tracks keep their own (``track``)."""
        ids = list(product_ids)
        if not ids:
            return {}
        a = AlertRow.__table__.c
        latest = (
            select(a.rule_id, a.product_id, func.max(a.detected_at).label("at"))
            .where(a.watch_id == watch_id)
            .where(a.rule_id.is_not(None))
            .where(a.rule_id.not_like("track:%"))
            .where(a.product_id.in_(ids))
            .where(a.detected_at >= since if since is not None else true())
            .group_by(a.rule_id, a.product_id)
            .subquery()
        )
        query = select(a.rule_id, a.product_id, a.detected_at, a.payload).join(
            latest,
            (a.watch_id == watch_id)
            & (a.product_id == latest.c.product_id)
            & (a.rule_id == latest.c.rule_id)
            & (a.detected_at == latest.c.at),
        )
        with self.session() as s:
            # two alerts of one key at the same instant: the last by id, the same every time
            rows = s.connection().execute(query.order_by(a.detected_at, a.alert_id)).all()
        return {
            (rule, pid): LastAlert(as_utc(at), product_from_json(json.loads(payload)["product"]))
            for rule, pid, at, payload in rows
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
