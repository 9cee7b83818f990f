"""Rule kinds (spec section 5): one small registered function per ``when``, and ``evaluate``.

Pure: a function of (changes, history, recent alerts, ``now``). A ``None`` value never
triggers a rule; threshold rules fire on the *crossing*, and a previous ``None`` counts as
not meeting the threshold. Money is ``Decimal`` throughout; percent comparisons are exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from watcher.config import MatchConfig, RuleConfig, WatchConfig
from watcher.kinds import RULE_KINDS
from watcher.models import AlertDraft, Change, EventKind, PricePoint

Detail = dict[str, Any]


@dataclass(frozen=True)
class RuleContext:
    """What a rule may look at besides the change itself.

    ``history``: product id → earlier recorded prices, oldest first, *not* including the
    price of the current poll. ``last_alerted``: (rule id, product id) → when that rule last
    alerted for that product on this watch.
    """

    now: datetime
    watch: WatchConfig
    history: Mapping[str, Sequence[PricePoint]]
    last_alerted: Mapping[tuple[str, str], datetime]


RuleFn = Callable[[RuleConfig, Change, RuleContext], Detail | None]

RULES: dict[str, RuleFn] = {}

_APPEARED = frozenset({EventKind.NEW_ITEM, EventKind.RETURNED_ITEM})
_HUNDRED = Decimal(100)


def register(when: str) -> Callable[[RuleFn], RuleFn]:
    """Register a rule function under its ``when`` name (declared in ``kinds.RULE_KINDS``)."""

    def deco(fn: RuleFn) -> RuleFn:
        if when not in RULE_KINDS:
            raise ValueError(f"rule kind {when!r} is not declared in kinds.RULE_KINDS")
        if when in RULES:
            raise ValueError(f"rule kind {when!r} is registered twice")
        RULES[when] = fn
        return fn

    return deco


@register("price_drop")
def price_drop(rule: RuleConfig, change: Change, ctx: RuleContext) -> Detail | None:
    """Price fell since the last poll by at least min_percent (default 0) and min_amount."""
    if not change.events & {EventKind.PRICE_CHANGE, EventKind.RETURNED_ITEM}:
        return None
    old = change.old.price if change.old else None
    new = change.new.price
    if old is None or new is None or old <= 0 or new >= old:
        return None
    drop = old - new
    # drop / old * 100 >= min_percent, compared without division: exact.
    if drop * _HUNDRED < (rule.min_percent or 0) * old:
        return None
    if rule.min_amount is not None and drop < rule.min_amount:
        return None
    return {
        "old_price": str(old),
        "new_price": str(new),
        "drop_amount": str(drop),
        "drop_percent": str((drop * _HUNDRED / old).quantize(Decimal("0.1"))),
    }


@register("price_below")
def price_below(rule: RuleConfig, change: Change, ctx: RuleContext) -> Detail | None:
    """Price crosses to <= target, or a product appears after the baseline already <= it."""
    new = change.new.price
    if rule.target is None or new is None or new > rule.target:
        return None
    old = change.old.price if change.old else None
    appeared = bool(change.events & _APPEARED)
    crossed = EventKind.PRICE_CHANGE in change.events and (old is None or old > rule.target)
    if not (appeared or crossed):
        return None
    return {"target": str(rule.target), "price": str(new)}


@register("discount_at_least")
def discount_at_least(rule: RuleConfig, change: Change, ctx: RuleContext) -> Detail | None:
    """Discount crosses to >= percent, or a product appears after the baseline already >= it."""
    new = change.new.discount_percent
    if rule.percent is None or new is None or new < rule.percent:
        return None
    old = change.old.discount_percent if change.old else None
    appeared = bool(change.events & _APPEARED)
    crossed = EventKind.DISCOUNT_CHANGE in change.events and (old is None or old < rule.percent)
    if not (appeared or crossed):
        return None
    return {"percent": rule.percent, "discount_percent": new}


@register("new_item")
def new_item(rule: RuleConfig, change: Change, ctx: RuleContext) -> Detail | None:
    """A product appears that the watch never had since its baseline."""
    return {} if EventKind.NEW_ITEM in change.events else None


@register("rank_jump")
def rank_jump(rule: RuleConfig, change: Change, ctx: RuleContext) -> Detail | None:
    """Rank improved by min_positions (and is <= top), or entered the top N (top alone)."""
    if not change.events & (_APPEARED | {EventKind.RANK_CHANGE}):
        return None
    new = change.new.rank
    old = change.old.rank if change.old else None
    if new is None:
        return None
    if rule.min_positions is not None:
        # Gaining places needs a previous rank; entering from absent is what `top` is for.
        if old is None or old - new < rule.min_positions:
            return None
        if rule.top is not None and new > rule.top:
            return None
    elif rule.top is not None:
        if new > rule.top or (old is not None and old <= rule.top):
            return None
    else:
        return None
    return {"old_rank": old, "new_rank": new}


@register("out_of_stock")
def out_of_stock(rule: RuleConfig, change: Change, ctx: RuleContext) -> Detail | None:
    """A store or showcase product was removed (absent from missing_after complete polls)."""
    ok = ctx.watch.tracks_stock and EventKind.REMOVED_ITEM in change.events
    return {} if ok else None


@register("back_in_stock")
def back_in_stock(rule: RuleConfig, change: Change, ctx: RuleContext) -> Detail | None:
    """A removed store or showcase product returned."""
    ok = ctx.watch.tracks_stock and EventKind.RETURNED_ITEM in change.events
    return {} if ok else None


@register("lowest_price")
def lowest_price(rule: RuleConfig, change: Change, ctx: RuleContext) -> Detail | None:
    """Price is strictly below every other price recorded in window (and one exists)."""
    if not change.events & {EventKind.PRICE_CHANGE, EventKind.RETURNED_ITEM}:
        return None
    new = change.new.price
    if new is None:
        return None
    start = ctx.now - rule.window
    points = ctx.history.get(change.product_id, ())
    earlier = [p.price for p in points if p.at >= start and p.price is not None]
    before = [p for p in points if p.at < start]
    if before:
        # The last price recorded before the window was still in effect when it began.
        in_effect = max(before, key=lambda p: p.at).price
        if in_effect is not None:
            earlier.append(in_effect)
    if not earlier:
        return None
    low = min(earlier)
    if new >= low:
        return None
    return {"price": str(new), "previous_low": str(low)}


def evaluate(
    rules: Iterable[RuleConfig],
    watch: WatchConfig,
    changes: Iterable[Change],
    ctx: RuleContext,
) -> list[AlertDraft]:
    """Every rule over every change of one poll of ``watch``, after match and cooldown.

    Rules that do not name this watch, or whose kind does not apply to its type, are skipped.
    Drafts come out in rule order, then change order.
    """
    changes = tuple(changes)
    fired: set[tuple[str, str]] = set()
    drafts: list[AlertDraft] = []
    for rule in rules:
        fn = RULES.get(rule.when)
        if fn is None:
            raise ValueError(f"rule {rule.id!r}: unknown kind {rule.when!r}")
        kind_types = RULE_KINDS[rule.when].watch_types
        if not rule.applies_to(watch.id) or (
            kind_types is not None and watch.type not in kind_types
        ):
            continue
        for change in changes:
            key = (rule.id, change.product_id)
            if key in fired or not matches(rule.match, change):
                continue
            detail = fn(rule, change, ctx)
            if detail is None or _cooling_down(rule, key, ctx):
                continue
            fired.add(key)
            drafts.append(
                AlertDraft(
                    rule_id=rule.id,
                    kind=rule.when,
                    watch_id=watch.id,
                    product=change.new,
                    previous=change.old,
                    detail=detail,
                )
            )
    return drafts


def matches(match: MatchConfig, change: Change) -> bool:
    """Whether the product after the change passes the rule's ``match`` filters."""
    p = change.new
    if match.product_ids and change.product_id not in match.product_ids:
        return False
    if match.title is not None and (p.title is None or not _regex(match.title).search(p.title)):
        return False
    if match.min_price is not None and (p.price is None or p.price < match.min_price):
        return False
    if match.max_price is not None and (p.price is None or p.price > match.max_price):
        return False
    return match.min_rating is None or (p.rating is not None and p.rating >= match.min_rating)


def _cooling_down(rule: RuleConfig, key: tuple[str, str], ctx: RuleContext) -> bool:
    last = ctx.last_alerted.get(key)
    return last is not None and ctx.now - last < rule.cooldown


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
