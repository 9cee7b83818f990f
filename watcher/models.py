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
class Page:
    """One upstream page, already normalised (ranks are page-local until the poll assigns them)."""

    products: tuple[Product, ...]
    has_more: bool
    request_id: str | None = None


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
class PricePoint:
    at: datetime
    price: Decimal


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
