"""``price_drop``: the price fell since the last poll."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from watcher.models import Change, EventKind
from watcher.param import Param
from watcher.rules.base import (
    HUNDRED,
    PRICED,
    Detail,
    Params,
    RuleContext,
    RuleKind,
    lower_price,
    register,
)


@register
class PriceDrop(RuleKind):
    name = "price_drop"
    doc = "Price fell since last seen by at least min_percent (default 0) and min_amount if set."
    headline = "Price drop"
    params: ClassVar[dict[str, Param]] = {
        "min_percent": Param("decimal", doc="minimum drop in percent (default 0)"),
        "min_amount": Param("decimal", doc="minimum drop in currency units (and min_percent)"),
    }
    watch_types = PRICED
    better = staticmethod(lower_price)  # a new low inside the cooldown alerts

    def fire(self, params: Params, change: Change, ctx: RuleContext) -> Detail | None:
        if not change.events & {EventKind.PRICE_CHANGE, EventKind.RETURNED_ITEM}:
            return None
        old = change.old.price if change.old else None
        new = change.new.price
        if old is None or new is None or old <= 0 or new >= old:
            return None
        drop = old - new
        # drop / old * 100 >= min_percent, compared without division: exact.
        if drop * HUNDRED < (params["min_percent"] or 0) * old:
            return None
        if params["min_amount"] is not None and drop < params["min_amount"]:
            return None
        return {
            "old_price": str(old),
            "new_price": str(new),
            "drop_amount": str(drop),
            "drop_percent": str((drop * HUNDRED / old).quantize(Decimal("0.1"))),
        }
