"""One poll of one watch: fetch → diff → rules → snapshot + history + outbox in one transaction.

The pure core (``diff``, ``rules.evaluate``, ``render``) does the deciding; this module only
loads what it needs, calls it, and hands the result to ``Store.commit_poll``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from . import render
from .config import Config, WatchConfig
from .diff import diff
from .errors import PaymentRequired, ProviderUnavailable
from .models import Alert, AlertDraft, Change, DiffResult, EventKind, PollResult, Tracked
from .rules import RuleContext, evaluate
from .store import PollWrite, Store, WatchState, as_utc

log = logging.getLogger("watcher.pipeline")

PAUSE_ON_402 = timedelta(hours=1)


class Source(Protocol):
    async def poll(self, watch: WatchConfig) -> PollResult: ...


def now_utc() -> datetime:
    return datetime.now(UTC)


def definition_hash(watch: WatchConfig) -> str:
    blob = json.dumps(watch.definition(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- credits


class CreditMeter:
    """Counts credits per provider per UTC day; the clients report, the pipeline flushes.

    The daily budget check reads stored spend plus what is not flushed yet, so a budget holds
    across runs and processes sharing the database.
    """

    def __init__(self, store: Store, budgets: Mapping[str, int | None], clock=now_utc) -> None:
        self._store = store
        self._budgets = dict(budgets)
        self._clock = clock
        self._pending: dict[tuple[str, date], list[int]] = {}
        self._stored: dict[tuple[str, date], int] = {}
        self._lock = threading.Lock()  # record() runs on the loop, flush() in worker threads
        self._flush_lock = threading.Lock()  # flush() and refresh() one at a time

    def record(self, provider: str, credits: int) -> None:
        key = (provider, self._clock().date())
        with self._lock:
            slot = self._pending.setdefault(key, [0, 0])
            slot[0] += credits
            slot[1] += 1

    def spent_today(self, provider: str) -> int:
        key = (provider, self._clock().date())
        if key not in self._stored:
            self._stored[key] = self._store.credits_on(provider, key[1])
        with self._lock:
            return self._stored[key] + self._pending.get(key, [0, 0])[0]

    def left(self, provider: str) -> int | None:
        budget = self._budgets.get(provider)
        return None if budget is None else budget - self.spent_today(provider)

    def refresh(self, provider: str) -> None:
        """Re-read today's stored spend of a budgeted provider: other processes spend too."""
        if self._budgets.get(provider) is None:
            return
        key = (provider, self._clock().date())
        with self._flush_lock:
            total = self._store.credits_on(provider, key[1])
            with self._lock:
                self._stored[key] = total

    def flush(self) -> None:
        with self._flush_lock:  # a refresh never reads the database halfway through a flush
            with self._lock:
                pending, self._pending = self._pending, {}
                for key, (credits, _requests) in pending.items():
                    if key in self._stored:
                        self._stored[key] += credits
            for (provider, day), (credits, requests) in pending.items():
                self._store.add_credits(provider, day, credits, requests)


# ---------------------------------------------------------------- routing


Subscribers = Callable[[str, str | None, str | None], Iterable[int]]


def route(
    config: Config, alert: Alert, subscribers: Subscribers | None = None
) -> list[tuple[str, str]]:
    """Which (channel, target) pairs receive an alert: spec sections 6 and 7.

    Rule alerts go to the rule's ``notify`` channels (Telegram: ``chat_ids`` plus subscribed
    chats); notices go to every webhook and console channel and to every Telegram admin.
    """
    targets: list[tuple[str, str]] = []
    if alert.is_notice:
        for ch in config.channels.values():
            if ch.type == "telegram":
                targets += [(ch.id, str(a)) for a in ch.admins]
            else:
                targets.append((ch.id, ""))
        return targets
    rule = config.rules[alert.rule_id]  # type: ignore[index]
    for channel_id in rule.notify:
        ch = config.channels[channel_id]
        if ch.type == "telegram":
            chats = list(ch.chat_ids)
            if subscribers is not None:
                chats += list(subscribers(ch.id, alert.rule_id, alert.watch_id))
            targets += [(ch.id, str(c)) for c in dict.fromkeys(chats)]
        else:
            targets.append((ch.id, ""))
    return targets


# ---------------------------------------------------------------- the poll


