"""The database: sqlmodel tables and the only code that opens sessions.

SQLite (WAL) by default, any SQLAlchemy URL otherwise. Datetimes are aware UTC
(sqlmodel's UTCDateTime).
Decimal prices are stored as TEXT so they round-trip exactly on every backend.
Everything one poll produces (snapshot, history, alerts, deliveries, state) is written in one
transaction by ``commit_poll``: a crash leaves either all of it or none of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Index, UniqueConstraint, bindparam, event, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, create_engine, delete

from .models import Alert, PricePoint, Product, Tracked

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    """Aware UTC, as every timestamp column takes and returns (a naive value is UTC)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# ---------------------------------------------------------------- tables


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class WatchState(SQLModel, table=True):
    __tablename__ = "watch_state"
    watch_id: str = Field(primary_key=True)
    def_hash: str = ""
    baseline_done: bool = False
    seq: int = 0
    consecutive_failures: int = 0
    failing_notified: bool = False
    last_error: str | None = None
    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    empty_episode: bool = False
    not_found_episode: bool = False
    products: int = 0


class SnapshotRow(SQLModel, table=True):
    __tablename__ = "snapshot"
    watch_id: str = Field(primary_key=True)
    product_id: str = Field(primary_key=True)
    title: str | None = None
    url: str | None = None
    image_url: str | None = None
    currency: str | None = None
    price: str | None = None
    original_price: str | None = None
    discount_percent: int | None = None
    sold: int | None = None
    rating: str | None = None
    reviews: int | None = None
    rank: int | None = None
    shop_id: str | None = None
    shop_name: str | None = None
    present: bool = True
    missed: int = 0
    updated_at: datetime | None = None


