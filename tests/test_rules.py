"""Table tests for watcher.rules (spec section 5).

Single changes: tests/data/core/rules.yaml. Poll-by-poll scenarios through diff and rules:
tests/data/core/scenarios.yaml.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher import rules as rules_module
from watcher.config import MatchConfig, RuleConfig, WatchConfig
from watcher.diff import diff
from watcher.models import (
    Change,
    EventKind,
    LastAlert,
    PollResult,
    PricePoint,
    Product,
    Tracked,
)
from watcher.rules import RULE_KINDS, RuleContext, RuleKind, evaluate, register

DATA = Path(__file__).parent / "data/core"
CASES = yaml.safe_load((DATA / "rules.yaml").read_text())
SCENARIOS = yaml.safe_load((DATA / "scenarios.yaml").read_text())
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PID = "p1"
ALIASES = {"discount": "discount_percent"}
DECIMALS = {"price", "original_price", "rating"}
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def duration(text: str) -> timedelta:
    """``30d1s`` → timedelta."""
    parts = re.fullmatch(r"(?:\d+[dhms])+", text) and re.findall(r"(\d+)([dhms])", text)
    assert parts, f"bad duration {text!r}"
    return timedelta(**{_UNITS[u]: 0 for u in _UNITS} | {_UNITS[u]: int(n) for n, u in parts})


def fields(spec: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in spec.items():
        name = ALIASES.get(key, key)
        out[name] = Decimal(str(value)) if name in DECIMALS and value is not None else value
    return out


def product(spec: str | dict[str, Any], pid: str = PID, **extra: Any) -> Product:
    spec = {"id": spec} if isinstance(spec, str) else {"id": pid, **spec}
    return Product(**fields(spec | extra))


def rule(spec: dict[str, Any]) -> RuleConfig:
    """A RuleConfig from a table row: common keys as fields, the kind's keys in ``params``,
    each converted by its declared ``Param`` type (so a new kind needs no code here)."""
    spec = {"id": "r", "notify": ("c",), **spec}
    kind = RULE_KINDS.get(spec["when"])
    declared = kind.params if kind else {}
    params = {k: _typed(declared[k].type, spec.pop(k)) for k in list(spec) if k in declared}
    if "cooldown" in spec:
        spec["cooldown"] = duration(spec["cooldown"])
    if "watches" in spec:
        spec["watches"] = tuple(spec["watches"])
    if "match" in spec:
        match = dict(spec["match"])
        for key in ("min_price", "max_price", "min_rating"):
            if key in match:
                match[key] = Decimal(str(match[key]))
        match["product_ids"] = tuple(match.get("product_ids", ()))
        spec["match"] = MatchConfig(**match)
    return RuleConfig(**spec, params=params)


def _typed(type_: str, value: Any) -> Any:
    if value is None:
        return None
    if type_ == "decimal":
        return Decimal(str(value))
    return duration(value) if type_ == "duration" else value


def watch(kind: str = "store") -> WatchConfig:
    return WatchConfig(id="w", type=kind)


def context(w: WatchConfig, history=None, last_alerted=None, now: datetime = NOW) -> RuleContext:
    return RuleContext(now=now, watch=w, history=history or {}, last_alerted=last_alerted or {})


# --- single changes ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_rule_table(case: dict[str, Any]) -> None:
    w = watch(case.get("watch", "store"))
    r = rule(case["rule"])
    old = None if case["old"] is None else product(case["old"])
    events = frozenset(map(EventKind, case["events"]))
    change = Change(PID, old, product(case["new"]), events)
    points = [
        PricePoint(NOW - duration(p["ago"]), Decimal(p["price"])) for p in case.get("history", [])
    ]
    history = {PID: points} if points else {}
    alerted = {}
    if "alerted" in case:  # when the rule last alerted, and (optionally) what it showed then
        then = case.get("alerted_product")
        at = NOW - duration(case["alerted"])
        alerted = {(r.id, PID): LastAlert(at, None if then is None else product(then))}
    drafts = evaluate([r], w, [change], context(w, history, alerted))
    expected = case["fires"]
    if expected is False:
        assert drafts == []
        return
    assert len(drafts) == 1
    (draft,) = drafts
    assert (draft.rule_id, draft.kind, draft.watch_id) == ("r", r.when, "w")
    assert draft.product is change.new
    assert draft.previous is change.old
    if expected is not True:
        assert draft.detail == expected


# --- poll-by-poll scenarios -------------------------------------------------------------------


@pytest.mark.parametrize("case", SCENARIOS, ids=[c["id"] for c in SCENARIOS])
def test_scenario(case: dict[str, Any]) -> None:
    w = watch(case.get("watch", "store"))
    rule_set = [rule(r) for r in case["rules"]]
    every = duration(case.get("every", "1h"))
    assert len(case["polls"]) == len(case["fires"]), "one `fires` entry per poll"
    state: dict[str, Tracked] | None = None
    history: dict[str, list[PricePoint]] = {}
    last_alerted: dict[tuple[str, str], LastAlert] = {}
    for step, (spec, want) in enumerate(zip(case["polls"], case["fires"], strict=True)):
        now = NOW + step * every
        spec = {"products": spec} if isinstance(spec, list) else spec
        poll = PollResult(
            products=tuple(product(p, rank=n) for n, p in enumerate(spec["products"], 1)),
            complete=spec.get("complete", True),
            exhausted=spec.get("exhausted", True),
        )
        result = diff(state, poll, missing_after=w.missing_after)
        ctx = context(w, {k: tuple(v) for k, v in history.items()}, dict(last_alerted), now)
        drafts = evaluate(rule_set, w, result.changes, ctx)
        assert [f"{d.rule_id}:{d.product.id}" for d in drafts] == want, f"poll {step + 1}"
        for d in drafts:
            last_alerted[(d.rule_id, d.product.id)] = LastAlert(now, d.product)
        for pid in result.history:
            price = result.tracked[pid].product.price
            points = history.setdefault(pid, [])
            if price is not None and (not points or points[-1].price != price):
                points.append(PricePoint(now, price))
        state = result.tracked


# --- registry and evaluate --------------------------------------------------------------------


def test_every_kind_has_a_one_line_doc_a_headline_and_its_own_behaviour() -> None:
    assert RULE_KINDS
    for name, kind in RULE_KINDS.items():
        assert kind.name == name
        assert kind.doc.strip() and "\n" not in kind.doc, f"{name} needs a one-line doc"
        assert kind.headline, f"{name} needs a headline"
        assert type(kind).fire is not RuleKind.fire, f"{name} needs a fire()"


def _kind(name: str, **attrs: Any) -> type[RuleKind]:
    return type("K", (RuleKind,), {"name": name, "doc": "Doc.", "headline": "H", **attrs})


def test_register_refuses_duplicate_and_undocumented_kinds() -> None:
    with pytest.raises(ValueError, match="twice"):
        register(_kind("price_drop"))
    with pytest.raises(ValueError, match="one-line doc"):
        register(_kind("price_teleport", doc="Two\nlines."))
    with pytest.raises(ValueError, match="one_of"):
        register(_kind("price_teleport", one_of=("nope",)))
    with pytest.raises(ValueError, match="watch types"):
        register(_kind("price_teleport", watch_types=frozenset({"mall"})))
    assert "price_teleport" not in RULE_KINDS


def test_unknown_kind_is_an_error() -> None:
    bad = RuleConfig(id="x", when="price_teleport", notify=("c",))
    with pytest.raises(ValueError, match="price_teleport"):
        evaluate([bad], watch(), [], context(watch()))


def new_change(pid: str, **values: Any) -> Change:
    p = Product(pid, **values)
    return Change(pid, None, p, frozenset({EventKind.NEW_ITEM}))


def test_drafts_come_in_rule_then_change_order() -> None:
    rs = [rule({"id": "one", "when": "new_item"}), rule({"id": "two", "when": "new_item"})]
    changes = [new_change("a"), new_change("b")]
    drafts = evaluate(rs, watch(), changes, context(watch()))
    assert [(d.rule_id, d.product.id) for d in drafts] == [
        ("one", "a"),
        ("one", "b"),
        ("two", "a"),
        ("two", "b"),
    ]


def test_one_alert_per_rule_and_product_per_evaluation() -> None:
    r = rule({"when": "new_item", "cooldown": "0s"})
    drafts = evaluate([r], watch(), [new_change("a"), new_change("a")], context(watch()))
    assert len(drafts) == 1


def test_cooldown_is_per_product_and_per_rule() -> None:
    rs = [rule({"id": "one", "when": "new_item"}), rule({"id": "two", "when": "new_item"})]
    alerted = {("one", "a"): LastAlert(NOW - timedelta(minutes=1))}
    drafts = evaluate(
        rs, watch(), [new_change("a"), new_change("b")], context(watch(), None, alerted)
    )
    assert [(d.rule_id, d.product.id) for d in drafts] == [
        ("one", "b"),
        ("two", "a"),
        ("two", "b"),
    ]


def test_price_drop_detail_is_decimal_exact() -> None:
    old, new = Product("a", price=Decimal("19.99")), Product("a", price=Decimal("14.96"))
    change = Change("a", old, new, frozenset({EventKind.PRICE_CHANGE}))
    (draft,) = evaluate([rule({"when": "price_drop"})], watch(), [change], context(watch()))
    assert draft.detail["drop_amount"] == "5.03"
    assert draft.detail["drop_percent"] == "25.2"


def test_title_regex_is_compiled_once() -> None:
    rules_module._regex.cache_clear()
    r = rule({"when": "new_item", "match": {"title": "(?i)clog"}, "cooldown": "0s"})
    changes = [new_change(str(n), title="Clog") for n in range(5)]
    assert len(evaluate([r], watch(), changes, context(watch()))) == 5
    info = rules_module._regex.cache_info()
    assert (info.misses, info.hits) == (1, 4)
