"""``sold_spike``: units sold since the last poll grew by a number or a percentage.

For affiliates watching what sells. With both ``min_units`` and ``min_percent`` set, either
one suffices (it is a spike if it is big in units *or* big for the product). No alert when
either count is unknown, for a product that is new or returns after being removed (its last
count is older than the last poll), or when the count did not grow. From a count of 0 the
percentage is undefined, so only ``min_units`` can fire.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from watcher.formatting import count_text, price_lines, standard_lines
from watcher.models import Change, EventKind, Product
from watcher.param import Param
from watcher.rules.base import HUNDRED, Detail, Params, RuleContext, RuleKind, Value, register


@register
class SoldSpike(RuleKind):
    name = "sold_spike"
    doc = "Units sold since the last poll grew by >= min_units or >= min_percent (either one)."
    headline = "Sales spike"
    params: ClassVar[dict[str, Param]] = {
        "min_units": Param("positive_int", doc="units sold since the last poll"),
        "min_percent": Param("decimal", doc="growth of the sold count in percent"),
    }
    one_of = ("min_units", "min_percent")

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        if EventKind.SOLD_CHANGE not in change.events or change.events & {
            EventKind.NEW_ITEM,
            EventKind.RETURNED_ITEM,
        }:
            return None
        old = change.old.sold if change.old else None
        new = change.new.sold
        if old is None or new is None or new <= old:
            return None
        units = new - old
        min_units, min_percent = params["min_units"], params["min_percent"]
        by_units = min_units is not None and units >= min_units
        # units / old * 100 >= min_percent, compared without division: exact.
        by_percent = min_percent is not None and old > 0 and units * HUNDRED >= min_percent * old
        if not (by_units or by_percent):
            return None
        growth = (units * HUNDRED / old).quantize(Decimal("0.1")) if old > 0 else None
        return {
            "old_sold": old,
            "new_sold": new,
            "units": units,
            "growth_percent": None if growth is None else str(growth),
        }

    def values(self, previous: Product | None, product: Product) -> tuple[Value, Value]:
        return (previous.sold if previous else None), product.sold

    def lines(self, product: Product, previous: Product | None) -> list[str]:
        old = previous.sold if previous else None
        line = f"{count_text(old)} → {count_text(product.sold)} sold"
        if old is not None and product.sold is not None and product.sold > old:
            line += f" (+{count_text(product.sold - old)} since the last poll)"
        return standard_lines(product, previous, [line, *price_lines(product, previous)])