class HistoryRow(SQLModel, table=True):
    __tablename__ = "history"
    __table_args__ = (
        Index("ix_history_watch_product_at", "watch_id", "product_id", "at"),
        Index("ix_history_product_at", "product_id", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    watch_id: str
    product_id: str
    seq: int
    at: datetime
    price: str | None = None
    original_price: str | None = None
    discount_percent: int | None = None
    rank: int | None = None
    sold: int | None = None
    present: bool = True


class AlertRow(SQLModel, table=True):
    __tablename__ = "alert"
    __table_args__ = (Index("ix_alert_rule_watch_product", "rule_id", "watch_id", "product_id"),)
    alert_id: str = Field(primary_key=True)
    kind: str
    rule_id: str | None = None
    watch_id: str | None = None
    product_id: str | None = None
    detected_at: datetime
    batch: str = ""
    payload: str  # JSON: product, previous, message, channels


class DeliveryRow(SQLModel, table=True):
    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("alert_id", "channel", "target"),
        Index("ix_delivery_due", "status", "next_attempt_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(foreign_key="alert.alert_id")
    channel: str
    target: str = ""
    status: str = "pending"  # pending | sent | dead
    attempts: int = 0
    next_attempt_at: datetime
    last_error: str | None = None
    created_at: datetime
    sent_at: datetime | None = None


class CreditRow(SQLModel, table=True):
    __tablename__ = "credit"
    provider: str = Field(primary_key=True)
    day: str = Field(primary_key=True)  # ISO date, UTC
    credits: int = 0
    requests: int = 0


class ProviderState(SQLModel, table=True):
    __tablename__ = "provider_state"
    provider: str = Field(primary_key=True)
    paused_until: datetime | None = None
    pause_notified: bool = False


# ---------------------------------------------------------------- conversions


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def product_from_row(row: Any) -> Product:
    return Product(
        id=row.product_id,
        title=row.title,
        url=row.url,
        image_url=row.image_url,
        currency=row.currency,
        price=_dec(row.price),
        original_price=_dec(row.original_price),
        discount_percent=row.discount_percent,
        sold=row.sold,
        rating=_dec(row.rating),
        reviews=row.reviews,
        rank=row.rank,
        shop_id=row.shop_id,
        shop_name=row.shop_name,
    )


def snapshot_values(watch_id: str, t: Tracked, now: datetime) -> dict[str, Any]:
    p = t.product
    return {
        "watch_id": watch_id,
        "product_id": p.id,
        "title": p.title,
        "url": p.url,
        "image_url": p.image_url,
        "currency": p.currency,
        "price": _str(p.price),
        "original_price": _str(p.original_price),
        "discount_percent": p.discount_percent,
        "sold": p.sold,
        "rating": _str(p.rating),
        "reviews": p.reviews,
        "rank": p.rank,
        "shop_id": p.shop_id,
        "shop_name": p.shop_name,
        "present": t.present,
        "missed": t.missed,
        "updated_at": now,
    }


def product_to_json(p: Product | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        k: (str(v) if isinstance(v, Decimal) else v)
        for k, v in ((f, getattr(p, f)) for f in Product.__dataclass_fields__)
    }


def product_from_json(d: Mapping[str, Any] | None) -> Product | None:
    if d is None:
        return None
    values = dict(d)
    for k in ("price", "original_price", "rating"):
        values[k] = _dec(values.get(k))
    return Product(**{k: values.get(k) for k in Product.__dataclass_fields__})


def alert_to_payload(alert: Alert) -> str:
    return json.dumps(
        {
            "product": product_to_json(alert.product),
            "previous": product_to_json(alert.previous),
            "message": alert.message,
            "channels": list(alert.channels),
        },
        sort_keys=True,
    )


def alert_from_row(row: AlertRow) -> Alert:
    payload = json.loads(row.payload)
    return Alert(
        alert_id=row.alert_id,
        kind=row.kind,
        watch_id=row.watch_id,
        detected_at=row.detected_at,
        rule_id=row.rule_id,
        product=product_from_json(payload.get("product")),
        previous=product_from_json(payload.get("previous")),
        message=payload.get("message", ""),
        channels=tuple(payload.get("channels", ())),
        batch=row.batch,
    )


# ---------------------------------------------------------------- write sets


@dataclass
class PollWrite:
    """Everything one poll commits, prepared by the pipeline, written atomically here.

    ``expected_seq`` guards against two writers committing the same poll twice: the commit
    is refused (returns False) when the stored seq moved on.
    """

    watch_id: str
    expected_seq: int
    now: datetime
    state: dict[str, Any]
    upserts: list[Tracked] = field(default_factory=list)
    existing_ids: set[str] = field(default_factory=set)
    replace_snapshot: bool = False
    history: list[tuple[Tracked, bool]] = field(default_factory=list)  # (tracked, present)
    alerts: list[tuple[Alert, list[tuple[str, str]]]] = field(default_factory=list)


def default_db_url() -> str:
    """Spec section 8: $STATE_DIRECTORY under systemd, else ./watcher.db."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    base = Path(state_dir.split(":")[0]) if state_dir else Path.cwd()
    return f"sqlite:///{base / 'watcher.db'}"


class Store:
    """Opens the database, creates the schema, and offers one method per unit of work."""

    def __init__(self, url: str | None = None, *, echo: bool = False) -> None:
        self.url = url or os.environ.get("WATCHER_DB") or default_db_url()
        self.engine: Engine = _make_engine(self.url, echo=echo)
        SQLModel.metadata.create_all(self.engine)
        self._check_version()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def _check_version(self) -> None:
        with self.session() as s:
            row = s.get(Meta, "schema_version")
            if row is None:
                s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                s.commit()
            elif int(row.value) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database schema version {row.value} is newer than this watcher "
                    f"({SCHEMA_VERSION}); upgrade watcher"
                )

    def ping(self) -> bool:
        with self.session() as s:
            s.exec(select(1))
        return True

    # ------------------------------------------------------------ watch state

    def watch_state(self, watch_id: str) -> WatchState | None:
        with self.session() as s:
            return s.get(WatchState, watch_id)

    def all_watch_states(self) -> dict[str, WatchState]:
        with self.session() as s:
            return {w.watch_id: w for w in s.exec(select(WatchState)).scalars()}

    def update_watch_state(self, watch_id: str, **values: Any) -> None:
        """Small state changes outside a poll commit (skips, failures without a snapshot)."""
        with self.session() as s:
            row = s.get(WatchState, watch_id) or WatchState(watch_id=watch_id)
            for k, v in values.items():
                setattr(row, k, v)
            s.add(row)
            s.commit()

    def load_tracked(self, watch_id: str) -> dict[str, Tracked]:
        with self.session() as s:
            rows = s.exec(select(SnapshotRow).where(SnapshotRow.watch_id == watch_id)).scalars()
            return {
                r.product_id: Tracked(product_from_row(r), present=r.present, missed=r.missed)
                for r in rows
            }

    def price_history(
        self, watch_id: str, product_ids: Iterable[str]
    ) -> dict[str, list[PricePoint]]:
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
                .order_by(HistoryRow.at, HistoryRow.id)
            ).all()
        for pid, at, price in rows:
            out[pid].append(PricePoint(at=at, price=Decimal(price)))
        return out

    def product_history(self, product_id: str) -> list[HistoryRow]:
        with self.session() as s:
            return list(
                s.exec(
                    select(HistoryRow)
                    .where(HistoryRow.product_id == product_id)
                    .order_by(HistoryRow.at, HistoryRow.id)
                ).scalars()
            )

    def last_alerted(
        self, watch_id: str, product_ids: Iterable[str]
    ) -> dict[tuple[str, str], datetime]:
        ids = list(product_ids)
        if not ids:
            return {}
        with self.session() as s:
            rows = s.exec(
                select(AlertRow.rule_id, AlertRow.product_id, func.max(AlertRow.detected_at))
                .where(AlertRow.watch_id == watch_id)
                .where(AlertRow.rule_id.is_not(None))  # type: ignore[union-attr]
                .where(AlertRow.product_id.in_(ids))  # type: ignore[union-attr]
                .group_by(AlertRow.rule_id, AlertRow.product_id)
            ).all()
        return {(r, p): at for r, p, at in rows}

    # ------------------------------------------------------------ the poll commit

    def ensure_watch(self, watch_id: str) -> WatchState:
        """The watch's state row, created on first sight (a lost creation race is harmless)."""
        with self.session() as s:
            row = s.get(WatchState, watch_id)
            if row is not None:
                return row
            row = WatchState(watch_id=watch_id)
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                row = s.get(WatchState, watch_id)
                assert row is not None
            return row

    def commit_poll(self, w: PollWrite) -> bool:
        """Write a poll's snapshot, history, alerts, deliveries and state atomically.

        The first statement claims the next seq with a conditional UPDATE, which takes the
        write lock and refuses a second commit of the same poll (returns False).
        """
        with self.session() as s, s.begin():
            conn = s.connection()
            ws = WatchState.__table__
            claimed = conn.execute(
                update(ws)
                .where(ws.c.watch_id == w.watch_id)
                .where(ws.c.seq == w.expected_seq)
                .values(seq=w.expected_seq + 1, **w.state)
            )
            if claimed.rowcount != 1:
                s.rollback()
                return False
            if w.replace_snapshot:
                conn.execute(delete(SnapshotRow).where(SnapshotRow.watch_id == w.watch_id))
            fresh = [
                t for t in w.upserts if w.replace_snapshot or t.product.id not in w.existing_ids
            ]
            stale = [
                t for t in w.upserts if not w.replace_snapshot and t.product.id in w.existing_ids
            ]
            if fresh:
                conn.execute(
                    insert(SnapshotRow), [snapshot_values(w.watch_id, t, w.now) for t in fresh]
                )
            if stale:
                conn.execute(
                    _SNAPSHOT_UPDATE, [_update_params(w.watch_id, t, w.now) for t in stale]
                )
            if w.history:
                conn.execute(
                    insert(HistoryRow),
                    [
                        {
                            "watch_id": w.watch_id,
                            "product_id": t.product.id,
                            "seq": w.expected_seq + 1,
                            "at": w.now,
                            "price": _str(t.product.price),
                            "original_price": _str(t.product.original_price),
                            "discount_percent": t.product.discount_percent,
                            "rank": t.product.rank,
                            "sold": t.product.sold,
                            "present": present,
                        }
                        for t, present in w.history
                    ],
                )
            self._insert_alerts(s, w.alerts, w.now)
        return True

    def add_alerts(
        self, alerts: list[tuple[Alert, list[tuple[str, str]]]], now: datetime | None = None
    ) -> int:
        """Store notices outside a poll commit; returns how many were new."""
        with self.session() as s, s.begin():
            return self._insert_alerts(s, alerts, as_utc(now or utcnow()))

    @staticmethod
    def _insert_alerts(
        s: Session, alerts: list[tuple[Alert, list[tuple[str, str]]]], now: datetime
    ) -> int:
        added = 0
        for alert, targets in alerts:
            if s.get(AlertRow, alert.alert_id) is not None:
                continue  # the same transition re-processed: one alert_id, once
            s.add(
                AlertRow(
                    alert_id=alert.alert_id,
                    kind=alert.kind,
                    rule_id=alert.rule_id,
                    watch_id=alert.watch_id,
                    product_id=alert.product.id if alert.product else None,
                    detected_at=as_utc(alert.detected_at),
                    batch=alert.batch,
                    payload=alert_to_payload(alert),
                )
            )
            s.flush()
            for channel, target in dict.fromkeys(targets):
                s.add(
                    DeliveryRow(
                        alert_id=alert.alert_id,
                        channel=channel,
                        target=target,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
            added += 1
        return added

    # ------------------------------------------------------------ outbox

    def due_deliveries(
        self, now: datetime, channels: Iterable[str] | None = None
    ) -> list[tuple[DeliveryRow, Alert]]:
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
            return [(d, alert_from_row(a)) for d, a in s.exec(q).all()]

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
                .values(status="sent", sent_at=as_utc(now), attempts=DeliveryRow.attempts + 1)
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
    ) -> list[tuple[Alert, list[DeliveryRow]]]:
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
                ds = list(
                    s.exec(select(DeliveryRow).where(DeliveryRow.alert_id == a.alert_id)).scalars()
                )
                out.append((alert_from_row(a), ds))
        return out

    def delivery_counts(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.exec(
                select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status)
            ).all()
        return dict(rows)

    # ------------------------------------------------------------ credits and providers

    def add_credits(self, provider: str, day: date, credits: int, requests: int) -> None:
        with self.session() as s, s.begin():
            row = s.get(CreditRow, (provider, day.isoformat()))
            if row is None:
                row = CreditRow(provider=provider, day=day.isoformat())
            row.credits += credits
            row.requests += requests
            s.add(row)

    def credits_on(self, provider: str, day: date) -> int:
        with self.session() as s:
            row = s.get(CreditRow, (provider, day.isoformat()))
            return row.credits if row else 0

    def provider_state(self, provider: str) -> ProviderState | None:
        with self.session() as s:
            return s.get(ProviderState, provider)

    def set_provider_state(self, provider: str, **values: Any) -> None:
        with self.session() as s, s.begin():
            row = s.get(ProviderState, provider) or ProviderState(provider=provider)
            for k, v in values.items():
                setattr(row, k, v)
            s.add(row)


_SNAPSHOT_COLUMNS = [
    c.name for c in SnapshotRow.__table__.c if c.name not in ("watch_id", "product_id")
]
_SNAPSHOT_UPDATE = (
    update(SnapshotRow.__table__)
    .where(SnapshotRow.__table__.c.watch_id == bindparam("b_watch"))
    .where(SnapshotRow.__table__.c.product_id == bindparam("b_product"))
    .values({c: bindparam(c) for c in _SNAPSHOT_COLUMNS})
)


def _update_params(watch_id: str, t: Tracked, now: datetime) -> dict[str, Any]:
    v = snapshot_values(watch_id, t, now)
    v["b_watch"] = v.pop("watch_id")
    v["b_product"] = v.pop("product_id")
    return v


def _make_engine(url: str, *, echo: bool) -> Engine:
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


__all__ = [
    "AlertRow",
    "DeliveryRow",
    "HistoryRow",
    "PollWrite",
    "Store",
    "WatchState",
    "utcnow",
]
