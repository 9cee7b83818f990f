"""Table tests for the dispatcher's pure stages: the plan (hold, group per product, digest)
and the failure policy (retry at / dead); the table is tests/data/core/dispatch.yaml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.config import ChannelConfig
from watcher.delivery.plan import plan
from watcher.delivery.policy import Dead, Retry, after_failure
from watcher.kinds import CHANNEL_TYPES
from watcher.models import Alert, Delivery, Product

TABLE = yaml.safe_load((Path(__file__).parent / "data/core/dispatch.yaml").read_text())
NOW = "2026-11-24T10:00"


def at(text: str) -> datetime:
    return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)


def channel(cid: str, spec: dict[str, Any]) -> ChannelConfig:
    quiet = spec.get("quiet_hours")
    return ChannelConfig(
        id=cid,
        type=spec.get("type", "webhook"),
        url="http://x",
        group_over=spec.get("group_over", 5),
        quiet_hours=tuple(quiet.split("-")) if quiet else None,
        timezone=spec.get("timezone", "UTC"),
    )


def item(spec: dict[str, Any], now: datetime) -> tuple[Delivery, Alert]:
    alert_id = f"a{spec['id']}"
    delivery = Delivery(
        id=spec["id"],
        alert_id=alert_id,
        channel=spec.get("channel", "hook"),
        target=spec.get("target", ""),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        held=spec.get("held", False),
        claim="instance:pass",
    )
    product = Product(id=spec["product"], title="P") if "product" in spec else None
    batch = spec.get("batch", "w:1")
    alert = Alert(alert_id, "new_item", "w", now, rule_id="r", product=product, batch=batch)
    return delivery, alert


@pytest.mark.parametrize("case", TABLE["plan"], ids=[c["id"] for c in TABLE["plan"]])
def test_plan(case: dict[str, Any]) -> None:
    now = at(case.get("now", NOW))
    specs = case.get("channels", {"hook": {}})
    channels = {cid: channel(cid, spec or {}) for cid, spec in specs.items()}
    mutes = {
        (key.rsplit(":", 1)[0], int(key.rsplit(":", 1)[1])): at(until)
        for key, until in case.get("mutes", {}).items()
    }
    due = [item(s, now) for s in case["due"]]
    # as the dispatcher does: the channels whose type sends a product's alerts as one message
    merging = {cid for cid, c in channels.items() if CHANNEL_TYPES[c.type].merges_per_product}
    got = plan(due, channels, mutes, now, per_product=merging)
    want = case["expect"]
    assert [(t.channel, t.target) for t in got] == [
        (w.get("channel", "hook"), w.get("target", "")) for w in want
    ]
    for target, w in zip(got, want, strict=True):
        where = f"{target.channel}:{target.target}"
        if "held_until" in w:
            assert target.held_until == at(w["held_until"]), where
            assert target.messages == (), where
        else:
            assert target.held_until is None, where
            assert [m.ids for m in target.messages] == w["messages"], where
        # every claimed delivery of the target is in the plan, held or in one send
        ids = sorted(d.id for d, _ in target.items)
        sent = sorted(i for m in target.messages for i in m.ids)
        assert sent == ([] if "held_until" in w else ids), where


@pytest.mark.parametrize("case", TABLE["policy"], ids=[c["id"] for c in TABLE["policy"]])
def test_failure_policy(case: dict[str, Any]) -> None:
    now = at(NOW)
    got = after_failure(
        case["attempts"],
        retryable=case.get("retryable", True),
        retry_after=case.get("retry_after"),
        max_attempts=case.get("max_attempts", 8),
        now=now,
        jitter=case.get("jitter", 1.0),
    )
    want = case["expect"]
    if "dead" in want:
        assert got == Dead(want["dead"])
    else:
        assert isinstance(got, Retry)
        assert (got.delay, got.attempts) == (want["retry_in"], want["attempts"])
        assert got.at == now + timedelta(seconds=want["retry_in"])


def test_every_plan_row_has_an_expectation_per_target() -> None:
    """A row's targets are the distinct (channel, target) pairs of its ``due``."""
    for case in TABLE["plan"]:
        pairs = {(d.get("channel", "hook"), d.get("target", "")) for d in case["due"]}
        assert len(pairs) == len(case["expect"]), case["id"]
