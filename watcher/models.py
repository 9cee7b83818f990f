"""Frozen value types shared by the pure core (normalise, diff, rules) and the I/O edges.

Nothing here does I/O. Money is always ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class Product:
    """One product (or KeyAPI category row) as seen by one watch in one poll."""

    id: str
    title: str | None = None
    url: str | None = None
    image_url: str | None = None
    currency: str | None = None
    price: Decimal | None = None
    original_price: Decimal | None = None
    discount_percent: int | None = None
    sold: int | None = None
    rating: Decimal | None = None
    reviews: int | None = None
    rank: int | None = None
    shop_id: str | None = None
    shop_name: str | None = None


PRODUCT_FIELDS: tuple[str, ...] = tuple(Product.__dataclass_fields__)


def product_dict(
    p: Product | None, fields: tuple[str, ...] = PRODUCT_FIELDS
) -> dict[str, Any] | None:
    """``fields`` of ``p`` in that order, decimals as their exact text: the one JSON shape of
    a product (stored snapshots and payloads use every field; the webhook body a subset)."""
    if p is None:
        return None
    return {f: (str(v) if isinstance(v, Decimal) else v) for f in fields for v in (getattr(p, f),)}


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll of one watch read from upstream.

    ``complete``: every page requested succeeded (no failed page).
    ``exhausted``: paging stopped because upstream had no more (not because of ``max_pages``).
    Only a complete *and* exhausted poll may remove products; a complete poll updates ranks.
    ``products`` carry 1-based ``rank`` across all pages read, in upstream order, de-duplicated
    by id (first occurrence wins).
    """

    products: tuple[Product, ...]
    complete: bool
    exhausted: bool
    not_found: bool = False
    errors: tuple[str, ...] = ()
    pages: int = 0
    credits: int = 0


class EventKind(StrEnum):
    NEW_ITEM = "new_item"
    REMOVED_ITEM = "removed_item"
    RETURNED_ITEM = "returned_item"
    PRICE_CHANGE = "price_change"
    DISCOUNT_CHANGE = "discount_change"
    RANK_CHANGE = "rank_change"
    SOLD_CHANGE = "sold_change"


@dataclass(frozen=True, slots=True)
class Tracked:
    """Stored state of one (watch, product) pair: last known values plus presence bookkeeping.

    ``present`` is False once the product counted as removed (section 4 of the spec).
    ``missed`` counts consecutive complete polls in which it was absent.
    """

    product: Product
    present: bool = True
    missed: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """Everything one poll found about one product: the events and the values on both sides.

    ``old`` is the stored product before the poll (None for a new item); ``new`` is the product
    after the poll (for a removal, the last known values with ``rank`` None).
    """

    product_id: str
    old: Product | None
    new: Product
    events: frozenset[EventKind]


@dataclass(frozen=True, slots=True)
class DiffResult:
    """Output of ``diff``: the changes to evaluate and the state to store.

    ``tracked`` is the full new state for the watch (every product ever seen since baseline).
    ``history`` lists product ids whose price, discount, rank, sold or presence changed
    (a history row is written for each). ``empty`` is True when the poll read no product at all.
    """

    changes: tuple[Change, ...]
    tracked: dict[str, Tracked]
    history: tuple[str, ...]
    empty: bool = False
    baseline: bool = False


@dataclass(frozen=True, slots=True)
class LastAlert:
    """When a rule last alerted for a product, and the product as that alert showed it: a
    repeat inside the cooldown goes out only when it is strictly better."""

    at: datetime
    product: Product | None = None


@dataclass(frozen=True, slots=True)
class PricePoint:
    at: datetime
    price: Decimal


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One recorded change of one product, as one watch saw it (charts, ``watcher history``).

    ``price`` None: the price was unknown at that poll; ``present`` False: the product
    counted as removed then.
    """

    watch_id: str
    product_id: str
    at: datetime
    price: Decimal | None = None
    original_price: Decimal | None = None
    discount_percent: int | None = None
    rank: int | None = None
    sold: int | None = None
    present: bool = True


@dataclass(frozen=True, slots=True)
class ProductHistory:
    """What ``watcher history`` and /history show of one product: its recorded changes,
    oldest first, with the latest snapshot for its title and currency.

    ``polled_until``: the last successful poll of the watches that saw it. A poll in which
    nothing changed writes no history row, so the last price held at least until then.
    """

    product_id: str
    points: tuple[HistoryPoint, ...]
    product: Product | None = None
    polled_until: datetime | None = None

    @property
    def title(self) -> str:
        return (self.product.title if self.product else None) or f"Product {self.product_id}"

    @property
    def currency(self) -> str | None:
        return self.product.currency if self.product else None


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """A rule firing, before it gets an id and is stored. Produced by the pure rule layer."""

    rule_id: str
    kind: str
    watch_id: str
    product: Product
    previous: Product | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Alert:
    """A persisted alert or notice: the exact payload every channel renders from.

    Notices (``kind`` starting with ``watch_`` or ``provider_``) have ``rule_id`` and
    ``product`` None.
    """

    alert_id: str
    kind: str
    watch_id: str | None
    detected_at: datetime
    rule_id: str | None = None
    product: Product | None = None
    previous: Product | None = None
    message: str = ""
    channels: tuple[str, ...] = ()
    batch: str = ""

    @property
    def is_notice(self) -> bool:
        return self.rule_id is None


@dataclass(frozen=True, slots=True)
class WatchState:
    """A watch's stored state, as the store hands it out (a copy: never a live row).

    ``seq`` advances with every poll that writes a change; the health fields (failures,
    episodes, last poll and error) are ``health.Health``'s, stored in the same row.
    """

    watch_id: str
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


@dataclass(frozen=True, slots=True)
class ProviderState:
    """A provider's stored pause (HTTP 402): until when, and whether the episode was told."""

    provider: str
    paused_until: datetime | None = None
    pause_notified: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: an alert for one (channel, target), as the store hands it out.

    ``status`` is pending, sent or dead; ``held`` marks a delivery kept back by quiet hours
    or a mute (it goes out in one digest when the hold ends); ``claim`` names the pass that
    took it last.
    """

    id: int
    alert_id: str
    channel: str
    target: str
    status: str
    attempts: int
    next_attempt_at: datetime
    held: bool = False
    claim: str | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChatSubscription:
    """A chat's /subscribe: ``scope`` is "rule", "watch" or "all" (``name`` "" for all)."""

    channel: str
    chat_id: int
    scope: str
    name: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """A registered process, as the store hands it out: where it runs, what it runs (``run``,
    ``once``, ``demo``; None from a watcher before cluster mode), its heartbeat, whether it
    answers the Telegram bot, and whether it is ``alive`` (beating within the timeout)."""

    id: str
    host: str
    pid: int
    command: str | None
    started_at: datetime
    heartbeat_at: datetime
    serves_bot: bool
    alive: bool
    config_loaded_at: datetime | None = None  # a daemon's: when it read the config it runs
