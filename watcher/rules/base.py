"""What a rule kind is, and the registry every kind joins (``register``).

A kind is one class in one module under ``watcher/rules/kinds/``: its ``name`` (the
``when:`` of a rule), its one-line user ``doc``, its typed ``params`` (the config loader,
``watcher check``, ``/rules`` and the example-file meta-test read them), the watch types it
applies to, and its behaviour: ``fire`` (pure: a change in, a detail dict or None out), the
``values`` that identify the transition (part of the ``alert_id``), its ``headline`` and the
value ``lines`` a message shows. Nothing here imports the config: a rule gets its
parameters as a plain mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from watcher.formatting import standard_lines
from watcher.identity import decimal_text
from watcher.kinds import WATCH_TYPES, Param
from watcher.models import Change, EventKind, LastAlert, PricePoint, Product

if TYPE_CHECKING:
    from watcher.configschema import WatchConfig

Detail = dict[str, Any]
Value = str | int | None
Params = Mapping[str, Any]

APPEARED = frozenset({EventKind.NEW_ITEM, EventKind.RETURNED_ITEM})
HUNDRED = Decimal(100)
PRICED = frozenset({"store", "showcase", "search"})  # watch types whose products have prices
STOCKED = frozenset({"store", "showcase"})  # watch types that track stock


@dataclass(frozen=True)
class RuleContext:
    """What a rule may look at besides the change itself.

    ``history``: product id → earlier recorded prices, oldest first, *not* including the
    price of the current poll. ``last_alerted``: (rule id, product id) → when that rule last
    alerted for that product on this watch, and the product as it was then.
    """

    now: datetime
    watch: WatchConfig
    history: Mapping[str, Sequence[PricePoint]]
    last_alerted: Mapping[tuple[str, str], LastAlert]


class RuleKind:
    """One ``when`` kind. Subclass it in its own module and decorate it with ``@register``."""

    name: ClassVar[str]
    doc: ClassVar[str]  # one line: the user documentation of the kind
    headline: ClassVar[str]  # "Price drop: <title>"
    params: ClassVar[Mapping[str, Param]] = {}
    watch_types: ClassVar[frozenset[str] | None] = None  # the types it may name; None = all
    one_of: ClassVar[tuple[str, ...]] = ()  # at least one of these optional keys must be set

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        """The detail of an alert when ``change`` triggers the rule, else None."""
        raise NotImplementedError

    def values(self, previous: Product | None, product: Product) -> tuple[Value, Value]:
        """The (old, new) values that identify the transition (default: the prices)."""
        return price_values(previous, product)

    def better(self, last: Product, product: Product) -> bool:
        """Whether ``product`` is strictly better than it was at this rule's last alert: a
        repeat inside the cooldown then still alerts (a new low is never swallowed). Kinds
        without an order (new item, stock) never are."""
        return False

    def lines(self, product: Product, previous: Product | None) -> list[str]:
        """The old → new lines of a message, plain text (default: price, then rank moves)."""
        return standard_lines(product, previous)

    def settings(self, given: Params) -> dict[str, Any]:
        """Every parameter of the kind: the given value, else the declared default."""
        return {key: given.get(key, p.default) for key, p in self.params.items()}


def cheaper(price: Decimal | None, than: Decimal | None) -> bool:
    """Strictly cheaper than at the last alert: what lets a repeat through a cooldown (a
    rule's and a track's alike)."""
    return price is not None and than is not None and price < than


def lower_price(last: Product, product: Product) -> bool:
    """The ``better`` of the price kinds: strictly cheaper than at the last alert."""
    return cheaper(product.price, last.price)


def price_values(previous: Product | None, product: Product) -> tuple[Value, Value]:
    """The canonical old and new prices: what a price transition is identified by."""
    return decimal_text(previous.price if previous else None), decimal_text(product.price)


RULE_KINDS: dict[str, RuleKind] = {}
_K = TypeVar("_K", bound=type[RuleKind])


def register(cls: _K) -> _K:
    """Add a kind to ``RULE_KINDS`` under its ``name``, checking its declaration."""
    name = getattr(cls, "name", "")
    doc = getattr(cls, "doc", "").strip()
    if not name or name in RULE_KINDS:
        raise ValueError(f"rule kind {name!r} is registered twice or has no name")
    if not doc or "\n" in doc or not getattr(cls, "headline", ""):
        raise ValueError(f"rule kind {name!r} needs a one-line doc and a headline")
    if not set(cls.one_of) <= set(cls.params):
        raise ValueError(f"rule kind {name!r}: one_of names keys it does not declare")
    if cls.watch_types is not None and not cls.watch_types <= set(WATCH_TYPES):
        raise ValueError(f"rule kind {name!r}: unknown watch types in watch_types")
    RULE_KINDS[name] = cls()
    return cls
