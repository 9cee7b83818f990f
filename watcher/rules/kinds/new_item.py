"""``new_item``: a product the watch never had."""

from __future__ import annotations

from watcher.models import Change, EventKind, Product
from watcher.rules.base import Detail, Params, RuleContext, RuleKind, Value, register


@register
class NewItem(RuleKind):
    name = "new_item"
    doc = "A product appears that the watch never had since its baseline."
    headline = "New item"

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        return {} if EventKind.NEW_ITEM in change.events else None

    def values(self, previous: Product | None, product: Product) -> tuple[Value, Value]:
        return ("absent" if previous else None), "present"
