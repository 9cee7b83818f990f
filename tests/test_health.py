"""Table tests for watcher.health (spec section 9); the table is tests/data/core/health.yaml.

Each case runs both machines on every poll, as the pipeline does: the watch's (``step``)
and its provider's (``pause_step``), with the pipeline's gate in front (a poll while the
provider is paused does not happen).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.health import (
    PAUSE_ON_402,
    Health,
    Observation,
    Seen,
    Settings,
    pause_step,
    paused,
    step,
)
from watcher.models import PollResult, Product, ProviderState, WatchState
from watcher.store.tables import ProviderStateRow, WatchStateRow

CASES = yaml.safe_load((Path(__file__).parent / "data/core/health.yaml").read_text())
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
TIMES = {"last_poll_at", "last_success_at", "paused_until"}
PROVIDER = "socialfetch"


def at(minutes: float | None) -> datetime | None:
    return None if minutes is None else T0 + timedelta(minutes=minutes)


def values(spec: dict[str, Any]) -> dict[str, Any]:
    """YAML shorthand → field values (times are minutes after T0)."""
    return {k: at(v) if k in TIMES else v for k, v in spec.items()}


def observation(spec: dict[str, Any]) -> Observation:
    return Observation(
        Seen(spec["saw"]), error=spec.get("error"), baseline=spec.get("baseline", False)
    )


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_health_table(case: dict[str, Any]) -> None:
    settings = Settings(
        "goli",
        notify_failures_after=case.get("notify_failures_after", 3),
        url=case.get("url", "https://shop.example/goli"),
    )
    health = Health(**values(case.get("state", {})))
    pause = ProviderState(PROVIDER, **values(case.get("provider", {})))
    for number, spec in enumerate(case["polls"], 1):
        where = f"poll {number} ({spec['saw']})"
        now = at(spec.get("at", number))
        assert now is not None
        expect = spec.get("expect", {})
        if "seq" in spec:  # the commits in between advanced it
            health = Health(**{**health.columns(), "seq": spec["seq"]})
        assert paused(pause, now) is expect.get("skipped", False), where
        if expect.get("skipped"):
            continue
        seen = observation(spec)
        health, notices = step(health, seen, now, settings=settings)
        pause, paused_notices = pause_step(pause, seen, now)
        got = [(n.kind, n.watch_id, n.key) for n in notices + paused_notices]
        want = [
            (n["kind"], None if n["kind"].startswith("provider_") else "goli", n["key"])
            for n in expect.get("notices", [])
        ]
        assert got == want, where
        for n, w in zip(notices + paused_notices, expect.get("notices", []), strict=True):
            if "message" in w:
                assert n.message == w["message"], where
        for name, value in values(expect.get("state", {})).items():
            assert getattr(health, name) == value, f"{where}: {name}"
        for name, value in values(expect.get("provider", {})).items():
            assert getattr(pause, name) == value, f"{where}: provider {name}"


def test_a_second_step_on_the_same_state_is_the_same_notice():
    """Two processes polling one episode read one state: one notice id between them."""
    state = Health(seq=4, consecutive_failures=2, last_success_at=T0)
    settings = Settings("goli", notify_failures_after=3)
    seen = Observation(Seen.FAILED, error="HTTP 500")
    first = step(state, seen, T0 + timedelta(minutes=5), settings=settings)
    second = step(state, seen, T0 + timedelta(minutes=6), settings=settings)
    assert first[1] == second[1] and first[1][0].key == "failing:4:2026-11-24T10:00:00+00:00"


def test_the_pause_lasts_an_hour():
    pause, (notice,) = pause_step(ProviderState(PROVIDER), Observation(Seen.PAYMENT_REQUIRED), T0)
    assert notice.kind == "provider_paused" and notice.watch_id is None
    assert pause.paused_until == T0 + PAUSE_ON_402 and pause.pause_notified
    assert not paused(pause, T0 + PAUSE_ON_402) and paused(pause, T0 + PAUSE_ON_402 / 2)
    assert not paused(None, T0) and not paused(ProviderState(PROVIDER), T0)


ONE = (Product("1"),)


@pytest.mark.parametrize(
    ("result", "seen", "error"),
    [
        (PollResult(ONE, complete=True, exhausted=True), Seen.OK, None),
        (PollResult(ONE, complete=False, exhausted=False), Seen.OK, None),  # the budget
        (PollResult(ONE, complete=False, exhausted=False, errors=("a", "b")), Seen.PARTIAL, "b"),
        (PollResult((), complete=True, exhausted=True), Seen.EMPTY, None),
        (PollResult((), complete=False, exhausted=False, errors=("x",)), Seen.FAILED, "x"),
        (
            PollResult((), complete=False, exhausted=False, not_found=True, errors=("x",)),
            Seen.NOT_FOUND,
            None,
        ),
    ],
    ids=["ok", "incomplete-is-ok", "partial", "empty", "failed", "not-found-first"],
)
def test_what_a_poll_result_means_for_health(result, seen, error):
    got = Observation.of(result, baseline=True)
    assert (got.seen, got.error) == (seen, error)


def test_the_frozen_states_are_the_rows_columns():
    """The store copies rows into these field by field: a column added to one only is a bug."""
    assert [f.name for f in fields(WatchState)] == list(WatchStateRow.model_fields)
    assert [f.name for f in fields(ProviderState)] == list(ProviderStateRow.model_fields)
    state = WatchState("goli", seq=3, consecutive_failures=2, last_error="x")
    assert Health.of(state) == Health(seq=3, consecutive_failures=2, last_error="x")
    assert "seq" not in Health.of(state).columns()
    assert set(Health.of(state).columns()) < set(WatchStateRow.model_fields)
