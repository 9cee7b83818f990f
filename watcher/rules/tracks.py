"""Personal targets (``/track``): one chat's own price target on a product a watch covers.

Pure: ``evaluate_tracks(changes, tracks, now)`` says which tracks a poll's changes fire,
and what each track remembers afterwards; the store reads and writes the tracks, the
pipeline turns the hits into alerts (``pipeline.decision.track_alert``) in the poll's own
transaction. Money is ``Decimal``; percent comparisons are exact.

- ``below P`` fires when the price crosses to <= P (a previous price above P, or none). A
  product already <= P when the track is set fires at its next crossing.
- ``drop N%`` fires when the price has fallen by >= N% from the track's reference: the
  price when the track was set, then the price at its last alert (a further N% fall alerts
  again).
- Like a rule's ``cooldown`` (6 h), a track does not alert again within ``TRACK_COOLDOWN``
  of its last alert unless the price is strictly lower than it was then; a suppressed alert
  is dropped, not deferred.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from watcher.models import Change, EventKind, Product
from watcher.rules.base import cheaper

BELOW = "below"
DROP = "drop"
TRACK_PREFIX = "track:"  # the rule id of a track's alerts: "track:<id>"
TRACK_COOLDOWN = timedelta(hours=6)
_HUNDRED = Decimal(100)
_PRICE_EVENTS = frozenset({EventKind.PRICE_CHANGE, EventKind.RETURNED_ITEM})


@dataclass(frozen=True, slots=True)
class Track:
    """A chat's target on one product of one watch, as the store hands it out.

    ``target`` is the price (``below``) or the percent (``drop``); ``reference`` is the price
    a ``drop`` is measured from; ``alerted_price`` and ``alerted_at`` are those of its last
    alert (the cooldown's memory).
    """

    id: int
    channel: str
    chat_id: int
    product_id: str
    watch_id: str
    kind: str  # BELOW | DROP
    target: Decimal
    reference: Decimal | None = None
    alerted_price: Decimal | None = None
    alerted_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def rule_id(self) -> str:
        """What its alerts carry as their rule (``watcher alerts`` shows it)."""
        return f"{TRACK_PREFIX}{self.id}"

    @property
    def alert_kind(self) -> str:
        """Its alerts' kind: the rule kind that means the same, so they read and render alike."""
        return "price_below" if self.kind == BELOW else "price_drop"


@dataclass(frozen=True, slots=True)
class TrackHit:
    """A track fired: the product after the change, what it is compared with (for ``drop``,
    the product at its reference price), and the track as the commit leaves it."""

    track: Track
    product: Product
    previous: Product | None
    after: Track


def is_track_rule(rule_id: str | None) -> bool:
    return rule_id is not None and rule_id.startswith(TRACK_PREFIX)


def priced(changes: Iterable[Change]) -> list[str]:
    """The products whose price may have moved: the only ones whose tracks can fire (a
    poll whose changes are ranks and sales reads no tracks)."""
    return [c.product_id for c in changes if c.events & _PRICE_EVENTS]


def evaluate_tracks(
    changes: Iterable[Change],
    tracks: Iterable[Track],
    now: datetime,
    *,
    cooldown: timedelta = TRACK_COOLDOWN,
) -> list[TrackHit]:
    """The tracks one poll's changes fire, in the order of ``tracks`` (at most one hit each).

    ``tracks`` are those of the polled watch; a track whose product did not change is quiet.
    """
    by_product = {c.product_id: c for c in changes}
    hits = []
    for track in tracks:
        change = by_product.get(track.product_id)
        if change is None or not change.events & _PRICE_EVENTS:
            continue
        hit = _below(track, change, now) if track.kind == BELOW else _drop(track, change, now)
        if hit is not None and not _cooling_down(track, hit.product.price, now, cooldown):
            hits.append(hit)
    return hits


def _below(track: Track, change: Change, now: datetime) -> TrackHit | None:
    new = change.new.price
    if new is None or new > track.target:
        return None
    old = change.old.price if change.old else None
    if old is not None and old <= track.target:
        return None  # it was there already: not a crossing
    after = replace(track, alerted_price=new, alerted_at=now)
    return TrackHit(track, change.new, change.old, after)


def _drop(track: Track, change: Change, now: datetime) -> TrackHit | None:
    ref, new = track.reference, change.new.price
    if ref is None or new is None or ref <= 0 or new >= ref:
        return None
    # (ref - new) / ref * 100 >= target, compared without division: exact
    if (ref - new) * _HUNDRED < track.target * ref:
        return None
    previous = replace(change.old or change.new, price=ref)
    after = replace(track, reference=new, alerted_price=new, alerted_at=now)
    return TrackHit(track, change.new, previous, after)


def _cooling_down(track: Track, price: Decimal | None, now: datetime, cooldown: timedelta) -> bool:
    """Within the cooldown of its last alert, only a strictly lower price alerts again."""
    last, at = track.alerted_price, track.alerted_at
    if at is None or now - at >= cooldown:
        return False
    return not cheaper(price, last)


__all__ = [
    "BELOW",
    "DROP",
    "TRACK_COOLDOWN",
    "TRACK_PREFIX",
    "Track",
    "TrackHit",
    "evaluate_tracks",
    "is_track_rule",
    "priced",
]
