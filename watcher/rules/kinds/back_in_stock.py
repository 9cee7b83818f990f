"""``back_in_stock``: a removed store or showcase product returned."""

from __future__ import annotations

from watcher.models import Change, EventKind, Product
from watcher.rules.base import STOCKED, Detail, Params, RuleContext, RuleKind, Value, register


@register
class BackInStock(RuleKind):
    name = "back_in_stock"
    doc = "A removed store or showcase product returned."
    headline = "Back in stock"
    watch_types = STOCKED

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        ok = ctx.watch.tracks_stock and EventKind.RETURNED_ITEM in change.events
        return {} if ok else None

    def values(self, previous: Product | None, product: Product) -> tuple[Value, Value]:
        return ("absent" if previous else None), "present"
