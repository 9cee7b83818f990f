"""A poll's writes: the watch's snapshot and state, its history rows, alerts and credits.

Everything one poll produces is written in one transaction by ``commit_poll``: a crash
leaves either all of it or none of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import delete

from ..models import PRODUCT_FIELDS, Alert, Product, Tracked, WatchState, product_dict
from ..rules.tracks import Track
from ..util import utcnow
from .alerts import insert_alerts
from .credits import Credits, increment_credits
from .tables import (
    SNAPSHOT_UPDATE,
    HistoryRow,
    SnapshotRow,
    WatchStateRow,
    snapshot_update_params,
    snapshot_values,
    watch_state_from_row,
)
from .tracks import write_track_hits

# the snapshot columns in ``Product``'s field order (``id`` is ``product_id``)
_PRODUCT_COLUMNS = tuple(f for f in PRODUCT_FIELDS if f != "id")
_DECIMAL_POSITIONS = tuple(
    i for i, f in enumerate(PRODUCT_FIELDS) if f in ("price", "original_price", "rating")
)

# the product fields a history row records (decimals as their exact text, as in snapshots)
HISTORY_FIELDS = ("price", "original_price", "discount_percent", "rank", "sold")

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
    # the tracks that fired, as their alerts leave them, each with its alert and its chat
    track_alerts: list[tuple[Track, Alert, list[tuple[str, str]]]] = field(default_factory=list)
    credits: list[Credits] = field(default_factory=list)  # spent, committed either way
    # the state's last_poll_at the poll started from (UNCHECKED: seq alone guards): every
    # write of a watch's state sets it, so another process's quiet write is caught too
    expected_poll_at: Any = UNCHECKED

    @property
    def changes(self) -> bool:
        """Whether the poll writes anything but the watch's state (and so advances its seq)."""
        writes = (self.upserts, self.history, self.alerts, self.track_alerts)
        return any(writes) or self.replace_snapshot


class PollStore:
    """Watch state and poll-commit methods of ``Store`` (it provides ``session``, ``engine``)."""

    session: Any
    engine: Any

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
                insert_alerts(conn, list(notices), utcnow())
            increment_credits(conn, credits)
        return done

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
            increment_credits(conn, w.credits)
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
                        **(product_dict(t.product, HISTORY_FIELDS) or {}),
                        "present": present,
                    }
                    for t, present in w.history
                ],
            )
        alerts = w.alerts
        if w.track_alerts:  # a track removed since the poll read it takes its alert along
            alive = write_track_hits(conn, [t for t, _, _ in w.track_alerts])
            alerts = alerts + [(a, to) for t, a, to in w.track_alerts if t.id in alive]
        insert_alerts(conn, alerts, w.now)
