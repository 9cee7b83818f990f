"""Rule kinds (spec section 5) and ``evaluate``: every rule over every change of one poll.

Pure: a function of (changes, history, recent alerts, ``now``). A ``None`` value never
triggers a rule; threshold rules fire on the *crossing*, and a previous ``None`` counts as
not meeting the threshold. Money is ``Decimal`` throughout; percent comparisons are exact.
Each kind is one module under ``watcher/rules/kinds/`` (see ``watcher.rules.base``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

from watcher.models import AlertDraft, Change
from watcher.rules import kinds as _kinds  # noqa: F401  (registers every kind)
from watcher.rules.base import (
    RULE_KINDS,
    Detail,
    Params,
    RuleContext,
    RuleKind,
    Value,
    price_values,
    register,
)

if TYPE_CHECKING:
    from watcher.configschema import MatchConfig, RuleConfig, WatchConfig


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
        kind = RULE_KINDS.get(rule.when)
        if kind is None:
            raise ValueError(f"rule {rule.id!r}: unknown kind {rule.when!r}")
        if not rule.applies_to(watch.id) or (
            kind.watch_types is not None and watch.type not in kind.watch_types
        ):
            continue
        params = kind.settings(rule.params)
        for change in changes:
            key = (rule.id, change.product_id)
            if key in fired or not matches(rule.match, change):
                continue
            detail = kind.fire(params, change, ctx)
            if detail is None or _cooling_down(rule, kind, key, change, ctx):
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


def _cooling_down(
    rule: RuleConfig, kind: RuleKind, key: tuple[str, str], change: Change, ctx: RuleContext
) -> bool:
    """Inside the rule's cooldown for this product, and not strictly better than at its last
    alert (SPEC §5: a new low is never swallowed; an equal or worse repeat is dropped)."""
    last = ctx.last_alerted.get(key)
    if last is None or ctx.now - last.at >= rule.cooldown:
        return False
    return last.product is None or not kind.better(last.product, change.new)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


__all__ = [
    "RULE_KINDS",
    "Detail",
    "Params",
    "RuleContext",
    "RuleKind",
    "Value",
    "evaluate",
    "matches",
    "price_values",
    "register",
]
