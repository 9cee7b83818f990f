"""The writing half of a poll: rules' context read, then one transaction per poll.

Also the memory of what this process's own commits left (see ``Pipeline``): updated
after a commit, forgotten after a refused or broken one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from .. import logs
from ..config import Config, WatchConfig
from ..models import Alert, DiffResult, Tracked, WatchState
from ..routing import Subscribers, route, track_targets
from ..rules import RuleContext, evaluate
from ..rules.tracks import Track, evaluate_tracks, priced
from ..store import PollWrite, Store, as_utc
from .credits import CreditMeter
from .decision import Decision, rule_alert, track_alert

log = logging.getLogger("watcher.pipeline")

Known = tuple[WatchState, Mapping[str, Tracked] | None]
Targets = list[tuple[str, str]]
FiredTrack = tuple[Track, Alert, Targets]  # the track as its alert leaves it, the alert, its chat


class Memory:
    """Per watch, the state and snapshot this process's own last commit left."""

    def __init__(self) -> None:
        self._known: dict[str, Known] = {}

    def get(self, watch_id: str) -> Known | None:
        return self._known.get(watch_id)

    def remember(self, watch_id: str, state: WatchState, tracked: Mapping[str, Tracked]) -> None:
        self._known[watch_id] = (state, tracked)

    def advance(self, watch_id: str, values: Mapping[str, object]) -> None:
        """A state-only write committed: the remembered state as it left it."""
        known = self._known.get(watch_id)
        if known is not None:
            self._known[watch_id] = (advanced(known[0], values, known[0].seq), known[1])

    def forget(self, watch_id: str | None = None) -> None:
        if watch_id is None:
            self._known.clear()
        else:
            self._known.pop(watch_id, None)


def advanced(state: WatchState, values: Mapping[str, object], seq: int) -> WatchState:
    """The state as a commit of ``values`` at ``seq`` left it (a fresh object)."""
    return replace(state, **values, seq=seq)  # type: ignore[arg-type]


class Committer:
    """Writes what polls decided: each poll's state, notices, alerts and credits at once."""

    def __init__(
        self,
        config: Config,
        store: Store,
        meter: CreditMeter,
        memory: Memory,
        subscribers: Subscribers | None,
    ) -> None:
        self.config = config
        self.store = store
        self.meter = meter
        self.memory = memory
        self.subscribers = subscribers

    def _cooldown(self) -> timedelta:
        """The longest rule cooldown: an alert older than that cools nothing down."""
        return max((r.cooldown for r in self.config.rules.values()), default=timedelta(0))

    def targets(self, alert: Alert) -> Targets:
        return route(self.config, alert, self.subscribers)

    def evaluate(
        self, watch: WatchConfig, d: DiffResult, seq: int, now: datetime, since_seq: int = 0
    ) -> list[Alert]:
        """Every alert the poll's changes make: the rules', then the tracks' (a dry run)."""
        alerts, fired = self._evaluate(watch, d, seq, now, since_seq)
        return alerts + [a for _, a, _ in fired]

    def _evaluate(
        self, watch: WatchConfig, d: DiffResult, seq: int, now: datetime, since_seq: int
    ) -> tuple[list[Alert], list[FiredTrack]]:
        """The rules and the chats' tracks over the poll's changes, their context read here
        (a worker thread); a poll without changes reads nothing."""
        if not d.changes:
            return [], []
        ids = [c.product_id for c in d.changes]
        ctx = RuleContext(
            now=now,
            watch=watch,
            history=self.store.price_history(watch.id, ids, since_seq=since_seq),
            last_alerted=self.store.last_alerted(watch.id, ids, since=now - self._cooldown()),
        )
        config = self.config  # one config for the whole poll, whatever a reload swaps in
        drafts = evaluate(config.rules.values(), watch, d.changes, ctx)
        alerts = [rule_alert(config, d_, seq, now) for d_ in drafts]
        moved = priced(d.changes)
        tracks = self.store.tracks_for(watch.id, moved) if moved else []
        fired = []
        for hit in evaluate_tracks(d.changes, tracks, now):
            targets = track_targets(config, hit.track)
            if targets:
                fired.append((hit.after, track_alert(hit, watch.id, seq, now), targets))
        return alerts, fired

    def commit(
        self,
        watch: WatchConfig,
        state: WatchState,
        previous: Mapping[str, Tracked] | None,
        decision: Decision,
        alerts: list[Alert],
        now: datetime,
    ) -> bool:
        """The rules and tracks, then the poll's one transaction (credits included); False:
        refused, another writer committed first (the watch is forgotten, so it is read again)."""
        d = decision.diff
        fired: list[FiredTrack] = []
        if not decision.baseline:
            ruled, fired = self._evaluate(watch, d, state.seq, now, state.baseline_seq)
            alerts += ruled  # the caller's list: its outcome counts them
        write = self._write(watch, state.seq, previous, decision, alerts, now)
        write.track_alerts = fired
        alerts += [a for _, a, _ in fired]
        write.expected_poll_at = state.last_poll_at
        try:
            with self.meter.carrying() as taken:
                write.credits = taken
                committed = self.store.commit_poll(write)
        except BaseException:
            self.memory.forget(watch.id)
            raise
        if committed:
            seq = state.seq + 1 if write.changes else state.seq
            self.memory.remember(watch.id, advanced(state, decision.values, seq), d.tracked)
        else:
            self.memory.forget(watch.id)
        return committed

    def record(
        self, watch_id: str, state: WatchState, values: dict[str, object], alerts: list[Alert]
    ) -> bool:
        """A poll without a snapshot: state, notices and credits in one transaction,
        refused (False) when another writer touched the watch since ``state`` was read."""
        rows = [(a, self.targets(a)) for a in alerts]
        try:
            with self.meter.carrying() as taken:
                done = self.store.record_poll(
                    watch_id, values, rows, taken, expected_poll_at=state.last_poll_at
                )
        except BaseException:
            self.memory.forget(watch_id)
            raise
        if done:
            self.memory.advance(watch_id, values)
        else:
            logs.event(log, "poll_not_recorded", logging.WARNING, watch=watch_id)
            self.memory.forget(watch_id)
        return done

    def _write(
        self,
        watch: WatchConfig,
        seq: int,
        previous: Mapping[str, Tracked] | None,
        decision: Decision,
        alerts: list[Alert],
        now: datetime,
    ) -> PollWrite:
        d = decision.diff
        prev = previous or {}
        if decision.baseline:
            upserts = list(d.tracked.values())
        else:
            upserts = [t for pid, t in d.tracked.items() if prev.get(pid) != t]
        return PollWrite(
            watch_id=watch.id,
            expected_seq=seq,
            now=as_utc(now),
            state=dict(decision.values),
            upserts=upserts,
            existing_ids=set(prev),
            replace_snapshot=decision.baseline,
            history=[(d.tracked[pid], d.tracked[pid].present) for pid in d.history],
            alerts=[(a, self.targets(a)) for a in alerts],
        )
