"""``discount_at_least``: the discount reached a percentage."""

from __future__ import annotations

from typing import ClassVar

from watcher.formatting import pct, price_or_unknown, standard_lines
from watcher.models import Change, EventKind, Product
from watcher.param import Param
from watcher.rules.base import (
    APPEARED,
    PRICED,
    Detail,
    Params,
    RuleContext,
    RuleKind,
    Value,
    register,
)


@register
class DiscountAtLeast(RuleKind):
    name = "discount_at_least"
    doc = "Discount crosses to >= percent, or a product appears after the baseline already >= it."
    headline = "Discount"
    params: ClassVar[dict[str, Param]] = {"percent": Param("percent", required=True, doc="0..100")}
    watch_types = PRICED

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        percent, new = params["percent"], change.new.discount_percent
        if percent is None or new is None or new < percent:
            return None
        old = change.old.discount_percent if change.old else None
        appeared = bool(change.events & APPEARED)
        crossed = EventKind.DISCOUNT_CHANGE in change.events and (old is None or old < percent)
        if not (appeared or crossed):
            return None
        return {"percent": percent, "discount_percent": new}

    def values(self, previous: Product | None, product: Product) -> tuple[Value, Value]:
        return (previous.discount_percent if previous else None), product.discount_percent

    def better(self, last: Product, product: Product) -> bool:
        d, before = product.discount_percent, last.discount_percent
        return d is not None and before is not None and d > before

    def lines(self, product: Product, previous: Product | None) -> list[str]:
        was = previous.discount_percent if previous else None
        line = f"{pct(was)} → {pct(product.discount_percent)} off · {price_or_unknown(product)}"
        return standard_lines(product, previous, [line])