@dataclass
class PollOutcome:
    watch_id: str
    status: str  # baseline|ok|partial|incomplete|failed|skipped|not_found|empty|conflict
    products: int = 0
    pages: int = 0
    alerts: list[Alert] = field(default_factory=list)
    errors: tuple[str, ...] = ()

    def summary(self) -> str:
        bits = [f"{self.watch_id}: {self.status}", f"{self.products} products"]
        if self.pages:
            bits.append(f"{self.pages} pages")
        if self.alerts:
            bits.append(f"{len(self.alerts)} alerts")
        return ", ".join(bits)


def _without_new_items(changes: Iterable[Change]) -> tuple[Change, ...]:
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


def _episode(state) -> str:
    """What tells one failing or not-found episode of a watch from the next.

    The seq alone does not (quiet polls leave it), but a successful poll always ends an
    episode and moves ``last_success_at``; two processes polling the same episode read the
    same state and so produce the same notice id, which the outbox stores once.
    """
    since = state.last_success_at.isoformat() if state.last_success_at else "-"
    return f"{state.seq}:{since}"


def notice(kind: str, watch_id: str | None, message: str, key: object, now: datetime) -> Alert:
    return Alert(
        alert_id=render.alert_id(None, watch_id, None, kind, None, str(key), 0),
        kind=kind,
        watch_id=watch_id,
        detected_at=now,
        message=message,
        batch=f"notice:{watch_id}:{key}",
    )


