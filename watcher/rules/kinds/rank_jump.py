"""``rank_jump``: a product climbed the ranking."""

from __future__ import annotations

from typing import ClassVar

from watcher.formatting import price_lines, rank_line
from watcher.models import Change, EventKind, Product
from watcher.param import Param
from watcher.rules.base import APPEARED, Detail, Params, RuleContext, RuleKind, Value, register


@register
class RankJump(RuleKind):
    name = "rank_jump"
    doc = "Rank improved by min_positions (and is <= top), or entered the top N (top alone)."
    headline = "Rank jump"
    params: ClassVar[dict[str, Param]] = {
        "min_positions": Param("positive_int", doc="places gained since last poll"),
        "top": Param("positive_int", doc="new rank must be <= top"),
    }
    one_of = ("min_positions", "top")

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        if not change.events & (APPEARED | {EventKind.RANK_CHANGE}):
            return None
        new = change.new.rank
        old = change.old.rank if change.old else None
        min_positions, top = params["min_positions"], params["top"]
        if new is None:
            return None
        if min_positions is not None:
            # Gaining places needs a previous rank; entering from absent is what `top` is for.
            if old is None or old - new < min_positions:
                return None
            if top is not None and new > top:
                return None
        elif top is not None:
            if new > top or (old is not None and old <= top):
                return None
        else:
            return None
        return {"old_rank": old, "new_rank": new}

    def values(self, previous: Product | None, product: Product) -> tuple[Value, Value]:
        return (previous.rank if previous else None), product.rank

    def better(self, last: Product, product: Product) -> bool:
        r, before = product.rank, last.rank
        return r is not None and before is not None and r < before

    def lines(self, product: Product, previous: Product | None) -> list[str]:
        return [*price_lines(product, previous), rank_line(product, previous)]
