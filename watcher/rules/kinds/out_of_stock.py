"""``out_of_stock``: a store or showcase product was removed."""

from __future__ import annotations

from watcher.formatting import format_money, standard_lines
from watcher.models import Change, EventKind, Product
from watcher.rules.base import STOCKED, Detail, Params, RuleContext, RuleKind, Value, register


@register
class OutOfStock(RuleKind):
    name = "out_of_stock"
    doc = "A store or showcase product was removed (missing in missing_after full polls in a row)."
    headline = "Out of stock"
    watch_types = STOCKED

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        ok = ctx.watch.tracks_stock and EventKind.REMOVED_ITEM in change.events
        return {} if ok else None

    def values(self, previous: Product | None, product: Product) -> tuple[Value, Value]:
        return "present", "absent"

    def lines(self, product: Product, previous: Product | None) -> list[str]:
        last = format_money(product.price, product.currency)
        return standard_lines(product, previous, [f"No longer listed (last price {last})"])