class Pipeline:
    """Polls watches and commits what they found. Holds no per-poll state between calls."""

    def __init__(
        self,
        config: Config,
        store: Store,
        sources: Mapping[str, Source],
        meter: CreditMeter,
        *,
        clock: Callable[[], datetime] = now_utc,
        dry_run: bool = False,
        subscribers: Subscribers | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.sources = sources
        self.meter = meter
        self.clock = clock
        self.dry_run = dry_run
        self.subscribers = subscribers
        self._probe_locks: dict[str, asyncio.Lock] = {}

    async def poll(self, watch: WatchConfig) -> PollOutcome:
        """Poll one watch end to end; never raises (a bug counts as a failed poll)."""
        try:
            return await self._poll(watch)
        except Exception as exc:  # recorded on the watch and notified like any failure
            log.exception("event=poll_error watch=%s", watch.id)
            message = f"internal error: {type(exc).__name__}: {exc}"
            try:
                return await asyncio.to_thread(self._crashed, watch, message)
            except Exception:  # the database itself is failing: say so, keep the loop alive
                log.exception("event=poll_error_not_recorded watch=%s", watch.id)
                return PollOutcome(watch.id, "failed", errors=(message,))
        finally:
            try:
                await asyncio.to_thread(self.meter.flush)
            except Exception:
                log.exception("event=credits_not_recorded")

    def _crashed(self, watch: WatchConfig, message: str) -> PollOutcome:
        state = self.store.watch_state(watch.id) or WatchState(watch_id=watch.id)
        result = PollResult(products=(), complete=False, exhausted=False, errors=(message,))
        return self._failed(watch, state, result, self.clock())

    async def _poll(self, watch: WatchConfig) -> PollOutcome:
        provider = watch.provider
        pstate = await asyncio.to_thread(self.store.provider_state, provider)
        if not (pstate and pstate.paused_until):
            return await self._poll_watch(watch, probe=False)
        if as_utc(self.clock()) < pstate.paused_until:
            return self._paused(watch)
        # The pause is over: one poll probes; the provider's other watches wait for its answer.
        async with self._probe_locks.setdefault(provider, asyncio.Lock()):
            pstate = await asyncio.to_thread(self.store.provider_state, provider)
            if pstate and pstate.paused_until:
                if as_utc(self.clock()) < pstate.paused_until:
                    return self._paused(watch)  # the probe was refused: paused again
                return await self._poll_watch(watch, probe=True)
        return await self._poll_watch(watch, probe=False)  # another poll's probe succeeded

    @staticmethod
    def _paused(watch: WatchConfig) -> PollOutcome:
        return PollOutcome(watch.id, "skipped", errors=(f"{watch.provider} paused (HTTP 402)",))

    async def _poll_watch(self, watch: WatchConfig, *, probe: bool) -> PollOutcome:
        provider = watch.provider
        now = self.clock()
        await asyncio.to_thread(self.meter.refresh, provider)
        if self.dry_run:  # a dry run writes nothing but credits
            state = await asyncio.to_thread(self.store.watch_state, watch.id)
            state = state or WatchState(watch_id=watch.id)
        else:
            state = await asyncio.to_thread(self.store.ensure_watch, watch.id)
        def_hash = definition_hash(watch)
        baseline = not state.baseline_done or state.def_hash != def_hash
        previous = None if baseline else await asyncio.to_thread(self.store.load_tracked, watch.id)
        try:
            result = await self.sources[provider].poll(watch)
        except PaymentRequired as exc:
            return await asyncio.to_thread(self._pause_provider, provider, watch, str(exc), now)
        except ProviderUnavailable as exc:
            return PollOutcome(watch.id, "skipped", errors=(str(exc),))
        now = self.clock()
        if probe and not self.dry_run:
            await asyncio.to_thread(
                self.store.set_provider_state, provider, paused_until=None, pause_notified=False
            )
        if result.not_found:
            return await asyncio.to_thread(self._not_found, watch, state, now)
        failed = bool(result.errors)
        if failed and not result.products:
            return await asyncio.to_thread(self._failed, watch, state, result, now)

        # partial: a page failed; incomplete: stopped early (budget) without an error
        outcome_status = "partial" if failed else "ok" if result.complete else "incomplete"
        if baseline:
            d = diff(None, result, missing_after=watch.missing_after)
            outcome_status = "baseline"
        else:
            d = diff(previous, result, missing_after=watch.missing_after)
        alerts: list[Alert] = []
        state_values: dict[str, object] = {
            "def_hash": def_hash,
            "last_poll_at": as_utc(now),
            "last_error": result.errors[-1] if failed else None,
            "not_found_episode": False,
        }
        if baseline:
            # An empty baseline is taken again next time. An incomplete one stands, but
            # products first seen before a complete poll are silent additions, not "new".
            state_values["baseline_done"] = bool(result.products)
            state_values["baseline_partial"] = not result.complete
            # history from before this baseline (another definition) is not this watch's
            state_values["baseline_seq"] = state.seq
        elif state.baseline_partial:
            d = replace(d, changes=_without_new_items(d.changes))
            state_values["baseline_partial"] = not result.complete
        alerts += self._health_notices(watch, state, failed, result, now, state_values)
        if d.empty:
            outcome_status = "empty"
            if not state.empty_episode:
                alerts.append(
                    notice(
                        "watch_empty",
                        watch.id,
                        f"Watch {watch.id} returned no products"
                        + (" on its first poll; check its definition" if baseline else ""),
                        state.seq,
                        now,
                    )
                )
            state_values["empty_episode"] = True
        else:
            state_values["empty_episode"] = False
        if not baseline:
            alerts += await asyncio.to_thread(
                self._evaluate, watch, d, state.seq, now, state.baseline_seq
            )
        state_values["products"] = sum(1 for t in d.tracked.values() if t.present)
        outcome = PollOutcome(
            watch.id,
            outcome_status,
            products=len(result.products),
            pages=result.pages,
            alerts=alerts,
            errors=result.errors,
        )
        if self.dry_run:
            return outcome
        write = await asyncio.to_thread(
            self._write, watch, state.seq, previous, d, baseline, alerts, state_values, now
        )
        if not await asyncio.to_thread(self.store.commit_poll, write):
            log.warning("watch=%s poll not committed: another writer committed first", watch.id)
            outcome.status, outcome.alerts = "conflict", []
        return outcome

    # ------------------------------------------------------------ pieces

    def _evaluate(
        self, watch: WatchConfig, d: DiffResult, seq: int, now: datetime, since_seq: int = 0
    ) -> list[Alert]:
        if not d.changes:
            return []
        ids = [c.product_id for c in d.changes]
        ctx = RuleContext(
            now=now,
            watch=watch,
            history=self.store.price_history(watch.id, ids, since_seq=since_seq),
            last_alerted=self.store.last_alerted(watch.id, ids),
        )
        drafts = evaluate(self.config.rules.values(), watch, d.changes, ctx)
        return [self._alert(d_, seq, now) for d_ in drafts]

    def _alert(self, draft: AlertDraft, seq: int, now: datetime) -> Alert:
        old, new = render.transition_values(draft)
        alert = Alert(
            alert_id=render.alert_id(
                draft.rule_id, draft.watch_id, draft.product.id, draft.kind, old, new, seq
            ),
            kind=draft.kind,
            watch_id=draft.watch_id,
            detected_at=now,
            rule_id=draft.rule_id,
            product=draft.product,
            previous=draft.previous,
            batch=f"{draft.watch_id}:{seq}",
            channels=self.config.rules[draft.rule_id].notify,
        )
        template = self.config.rules[draft.rule_id].template
        return replace(alert, message=render.render_text(alert, template=template))

    def _health_notices(
        self,
        watch: WatchConfig,
        state,
        failed: bool,
        result: PollResult,
        now: datetime,
        values: dict[str, object],
    ) -> list[Alert]:
        """One watch_failing notice per outage and one watch_recovered after it (section 9)."""
        if failed:
            failures = state.consecutive_failures + 1
            values["consecutive_failures"] = failures
            if failures >= watch.notify_failures_after and not state.failing_notified:
                values["failing_notified"] = True
                return [
                    notice(
                        "watch_failing",
                        watch.id,
                        f"Watch {watch.id} failed {failures} polls in a row; last error: "
                        f"{result.errors[-1]}",
                        f"failing:{_episode(state)}",
                        now,
                    )
                ]
            return []
        values["consecutive_failures"] = 0
        values["last_success_at"] = as_utc(now)
        if state.failing_notified:
            values["failing_notified"] = False
            return [
                notice(
                    "watch_recovered",
                    watch.id,
                    f"Watch {watch.id} recovered after {state.consecutive_failures} failed polls",
                    f"recovered:{_episode(state)}",
                    now,
                )
            ]
        return []

    def _failed(self, watch: WatchConfig, state, result: PollResult, now: datetime) -> PollOutcome:
        values: dict[str, object] = {"last_poll_at": as_utc(now), "last_error": result.errors[-1]}
        alerts = self._health_notices(watch, state, True, result, now, values)
        if not self.dry_run:
            self._store_notices(alerts)
            self.store.update_watch_state(watch.id, **values)
        return PollOutcome(
            watch.id, "failed", pages=result.pages, alerts=alerts, errors=result.errors
        )

    def _not_found(self, watch: WatchConfig, state, now: datetime) -> PollOutcome:
        alerts: list[Alert] = []
        if not state.not_found_episode:
            alerts.append(
                notice(
                    "watch_not_found",
                    watch.id,
                    f"Watch {watch.id}: the store {watch.url} was not found upstream",
                    f"not_found:{_episode(state)}",
                    now,
                )
            )
        if not self.dry_run:
            self._store_notices(alerts)
            self.store.update_watch_state(
                watch.id,
                not_found_episode=True,
                last_poll_at=as_utc(now),
                last_error="store not found",
            )
        return PollOutcome(watch.id, "not_found", alerts=alerts)

    def _pause_provider(
        self, provider: str, watch: WatchConfig, message: str, now: datetime
    ) -> PollOutcome:
        until = now + PAUSE_ON_402
        alerts: list[Alert] = []
        paused = notice(
            "provider_paused",
            None,
            f"Provider {provider} answered 402 (out of credits): polls paused until "
            f"{until:%Y-%m-%d %H:%M} UTC, then one probe",
            f"{provider}:{until:%Y%m%d%H%M}",
            now,
        )
        if self.dry_run:
            pstate = self.store.provider_state(provider)
            first = not (pstate and pstate.pause_notified)
        else:
            rows = [(paused, route(self.config, paused, self.subscribers))]
            first = self.store.pause_provider(provider, as_utc(until), rows)
        if first:
            alerts.append(paused)
        log.error("provider=%s paused until %s: %s", provider, until.isoformat(), message)
        return PollOutcome(watch.id, "skipped", alerts=alerts, errors=(message,))

    def _store_notices(self, alerts: list[Alert]) -> None:
        if alerts:
            self.store.add_alerts([(a, route(self.config, a, self.subscribers)) for a in alerts])

    def _write(
        self,
        watch: WatchConfig,
        seq: int,
        previous: Mapping[str, Tracked] | None,
        d: DiffResult,
        baseline: bool,
        alerts: list[Alert],
        state_values: dict[str, object],
        now: datetime,
    ) -> PollWrite:
        prev = previous or {}
        if baseline:
            upserts = list(d.tracked.values())
        else:
            upserts = [t for pid, t in d.tracked.items() if prev.get(pid) != t]
        return PollWrite(
            watch_id=watch.id,
            expected_seq=seq,
            now=as_utc(now),
            state=state_values,
            upserts=upserts,
            existing_ids=set(prev),
            replace_snapshot=baseline,
            history=[(d.tracked[pid], d.tracked[pid].present) for pid in d.history],
            alerts=[(a, route(self.config, a, self.subscribers)) for a in alerts],
        )
