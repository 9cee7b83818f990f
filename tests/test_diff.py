"""Table tests for watcher.diff (spec section 4); the table is tests/data/core/diff.yaml."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.diff import diff
from watcher.models import EventKind, PollResult, Product, Tracked

CASES = yaml.safe_load((Path(__file__).parent / "data/core/diff.yaml").read_text())
ALIASES = {"discount": "discount_percent"}
DECIMALS = {"price", "original_price", "rating"}


def fields(spec: dict[str, Any]) -> dict[str, Any]:
    """YAML shorthand → Product keyword arguments (quoted prices become Decimal)."""
    out = {}
    for key, value in spec.items():
        name = ALIASES.get(key, key)
        if name in DECIMALS and value is not None:
            value = Decimal(str(value))
        out[name] = value
    return out


def product(spec: str | dict[str, Any], rank: int | None = None) -> Product:
    spec = {"id": spec} if isinstance(spec, str) else dict(spec)
    spec.setdefault("rank", rank)
    return Product(**fields(spec))


def tracked(spec: dict[str, Any]) -> Tracked:
    spec = dict(spec)
    present, missed = spec.pop("present", True), spec.pop("missed", 0)
    return Tracked(product(spec), present=present, missed=missed)


def poll(spec: dict[str, Any]) -> PollResult:
    products = tuple(product(p, rank) for rank, p in enumerate(spec["products"], 1))
    return PollResult(
        products=products,
        complete=spec.get("complete", True),
        exhausted=spec.get("exhausted", True),
    )


def assert_fields(obj: Product | None, expected: dict[str, Any] | None, where: str) -> None:
    if expected is None:
        assert obj is None, where
        return
    assert obj is not None, where
    for name, value in fields(expected).items():
        assert getattr(obj, name) == value, f"{where}.{name}"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_diff_table(case: dict[str, Any]) -> None:
    state = None
    if "previous" in case:
        state = {t["id"]: tracked(t) for t in case["previous"]}
    for step, spec in enumerate(case["polls"], 1):
        result = diff(state, poll(spec), missing_after=case.get("missing_after", 2))
        expect = spec["expect"]
        at = f"poll {step}"
        assert result.baseline is expect.get("baseline", False), at
        assert result.empty is expect.get("empty", False), at
        if "changes" in expect:
            got = [(c.product_id, set(c.events)) for c in result.changes]
            want = [(c["id"], {EventKind(e) for e in c["events"]}) for c in expect["changes"]]
            assert got == want, at
            for change, want_change in zip(result.changes, expect["changes"], strict=True):
                where = f"{at} {change.product_id}"
                if "old" in want_change:
                    assert_fields(change.old, want_change["old"], f"{where} old")
                assert_fields(change.new, want_change.get("new", {}), f"{where} new")
                assert change.new == result.tracked[change.product_id].product, where
        if "history" in expect:
            assert list(result.history) == expect["history"], at
        if "tracked" in expect:
            assert set(result.tracked) == set(expect["tracked"]), at
            for pid, want_t in expect["tracked"].items():
                want_t = dict(want_t)
                t = result.tracked[pid]
                if "present" in want_t:
                    assert t.present is want_t.pop("present"), f"{at} {pid}.present"
                if "missed" in want_t:
                    assert t.missed == want_t.pop("missed"), f"{at} {pid}.missed"
                assert_fields(t.product, want_t, f"{at} {pid}")
        state = result.tracked


def test_changes_carry_the_stored_product_before() -> None:
    before = {"a": Tracked(Product("a", price=Decimal("10"), rank=1, title="A"))}
    result = diff(before, PollResult((Product("a", price=Decimal("9"), rank=1),), True, True))
    (change,) = result.changes
    assert change.old is before["a"].product
    assert change.new.title is None  # fresh values replace stored ones, None included


def test_empty_poll_returns_previous_state_unchanged() -> None:
    before = {"a": Tracked(Product("a", rank=1), missed=1)}
    result = diff(before, PollResult((), True, True))
    assert result.tracked == before
    assert result.tracked is not before  # a copy the caller may keep


def test_diff_does_not_mutate_previous() -> None:
    before = {"a": Tracked(Product("a", rank=1)), "b": Tracked(Product("b", rank=2))}
    snapshot = dict(before)
    diff(before, PollResult((Product("c", rank=1),), True, True), missing_after=1)
    assert before == snapshot
