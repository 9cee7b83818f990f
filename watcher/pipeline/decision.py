"""The deciding half of a poll, pure: health step, diff, and the state the commit writes.

Rules and tracks are evaluated by the commit (their context is read from the database in
the same worker thread); turning their drafts and hits into alerts is here (``rule_alert``,
``track_alert``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from .. import identity, render
from ..config import Config, WatchConfig
from ..diff import diff
from ..health import Health, Notice, Observation, Settings, step
from ..models import (
    Alert,
    AlertDraft,
    Change,
    DiffResult,
    EventKind,
    PollResult,
    Tracked,
    WatchState,
)
from ..rules import price_values
from ..rules.tracks import TrackHit


def definition_hash(watch: WatchConfig) -> str:
    blob = json.dumps(watch.definition(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def needs_baseline(state: WatchState, def_hash: str) -> bool:
    """No baseline yet (or an empty one), or the watch's definition changed since."""
    return not state.baseline_done or state.def_hash != def_hash


def assess(
    watch: WatchConfig, state: WatchState, observation: Observation, now: datetime
) -> tuple[Health, tuple[Notice, ...]]:
    """The watch's health after this poll (``health.step`` on the stored state)."""
    return step(Health.of(state), observation, now, settings=Settings.of(watch))


@dataclass(frozen=True, slots=True)
class Decision:
    """What an answered poll (products, or an empty answer) comes to, before the rules."""

    status: str  # baseline | ok | partial | incomplete | empty
    diff: DiffResult
    baseline: bool
    values: dict[str, object]  # the watch-state columns the commit writes
    notices: tuple[Notice, ...]


def decide(
    watch: WatchConfig,
    state: WatchState,
    previous: Mapping[str, Tracked] | None,
    result: PollResult,
    *,
    def_hash: str,
    now: datetime,
) -> Decision:
    baseline = needs_baseline(state, def_hash)
    health, notices = assess(watch, state, Observation.of(result, baseline=baseline), now)
    # partial: a page failed; incomplete: stopped early (budget) without an error
    status = "partial" if result.errors else "ok" if result.complete else "incomplete"
    if baseline:
        d = diff(None, result, missing_after=watch.missing_after)
        status = "baseline"
    else:
        d = diff(previous, result, missing_after=watch.missing_after)
    values: dict[str, object] = {"def_hash": def_hash, **health.columns()}
    if baseline:
        # An empty baseline is taken again next time. An incomplete one stands, but
        # products first seen before a complete poll are silent additions, not "new".
        values["baseline_done"] = bool(result.products)
        values["baseline_partial"] = not result.complete
        # history from before this baseline (another definition) is not this watch's
        values["baseline_seq"] = state.seq
    elif state.baseline_partial:
        d = replace(d, changes=without_new_items(d.changes))
        values["baseline_partial"] = not result.complete
    if d.empty:
        status = "empty"
    values["products"] = sum(1 for t in d.tracked.values() if t.present)
    return Decision(status, d, baseline, values, notices)


def without_new_items(changes: Iterable[Change]) -> tuple[Change, ...]:
    """After an incomplete baseline, products first seen later were there all along."""
    out = []
    for c in changes:
        if EventKind.NEW_ITEM in c.events:
            events = c.events - {EventKind.NEW_ITEM}
            if not events:
                continue
            c = replace(c, events=events)
        out.append(c)
    return tuple(out)


def rule_alert(config: Config, draft: AlertDraft, seq: int, now: datetime) -> Alert:
    """A rule's draft as the alert the outbox stores: its id, batch, channels and text."""
    old, new = render.transition_values(draft)
    alert = Alert(
        alert_id=identity.alert_id(
            draft.rule_id, draft.watch_id, draft.product.id, draft.kind, old, new, seq
        ),
        kind=draft.kind,
        watch_id=draft.watch_id,
        detected_at=now,
        rule_id=draft.rule_id,
        product=draft.product,
        previous=draft.previous,
        batch=f"{draft.watch_id}:{seq}",
        channels=config.rules[draft.rule_id].notify,
    )
    template = config.rules[draft.rule_id].template
    return replace(alert, message=render.render_text(alert, template=template))


def track_alert(hit: TrackHit, watch_id: str, seq: int, now: datetime) -> Alert:
    """A track's hit as the alert the outbox stores: rule ``track:<id>``, the kind of the
    rule that means the same (``price_below`` / ``price_drop``), its own ``alert_id``."""
    track = hit.track
    old, new = price_values(hit.previous, hit.product)
    alert = Alert(
        alert_id=identity.alert_id(
            track.rule_id, watch_id, hit.product.id, track.alert_kind, old, new, seq
        ),
        kind=track.alert_kind,
        watch_id=watch_id,
        detected_at=now,
        rule_id=track.rule_id,
        product=hit.product,
        previous=hit.previous,
        batch=f"{watch_id}:{seq}",
        channels=(track.channel,),
    )
    return replace(alert, message=render.render_text(alert))
