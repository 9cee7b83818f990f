"""Tables of the watcher database and the conversions between rows and value types.

Datetimes are aware UTC (sqlmodel's UTCDateTime); Decimal prices are TEXT so they
round-trip exactly on every backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Index, UniqueConstraint, bindparam, update
from sqlmodel import Field, SQLModel

from ..models import Alert, Delivery, Product, ProviderState, Tracked, WatchState
from ..models import product_dict as product_to_json  # the one Product → JSON
from ..rules.tracks import Track

SCHEMA_VERSION = 6  # meta.schema_version; the Alembic revisions are in migrations/versions


# ---------------------------------------------------------------- tables


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class WatchStateRow(SQLModel, table=True):
    __tablename__ = "watch_state"
    watch_id: str = Field(primary_key=True)
    def_hash: str = ""
    baseline_done: bool = False
    baseline_partial: bool = False  # the baseline poll had a failed page
    baseline_seq: int = 0  # seq the current baseline replaced: older history is another definition
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
        Index("ix_history_at", "at"),  # history_retention
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
    __table_args__ = (
        # the cooldown lookup: last alert of (watch, product, rule)
        Index("ix_alert_cooldown", "watch_id", "product_id", "rule_id", "detected_at"),
        Index("ix_alert_detected_at", "detected_at"),  # /alerts, retention
    )
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
        Index("ix_delivery_claim", "claim"),
    )
    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(foreign_key="alert.alert_id")
    channel: str
    target: str = ""
    status: str = "pending"  # pending | sent | dead
    held: bool = False  # held by quiet hours or /mute: delivered as one digest when it ends
    claim: str | None = None  # the dispatcher that took it last (see Store.claim_due)
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


class Subscription(SQLModel, table=True):
    """A chat's /subscribe: scope is "rule", "watch" or "all" (name "" for all)."""

    __tablename__ = "subscription"
    channel: str = Field(primary_key=True)
    chat_id: int = Field(primary_key=True, sa_type=BigInteger)  # supergroups: -100…, 64-bit
    scope: str = Field(primary_key=True)
    name: str = Field(default="", primary_key=True)
    created_at: datetime


class Mute(SQLModel, table=True):
    __tablename__ = "mute"
    channel: str = Field(primary_key=True)
    chat_id: int = Field(primary_key=True, sa_type=BigInteger)
    until: datetime


class TrackRow(SQLModel, table=True):
    """A chat's /track: its target on a product of a watch, and what its last alert left."""

    __tablename__ = "track"
    __table_args__ = (
        UniqueConstraint("channel", "chat_id", "product_id", "kind"),
        Index("ix_track_watch_product", "watch_id", "product_id"),  # a poll's tracks
        {"sqlite_autoincrement": True},  # ids never reused: "track:<id>" names one target
    )
    id: int | None = Field(default=None, primary_key=True)
    channel: str
    chat_id: int = Field(sa_type=BigInteger)
    product_id: str
    watch_id: str
    kind: str  # below | drop
    target: str  # Decimal text: the price (below) or the percent (drop)
    reference: str | None = None  # drop: the price the fall is measured from
    alerted_price: str | None = None
    alerted_at: datetime | None = None
    created_at: datetime


class InstanceRow(SQLModel, table=True):
    """A process that claims deliveries; its claims live as long as its heartbeat does."""

    __tablename__ = "instance"
    id: str = Field(primary_key=True)
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    command: str | None = None  # run, once, demo
    serves_bot: bool = False  # the one instance answering the Telegram bot
    poll_workers: str | None = None  # its procrastinate workers' ids, comma-separated
    config_loaded_at: datetime | None = None  # a daemon's config: read at start or reload


class BotUpdateRow(SQLModel, table=True):
    """A bot update a leader took: after a failover, the next leader skips it."""

    __tablename__ = "bot_update"
    channel: str = Field(primary_key=True)
    update_id: int = Field(primary_key=True, sa_type=BigInteger)
    handled_at: datetime = Field(index=True)


class ProviderStateRow(SQLModel, table=True):
    __tablename__ = "provider_state"
    provider: str = Field(primary_key=True)
    paused_until: datetime | None = None
    pause_notified: bool = False


# ---------------------------------------------------------------- conversions


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def decimal_str(value: Decimal | None) -> str | None:
    """A Decimal as stored (TEXT, exact); None stays None."""
    return None if value is None else str(value)


def watch_state_from_row(row: WatchStateRow) -> WatchState:
    """The frozen copy the store hands out: rows never leave the store."""
    return WatchState(**row.model_dump())


def provider_state_from_row(row: ProviderStateRow) -> ProviderState:
    return ProviderState(**row.model_dump())


def delivery_from_row(row: DeliveryRow) -> Delivery:
    assert row.id is not None  # read back from the database
    return Delivery(**row.model_dump())


def track_from_row(row: TrackRow) -> Track:
    assert row.id is not None  # read back from the database
    return Track(
        id=row.id,
        channel=row.channel,
        chat_id=row.chat_id,
        product_id=row.product_id,
        watch_id=row.watch_id,
        kind=row.kind,
        target=Decimal(row.target),
        reference=_dec(row.reference),
        alerted_price=_dec(row.alerted_price),
        alerted_at=row.alerted_at,
        created_at=row.created_at,
    )


def snapshot_values(watch_id: str, t: Tracked, now: datetime) -> dict[str, Any]:
    product = product_to_json(t.product)
    assert product is not None
    product_id = product.pop("id")
    return {
        "watch_id": watch_id,
        "product_id": product_id,
        **product,
        "present": t.present,
        "missed": t.missed,
        "updated_at": now,
    }


def product_from_snapshot(row: SnapshotRow) -> Product:
    """A snapshot row's product (its decimals stored as their exact text)."""
    values = {f: getattr(row, f) for f in Product.__dataclass_fields__ if f != "id"}
    for k in ("price", "original_price", "rating"):
        values[k] = _dec(values[k])
    return Product(row.product_id, **values)


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


_SNAPSHOT_COLUMNS = [
    c.name for c in SnapshotRow.__table__.c if c.name not in ("watch_id", "product_id")
]
# one executemany UPDATE of snapshot rows, fed by ``snapshot_update_params``
SNAPSHOT_UPDATE = (
    update(SnapshotRow.__table__)
    .where(SnapshotRow.__table__.c.watch_id == bindparam("b_watch"))
    .where(SnapshotRow.__table__.c.product_id == bindparam("b_product"))
    .values({c: bindparam(c) for c in _SNAPSHOT_COLUMNS})
)


def snapshot_update_params(watch_id: str, t: Tracked, now: datetime) -> dict[str, Any]:
    v = snapshot_values(watch_id, t, now)
    v["b_watch"] = v.pop("watch_id")
    v["b_product"] = v.pop("product_id")
    return v
