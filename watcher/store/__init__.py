"""The database: sqlmodel tables and the only code that opens sessions.

SQLite (WAL) by default, any SQLAlchemy URL otherwise. Datetimes are aware UTC
(sqlmodel's UTCDateTime).
Decimal prices are stored as TEXT so they round-trip exactly on every backend.
Everything one poll produces (snapshot, history, alerts, deliveries, state) is written in one
transaction by ``commit_poll``: a crash leaves either all of it or none of it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, make_url, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, create_engine, delete

from ..models import (
    PRODUCT_FIELDS,
    Alert,
    HistoryPoint,
    PricePoint,
    Product,
    ProviderState,
    Tracked,
    WatchState,
)
from ..util import as_utc, utcnow
from . import schema
from .chats import ChatStore
from .outbox import CLAIM_LEASE, HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT, OutboxStore
from .tables import (
    SNAPSHOT_UPDATE,
    AlertRow,
    CreditRow,
    DeliveryRow,
    HistoryRow,
    InstanceRow,
    Mute,
    ProviderStateRow,
    SnapshotRow,
    Subscription,
    WatchStateRow,
    alert_to_payload,
    decimal_str,
    product_from_json,
    product_to_json,
    provider_state_from_row,
    snapshot_update_params,
    snapshot_values,
    watch_state_from_row,
)

# the snapshot columns in ``Product``'s field order (``id`` is ``product_id``)
_PRODUCT_COLUMNS = tuple(f for f in PRODUCT_FIELDS if f != "id")
_DECIMAL_POSITIONS = tuple(
    i for i, f in enumerate(PRODUCT_FIELDS) if f in ("price", "original_price", "rating")
)

# ---------------------------------------------------------------- write sets


Credits = tuple[str, date, int, int]  # (provider, UTC day, credits, requests)
UNCHECKED: Any = object()


def _unchanged_since(ws: Any, watch_id: str, seq: int | None, poll_at: Any) -> Any:
    """The WHERE of a guarded state write: the row as the poll found it."""
    cond = ws.c.watch_id == watch_id
    if seq is not None:
        cond &= ws.c.seq == seq
    if poll_at is not UNCHECKED:
        cond &= ws.c.last_poll_at.is_(None) if poll_at is None else ws.c.last_poll_at == poll_at
    return cond


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
    credits: list[Credits] = field(default_factory=list)  # spent, committed either way
    # the state's last_poll_at the poll started from (UNCHECKED: seq alone guards): every
    # write of a watch's state sets it, so another process's quiet write is caught too
    expected_poll_at: Any = UNCHECKED

    @property
    def changes(self) -> bool:
        """Whether the poll writes anything but the watch's state (and so advances its seq)."""
        return bool(self.upserts or self.history or self.alerts or self.replace_snapshot)


