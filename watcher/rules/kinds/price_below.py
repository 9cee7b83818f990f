"""``price_below``: the price reached a target."""

from __future__ import annotations

from typing import ClassVar

from watcher.models import Change, EventKind
from watcher.param import Param
from watcher.rules.base import (
    APPEARED,
    PRICED,
    Detail,
    Params,
    RuleContext,
    RuleKind,
    lower_price,
    register,
)


@register
class PriceBelow(RuleKind):
    name = "price_below"
    doc = "Price crosses to <= target, or a product appears after the baseline already <= it."
    headline = "Price below target"
    params: ClassVar[dict[str, Param]] = {
        "target": Param("decimal", required=True, doc='price, e.g. "30.00"')
    }
    watch_types = PRICED
    better = staticmethod(lower_price)  # a new low inside the cooldown alerts

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        target, new = params["target"], change.new.price
        if target is None or new is None or new > target:
            return None
        old = change.old.price if change.old else None
        appeared = bool(change.events & APPEARED)
        crossed = EventKind.PRICE_CHANGE in change.events and (old is None or old > target)
        if not (appeared or crossed):
            return None
        return {"target": str(target), "price": str(new)}
