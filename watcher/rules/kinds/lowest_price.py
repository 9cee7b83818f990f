"""``lowest_price``: the lowest price recorded in a look-back window."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from watcher.models import Change, EventKind
from watcher.param import Param
from watcher.rules.base import PRICED, Detail, Params, RuleContext, RuleKind, lower_price, register


@register
class LowestPrice(RuleKind):
    name = "lowest_price"
    doc = "Price is strictly below every other price recorded in window (and one exists)."
    headline = "Lowest price"
    params: ClassVar[dict[str, Param]] = {
        "window": Param(
            "duration", doc="look-back window (default 30d)", default=timedelta(days=30)
        )
    }
    watch_types = PRICED
    better = staticmethod(lower_price)  # a new low inside the cooldown alerts

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        if not change.events & {EventKind.PRICE_CHANGE, EventKind.RETURNED_ITEM}:
            return None
        new = change.new.price
        if new is None:
            return None
        start = ctx.now - params["window"]
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