def default_db_url() -> str:
    """Spec section 8: $STATE_DIRECTORY under systemd, else ./watcher.db."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    base = Path(state_dir.split(":")[0]) if state_dir else Path.cwd()
    return f"sqlite:///{base / 'watcher.db'}"


class Store(OutboxStore, ChatStore):
    """Opens the database, creates the schema, and offers one method per unit of work."""

    def __init__(
        self,
        url: str | None = None,
        *,
        echo: bool = False,
        must_exist: bool = False,
        migrate: bool = True,
    ) -> None:
        self.url = url or os.environ.get("WATCHER_DB") or default_db_url()
        self.instance_id = uuid.uuid4().hex  # names this Store's claims (see outbox)
        if must_exist:
            _require_existing(self.url)
        self.engine: Engine = _make_engine(self.url, echo=echo)
        try:
            self.schema = schema.upgrade(self.engine)[1] if migrate else None
        except OperationalError as exc:  # unreachable: say where, in one line
            self.engine.dispose()
            shown = make_url(self.url).render_as_string(hide_password=True)
            reason = " ".join(str(exc.orig).split())
            raise RuntimeError(f"cannot open the database {shown}: {reason}") from exc
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def ping(self) -> bool:
        with self.session() as s:
            s.exec(select(1))
        return True

    # ------------------------------------------------------------ watch state

    def watch_state(self, watch_id: str) -> WatchState | None:
        with self.session() as s:
            row = s.get(WatchStateRow, watch_id)
            return None if row is None else watch_state_from_row(row)

    def all_watch_states(self) -> dict[str, WatchState]:
        with self.session() as s:
            rows = s.exec(select(WatchStateRow)).scalars()
            return {w.watch_id: watch_state_from_row(w) for w in rows}

    def update_watch_state(self, watch_id: str, **values: Any) -> None:
        """Small state changes outside a poll commit (skips, failures without a snapshot)."""
        with self.session() as s:
            row = s.get(WatchStateRow, watch_id) or WatchStateRow(watch_id=watch_id)
            for k, v in values.items():
                setattr(row, k, v)
            s.add(row)
            s.commit()

    def load_tracked(self, watch_id: str) -> dict[str, Tracked]:
        """The watch's snapshot: the product columns only, straight into ``Product``s (no
        ORM objects, no timestamps to parse; a ``watcher once`` of many watches reads
        every snapshot, so this is on its hot path)."""
        t = SnapshotRow.__table__
        columns = [t.c.product_id, *(t.c[f] for f in _PRODUCT_COLUMNS), t.c.present, t.c.missed]
        decimals = _DECIMAL_POSITIONS
        out: dict[str, Tracked] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(*columns).where(t.c.watch_id == watch_id)).all()
        for row in rows:
            values = list(row[:-2])
            for i in decimals:
                if values[i] is not None:
                    values[i] = Decimal(values[i])
            out[row[0]] = Tracked(Product(*values), present=row[-2], missed=row[-1])
        return out

    def record_poll(
        self,
        watch_id: str,
        values: dict[str, Any],
        notices: list[tuple[Alert, list[tuple[str, str]]]] = (),  # type: ignore[assignment]
        credits: Iterable[Credits] = (),
        *,
        expected_poll_at: Any = UNCHECKED,
    ) -> bool:
        """A poll that wrote no snapshot (failed, not found): state, notices and credits in
        one transaction, so a crash leaves the notice and the episode flag together.

        With ``expected_poll_at`` the write is refused (False; the credits are still
        written) when another writer touched the watch since the poll read it.
        """
        ws = WatchStateRow.__table__
        with self.engine.begin() as conn:
            done = True
            if values:
                moved = conn.execute(
                    update(ws)
                    .where(_unchanged_since(ws, watch_id, None, expected_poll_at))
                    .values(**values)
                ).rowcount
                if not moved:
                    exists = conn.execute(
                        select(ws.c.watch_id).where(ws.c.watch_id == watch_id)
                    ).first()
                    if exists is None:
                        row = WatchStateRow(watch_id=watch_id).model_dump()
                        conn.execute(insert(ws).values({**row, **values}))
                    else:
                        done = False
            if done:
                self._insert_alerts(conn, list(notices), utcnow())
            self._add_credits(conn, credits)
        return done

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
            row = s.get(WatchStateRow, watch_id)
            if row is not None:
                return watch_state_from_row(row)
            row = WatchStateRow(watch_id=watch_id)
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                row = s.get(WatchStateRow, watch_id)
                assert row is not None
            return watch_state_from_row(row)

    def commit_poll(self, w: PollWrite) -> bool:
        """Write a poll's snapshot, history, alerts, deliveries and state atomically.

        The first statement is a conditional UPDATE of the watch's seq, which takes the write
        lock and refuses a commit that raced another (returns False). The seq advances only
        when the poll writes a change (SPEC section 6): a quiet poll leaves it, so the same
        transition on the same history has the same alert_id however many quiet polls ran.
        """
        new_seq = w.expected_seq + 1 if w.changes else w.expected_seq
        with self.engine.begin() as conn:
            ws = WatchStateRow.__table__
            claimed = conn.execute(
                update(ws)
                .where(_unchanged_since(ws, w.watch_id, w.expected_seq, w.expected_poll_at))
                .values(seq=new_seq, **w.state)
            )
            if claimed.rowcount == 1:
                self._write_poll(conn, w, new_seq)
            self._add_credits(conn, w.credits)
            return claimed.rowcount == 1

    def _write_poll(self, conn: Connection, w: PollWrite, new_seq: int) -> None:
        if w.replace_snapshot:
            conn.execute(delete(SnapshotRow.__table__).where(SnapshotRow.watch_id == w.watch_id))
        fresh = [t for t in w.upserts if w.replace_snapshot or t.product.id not in w.existing_ids]
        stale = [t for t in w.upserts if not w.replace_snapshot and t.product.id in w.existing_ids]
        if fresh:
            conn.execute(
                insert(SnapshotRow), [snapshot_values(w.watch_id, t, w.now) for t in fresh]
            )
        if stale:
            conn.execute(
                SNAPSHOT_UPDATE, [snapshot_update_params(w.watch_id, t, w.now) for t in stale]
            )
        if w.history:
            conn.execute(
                insert(HistoryRow),
                [
                    {
                        "watch_id": w.watch_id,
                        "product_id": t.product.id,
                        "seq": new_seq,
                        "at": w.now,
                        "price": decimal_str(t.product.price),
                        "original_price": decimal_str(t.product.original_price),
                        "discount_percent": t.product.discount_percent,
                        "rank": t.product.rank,
                        "sold": t.product.sold,
                        "present": present,
                    }
                    for t, present in w.history
                ],
            )
        self._insert_alerts(conn, w.alerts, w.now)

    def add_alerts(
        self, alerts: list[tuple[Alert, list[tuple[str, str]]]], now: datetime | None = None
    ) -> int:
        """Store notices outside a poll commit; returns how many were new."""
        with self.engine.begin() as conn:
            return self._insert_alerts(conn, alerts, as_utc(now or utcnow()))

    @staticmethod
    def _insert_alerts(
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

    @staticmethod
    def _add_credits(conn: Connection, credits: Iterable[Credits]) -> None:
        """Atomic increments in the caller's transaction (an upsert on both backends)."""
        summed: dict[tuple[str, str], list[int]] = {}
        for provider, day, n, requests in credits:
            slot = summed.setdefault((provider, day.isoformat()), [0, 0])
            slot[0] += n
            slot[1] += requests
        if not summed:
            return
        t = CreditRow.__table__
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            upsert = pg_insert(t)
        else:
            upsert = sqlite_insert(t)
        upsert = upsert.on_conflict_do_update(
            index_elements=[t.c.provider, t.c.day],
            set_={
                "credits": t.c.credits + upsert.excluded.credits,
                "requests": t.c.requests + upsert.excluded.requests,
            },
        )
        for (provider, day), (n, requests) in sorted(summed.items()):
            conn.execute(upsert.values(provider=provider, day=day, credits=n, requests=requests))

    # ------------------------------------------------------------ retention

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
        never waits behind a big delete; the caller loops until both counts are 0.
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
        return len(ids), history

    # ------------------------------------------------------------ credits and providers

    def add_credits(self, provider: str, day: date, credits: int, requests: int) -> None:
        """Atomic increment: concurrent polls (and processes) must never lose credits."""
        self.add_spent([(provider, day, credits, requests)])

    def add_spent(self, credits: Iterable[Credits]) -> None:
        with self.engine.begin() as conn:
            self._add_credits(conn, credits)

    def credits_on(self, provider: str, day: date) -> int:
        with self.session() as s:
            row = s.get(CreditRow, (provider, day.isoformat()))
            return row.credits if row else 0

    def provider_state(self, provider: str) -> ProviderState | None:
        with self.session() as s:
            row = s.get(ProviderStateRow, provider)
            return None if row is None else provider_state_from_row(row)

    def pause_provider(
        self,
        provider: str,
        until: datetime,
        notices: list[tuple[Alert, list[tuple[str, str]]]] | None = None,
    ) -> bool:
        """Pause a provider until ``until``; True when this starts an episode.

        Atomic: several watches hitting the same 402 at once pause it once, and the episode's
        ``notices`` are stored in the same transaction, so a crash cannot lose them.
        """
        t = ProviderStateRow.__table__
        until = as_utc(until)
        for _ in range(2):
            try:
                with self.session() as s, s.begin():
                    conn = s.connection()
                    fresh = conn.execute(
                        update(t)
                        .where(t.c.provider == provider)
                        .where(t.c.pause_notified.is_(False))
                        .values(paused_until=until, pause_notified=True)
                    )
                    if fresh.rowcount != 1:
                        again = conn.execute(
                            update(t).where(t.c.provider == provider).values(paused_until=until)
                        )
                        if again.rowcount == 1:
                            return False
                        conn.execute(
                            insert(t).values(
                                provider=provider, paused_until=until, pause_notified=True
                            )
                        )
                    self._insert_alerts(conn, notices or [], utcnow())
                    return True
            except IntegrityError:
                continue  # another writer created the row first: update it instead
        return False

    def set_provider_state(self, provider: str, **values: Any) -> None:
        with self.session() as s, s.begin():
            row = s.get(ProviderStateRow, provider) or ProviderStateRow(provider=provider)
            for k, v in values.items():
                setattr(row, k, v)
            s.add(row)


def _require_existing(url: str) -> None:
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
    "CLAIM_LEASE",
    "HEARTBEAT_EVERY",
    "HEARTBEAT_TIMEOUT",
    "UNCHECKED",
    "AlertRow",
    "CreditRow",
    "Credits",
    "DeliveryRow",
    "HistoryRow",
    "InstanceRow",
    "Mute",
    "PollWrite",
    "ProviderState",
    "ProviderStateRow",
    "SnapshotRow",
    "Store",
    "Subscription",
    "WatchState",
    "WatchStateRow",
    "as_utc",
    "product_from_json",
    "product_to_json",
    "snapshot_values",
    "utcnow",
]
