"""Personal targets (``/track``): each chat's tracks, and the products they are on.

The bot adds, lists and removes tracks here; a poll reads the tracks of its changed
products (``tracks_for``, with the rules' context, in the same worker-thread trip) and
writes what their alerts leave (``write_track_hits``) in its own transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from ..models import Tracked
from ..rules.tracks import Track
from ..util import as_utc, utcnow
from .tables import SnapshotRow, TrackRow, decimal_str, product_from_snapshot, track_from_row

_CHUNK = 500  # watch ids per lookup: well below every backend's limit on bound parameters


def write_track_hits(conn: Connection, fired: Sequence[Track]) -> set[int]:
    """Store what each fired track's alert leaves (reference, last alert); returns the ids
    of the tracks still there (an /untrack or a replacing /track since the poll read them
    takes its alert with it)."""
    t = TrackRow.__table__
    alive = set()
    for track in fired:
        done = conn.execute(
            update(t)
            .where(t.c.id == track.id)
            .values(
                reference=decimal_str(track.reference),
                alerted_price=decimal_str(track.alerted_price),
                alerted_at=None if track.alerted_at is None else as_utc(track.alerted_at),
            )
        ).rowcount
        if done:
            alive.add(track.id)
    return alive


def forget_tracks(conn: Connection, channel: str, chat_id: int) -> None:
    """The chat is gone: its tracks go with it (inside ``forget_chat``'s transaction)."""
    conn.execute(
        delete(TrackRow.__table__)
        .where(TrackRow.__table__.c.channel == channel)
        .where(TrackRow.__table__.c.chat_id == chat_id)
    )


def move_tracks(conn: Connection, channel: str, old: int, new: int) -> None:
    """A group became a supergroup: its tracks follow (inside ``migrate_chat``'s
    transaction); a track the new chat has already wins."""
    t = TrackRow.__table__.c
    theirs = select(t.product_id, t.kind).where(t.channel == channel).where(t.chat_id == new)
    taken = {(p, k) for p, k in conn.execute(theirs)}
    for track_id, product_id, kind in conn.execute(
        select(t.id, t.product_id, t.kind).where(t.channel == channel).where(t.chat_id == old)
    ).all():
        q = TrackRow.__table__
        if (product_id, kind) in taken:
            conn.execute(delete(q).where(q.c.id == track_id))
        else:
            conn.execute(update(q).where(q.c.id == track_id).values(chat_id=new))


class TrackStore:
    """Track methods of ``Store`` (it provides ``session``)."""

    session: Any

    def set_track(
        self,
        channel: str,
        chat_id: int,
        product_id: str,
        watch_id: str,
        kind: str,
        target: Decimal,
        reference: Decimal | None,
        *,
        limit: int,
        now: datetime | None = None,
    ) -> tuple[str, Track | None]:
        """Add a track, or replace the chat's track of that kind on that product (a new id,
        its cooldown forgotten). Returns ("added" | "replaced", track), or ("limit", None)
        when the chat has ``limit`` tracks already."""
        with self.session() as s, s.begin():
            rows = TrackRow.__table__.c
            mine = (rows.channel == channel) & (rows.chat_id == chat_id)
            same = mine & (rows.product_id == product_id) & (rows.kind == kind)
            conn = s.connection()
            replaced = conn.execute(delete(TrackRow.__table__).where(same)).rowcount
            count = conn.execute(select(func.count()).select_from(TrackRow).where(mine)).scalar()
            if not replaced and (count or 0) >= limit:
                return "limit", None
            row = TrackRow(
                channel=channel,
                chat_id=chat_id,
                product_id=product_id,
                watch_id=watch_id,
                kind=kind,
                target=str(target),
                reference=decimal_str(reference),
                created_at=as_utc(now or utcnow()),
            )
            s.add(row)
            s.flush()
            return ("replaced" if replaced else "added"), track_from_row(row)

    def tracks(self, channel: str, chat_id: int) -> list[Track]:
        """The chat's tracks, oldest first."""
        with self.session() as s:
            rows = s.exec(
                select(TrackRow)
                .where(TrackRow.channel == channel)
                .where(TrackRow.chat_id == chat_id)
                .order_by(TrackRow.id)  # type: ignore[arg-type]
            ).scalars()
            return [track_from_row(r) for r in rows]

    def untrack(self, channel: str, chat_id: int, product_id: str | None = None) -> int:
        """Remove the chat's tracks of one product (both kinds), or all of them (None)."""
        with self.session() as s, s.begin():
            q = delete(TrackRow).where(TrackRow.channel == channel)
            q = q.where(TrackRow.chat_id == chat_id)
            if product_id is not None:
                q = q.where(TrackRow.product_id == product_id)
            return s.connection().execute(q).rowcount

    def tracks_for(self, watch_id: str, product_ids: Iterable[str]) -> list[Track]:
        """The tracks on these products of this watch (a poll's changed products)."""
        ids = list(product_ids)
        if not ids:
            return []
        with self.session() as s:
            rows = s.exec(
                select(TrackRow)
                .where(TrackRow.watch_id == watch_id)
                .where(TrackRow.product_id.in_(ids))  # type: ignore[attr-defined]
                .order_by(TrackRow.id)  # type: ignore[arg-type]
            ).scalars()
            return [track_from_row(r) for r in rows]

    def snapshot_products(
        self, watch_ids: Iterable[str], product_ids: Iterable[str]
    ) -> dict[tuple[str, str], Tracked]:
        """(watch id, product id) → the product as the watch's latest snapshot has it, for
        every pair of these watches and products that the snapshots know (primary-key
        lookups: what /track and /tracks ask)."""
        watches, products = list(dict.fromkeys(watch_ids)), list(dict.fromkeys(product_ids))
        out: dict[tuple[str, str], Tracked] = {}
        if not products:
            return out
        with self.session() as s:
            for i in range(0, len(watches), _CHUNK):  # a config of 10,000 watches: in chunks
                rows = s.exec(
                    select(SnapshotRow)
                    .where(SnapshotRow.watch_id.in_(watches[i : i + _CHUNK]))  # type: ignore[attr-defined]
                    .where(SnapshotRow.product_id.in_(products))  # type: ignore[attr-defined]
                ).scalars()
                out.update(
                    {
                        (r.watch_id, r.product_id): Tracked(
                            product_from_snapshot(r), present=r.present, missed=r.missed
                        )
                        for r in rows
                    }
                )
        return out
