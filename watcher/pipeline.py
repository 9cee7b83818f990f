"""One poll of one watch: fetch → diff → rules → snapshot + history + outbox in one transaction.

The pure core (``diff``, ``rules.evaluate``, ``render``) does the deciding; this module only
loads what it needs, calls it, and hands the result to ``Store.commit_poll``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Protocol

from . import identity, render
from .config import Config, WatchConfig
from .diff import diff
from .errors import PaymentRequired, ProviderUnavailable
from .models import Alert, AlertDraft, Change, DiffResult, EventKind, PollResult, Tracked
from .rules import RuleContext, evaluate
from .store import Credits, PollWrite, ProviderState, Store, WatchState, as_utc
from .util import utcnow

log = logging.getLogger("watcher.pipeline")

PAUSE_ON_402 = timedelta(hours=1)


class Source(Protocol):
    async def poll(self, watch: WatchConfig) -> PollResult: ...


def definition_hash(watch: WatchConfig) -> str:
    blob = json.dumps(watch.definition(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- credits


class CreditMeter:
    """Counts credits per provider per UTC day; the clients report, the polls commit them.

    The daily budget check reads stored spend plus what is not committed yet, so a budget
    holds across runs and processes sharing the database. Credits a poll takes ride in its
    own transaction (``take`` then ``settle``); ``flush`` writes the rest on its own.
    """

    def __init__(self, store: Store, budgets: Mapping[str, int | None], clock=utcnow) -> None:
        self._store = store
        self._budgets = dict(budgets)
        self._clock = clock
        self._pending: dict[tuple[str, date], list[int]] = {}
        self._inflight: dict[tuple[str, date], int] = {}
        self._stored: dict[tuple[str, date], int] = {}
        self._lock = threading.Lock()  # record() runs on the loop, the rest in worker threads
        self._refresh_lock = threading.Lock()  # see carrying()

    def record(self, provider: str, credits: int) -> None:
        key = (provider, self._clock().date())
        with self._lock:
            slot = self._pending.setdefault(key, [0, 0])
            slot[0] += credits
            slot[1] += 1

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def spent_today(self, provider: str) -> int:
        key = (provider, self._clock().date())
        if key not in self._stored:
            stored = self._store.credits_on(provider, key[1])
            with self._lock:
                self._stored.setdefault(key, stored)
        with self._lock:
            return (
                self._stored[key] + self._pending.get(key, [0, 0])[0] + self._inflight.get(key, 0)
            )

    def left(self, provider: str) -> int | None:
        budget = self._budgets.get(provider)
        return None if budget is None else budget - self.spent_today(provider)

    def refresh_due(self, provider: str) -> bool:
        """A budgeted provider's spend is re-read before every poll: another live process
        may have spent the rest of the day's budget a second ago (one primary-key read)."""
        return self._budgets.get(provider) is not None

    def refresh(self, provider: str) -> None:
        """Re-read today's stored spend of a budgeted provider: other processes spend too."""
        if self._budgets.get(provider) is None:
            return
        key = (provider, self._clock().date())
        with self._refresh_lock:
            total = self._store.credits_on(provider, key[1])
            with self._lock:
                self._stored[key] = total

    @contextmanager
    def carrying(self) -> Iterator[list[Credits]]:
        """Credits for the caller's transaction: taken on entry, settled on exit (committed
        when the block ends without an exception). With a budgeted provider among them the
        block runs under the lock ``refresh`` takes, so a refresh never reads the database
        between the commit and the settle (which would count them twice) or across them
        (which would drop them)."""
        taken = self.take()
        budgeted = any(self._budgets.get(p) is not None for p, *_ in taken)
        with self._refresh_lock if budgeted else contextlib.nullcontext():
            ok = False
            try:
                yield taken
                ok = True
            finally:
                self.settle(taken, ok)

    def take(self) -> list[Credits]:
        """Everything recorded and not yet committed, for the caller's transaction."""
        with self._lock:
            pending, self._pending = self._pending, {}
            for key, (credits, _requests) in pending.items():
                self._inflight[key] = self._inflight.get(key, 0) + credits
        return [(p, day, c, r) for (p, day), (c, r) in pending.items()]

    def settle(self, taken: list[Credits], committed: bool) -> None:
        """After the transaction that carried ``taken``: counted as stored, or pending again."""
        with self._lock:
            for provider, day, credits, requests in taken:
                key = (provider, day)
                self._inflight[key] -= credits
                if committed:
                    if key in self._stored:
                        self._stored[key] += credits
                else:
                    slot = self._pending.setdefault(key, [0, 0])
                    slot[0] += credits
                    slot[1] += requests

    def flush(self) -> None:
        with self.carrying() as taken:
            if taken:
                self._store.add_spent(taken)


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
    credits_written: bool = field(default=False, repr=False)  # the poll's write carried them

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


def _advanced(state: WatchState, values: Mapping[str, object], seq: int) -> WatchState:
    """The state row as a commit of ``values`` at ``seq`` left it (a fresh object)."""
    return WatchState(**{**state.model_dump(), **values, "seq": seq})


def notice(kind: str, watch_id: str | None, message: str, key: object, now: datetime) -> Alert:
    return Alert(
        alert_id=identity.alert_id(None, watch_id, None, kind, None, str(key), 0),
        kind=kind,
        watch_id=watch_id,
        detected_at=now,
        message=message,
        batch=f"notice:{watch_id}:{key}",
    )


PROVIDER_STATE_TTL = 10.0  # seconds "not paused" is believed without reading it again
POLLS_PER_REQUEST_SLOT = 2  # polls in flight per provider request slot (max_concurrency)


class Pipeline:
    """Polls watches and commits what they found.

    Between polls it remembers, per watch, the state and snapshot its own last commit
    left: a poll whose watch it knows reads nothing from the database, and a quiet one
    writes one small transaction. The database stays the judge: every commit is
    conditional on the seq the poll started from, and a refused one forgets the watch,
    so the next poll reads it again.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        sources: Mapping[str, Source],
        meter: CreditMeter,
        *,
        clock: Callable[[], datetime] = utcnow,
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
        self._known: dict[str, tuple[WatchState, Mapping[str, Tracked] | None]] = {}
        self._providers: dict[str, tuple[float, ProviderState | None]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._hashes: dict[str, str] = {}
        self._stopping = False

    def stop_starting(self) -> None:
        """Polls still waiting for a slot end at once (skipped); polls in flight go on."""
        self._stopping = True

    def forget(self, watch_id: str | None = None) -> None:
        """Drop what is remembered (of one watch, or all): the next poll reads the database."""
        if watch_id is None:
            self._known.clear()
            self._providers.clear()
        else:
            self._known.pop(watch_id, None)

    def _slot(self, provider: str) -> asyncio.Semaphore:
        """Polls in flight per provider are bounded, so fetched pages never pile up in
        memory behind their commits, however many watches are due at once."""
        slot = self._slots.get(provider)
        if slot is None:
            pcfg = self.config.providers.get(provider)
            n = (pcfg.max_concurrency if pcfg else 4) * POLLS_PER_REQUEST_SLOT
            slot = self._slots[provider] = asyncio.Semaphore(max(n, 2))
        return slot

    async def poll(self, watch: WatchConfig) -> PollOutcome:
        """Poll one watch end to end; never raises (a bug counts as a failed poll)."""
        outcome: PollOutcome | None = None
        async with self._slot(watch.provider):
            if self._stopping:  # waited for a slot through a stop: never started, no cost
                return PollOutcome(watch.id, "skipped", errors=("stopping",))
            try:
                outcome = await self._poll(watch)
                return outcome
            except Exception as exc:  # recorded on the watch and notified like any failure
                log.exception("event=poll_error watch=%s", watch.id)
                message = f"internal error: {type(exc).__name__}: {exc}"
                try:
                    outcome = await asyncio.to_thread(self._crashed, watch, message)
                    return outcome
                except Exception:  # the database itself is failing: say so, keep going
                    log.exception("event=poll_error_not_recorded watch=%s", watch.id)
                    return PollOutcome(watch.id, "failed", errors=(message,))
            finally:
                # credits of a poll that wrote nothing (skipped, dry run, broken database)
                if (outcome is None or not outcome.credits_written) and self.meter.pending:
                    try:
                        await asyncio.to_thread(self.meter.flush)
                    except Exception:
                        log.exception("event=credits_not_recorded")

    def _crashed(self, watch: WatchConfig, message: str) -> PollOutcome:
        self.forget(watch.id)
        state = self.store.watch_state(watch.id) or WatchState(watch_id=watch.id)
        result = PollResult(products=(), complete=False, exhausted=False, errors=(message,))
        return self._failed(watch, state, result, self.clock())

    async def _provider_state(self, provider: str, *, fresh: bool = False):
        hit = self._providers.get(provider)
        # "not paused" is remembered for a few seconds; a pause is read each time (rare,
        # and when it ends, or another process ends it, matters to the minute)
        unpaused = hit is not None and not (hit[1] and hit[1].paused_until)
        if not fresh and unpaused and time.monotonic() - hit[0] < PROVIDER_STATE_TTL:
            return hit[1]
        state = await asyncio.to_thread(self.store.provider_state, provider)
        self._providers[provider] = (time.monotonic(), state)
        return state

    async def _poll(self, watch: WatchConfig) -> PollOutcome:
        provider = watch.provider
        pstate = await self._provider_state(provider)
        if not (pstate and pstate.paused_until):
            return await self._poll_watch(watch, probe=False)
        if as_utc(self.clock()) < pstate.paused_until:
            return self._paused(watch)
        # The pause is over: one poll probes; the provider's other watches wait for its answer.
        async with self._probe_locks.setdefault(provider, asyncio.Lock()):
            pstate = await self._provider_state(provider, fresh=True)
            if pstate and pstate.paused_until:
                if as_utc(self.clock()) < pstate.paused_until:
                    return self._paused(watch)  # the probe was refused: paused again
                return await self._poll_watch(watch, probe=True)
        return await self._poll_watch(watch, probe=False)  # another poll's probe succeeded

    @staticmethod
    def _paused(watch: WatchConfig) -> PollOutcome:
        return PollOutcome(watch.id, "skipped", errors=(f"{watch.provider} paused (HTTP 402)",))

    def _prepare(
        self, watch: WatchConfig, def_hash: str
    ) -> tuple[WatchState, Mapping[str, Tracked] | None]:
        """What a poll starts from, read in one go (a worker thread)."""
        if self.meter.refresh_due(watch.provider):
            self.meter.refresh(watch.provider)
        known = self._known.get(watch.id)
        if known is not None:
            return known
        if self.dry_run:  # a dry run writes nothing but credits
            state = self.store.watch_state(watch.id) or WatchState(watch_id=watch.id)
        else:
            state = self.store.ensure_watch(watch.id)
        baseline = not state.baseline_done or state.def_hash != def_hash
        return state, None if baseline else self.store.load_tracked(watch.id)

    async def _poll_watch(self, watch: WatchConfig, *, probe: bool) -> PollOutcome:
        provider = watch.provider
        now = self.clock()
        def_hash = self._hashes.get(watch.id)
        if def_hash is None:
            def_hash = self._hashes[watch.id] = definition_hash(watch)
        known = self._known.get(watch.id)
        if known is None or self.meter.refresh_due(provider):
            state, previous = await asyncio.to_thread(self._prepare, watch, def_hash)
        else:
            state, previous = known
        baseline = not state.baseline_done or state.def_hash != def_hash
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
            self._providers.pop(provider, None)
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
            if not baseline:
                alerts += await asyncio.to_thread(
                    self._evaluate, watch, d, state.seq, now, state.baseline_seq
                )
            return outcome
        # the one hop of a poll that got an answer: rules' context, then one transaction
        committed = await asyncio.to_thread(
            self._finish, watch, state, previous, d, baseline, alerts, state_values, now
        )
        outcome.credits_written = True
        if not committed:
            log.warning("watch=%s poll not committed: another writer committed first", watch.id)
            outcome.status, outcome.alerts = "conflict", []
        return outcome

    def _finish(
        self,
        watch: WatchConfig,
        state: WatchState,
        previous: Mapping[str, Tracked] | None,
        d: DiffResult,
        baseline: bool,
        alerts: list[Alert],
        state_values: dict[str, object],
        now: datetime,
    ) -> bool:
        if not baseline:
            alerts += self._evaluate(watch, d, state.seq, now, state.baseline_seq)
        write = self._write(watch, state.seq, previous, d, baseline, alerts, state_values, now)
        write.expected_poll_at = state.last_poll_at
        try:
            with self.meter.carrying() as taken:
                write.credits = taken
                committed = self.store.commit_poll(write)
        except BaseException:
            self.forget(watch.id)
            raise
        if committed:
            seq = state.seq + 1 if write.changes else state.seq
            self._known[watch.id] = (_advanced(state, state_values, seq), d.tracked)
        else:
            self.forget(watch.id)
        return committed

    def _remember_state(self, watch_id: str, values: Mapping[str, object]) -> None:
        known = self._known.get(watch_id)
        if known is not None:
            self._known[watch_id] = (_advanced(known[0], values, known[0].seq), known[1])

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
        outcome = PollOutcome(
            watch.id, "failed", pages=result.pages, alerts=alerts, errors=result.errors
        )
        if not self.dry_run:
            if not self._record(watch.id, state, values, alerts):
                outcome.status, outcome.alerts = "conflict", []
            outcome.credits_written = True
        return outcome

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
        outcome = PollOutcome(watch.id, "not_found", alerts=alerts)
        if not self.dry_run:
            values = {
                "not_found_episode": True,
                "last_poll_at": as_utc(now),
                "last_error": "store not found",
            }
            if not self._record(watch.id, state, values, alerts):
                outcome.status, outcome.alerts = "conflict", []
            outcome.credits_written = True
        return outcome

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
        self._providers.pop(provider, None)
        log.error("provider=%s paused until %s: %s", provider, until.isoformat(), message)
        return PollOutcome(watch.id, "skipped", alerts=alerts, errors=(message,))

    def _record(
        self, watch_id: str, state: WatchState, values: dict[str, object], alerts: list[Alert]
    ) -> bool:
        """A poll without a snapshot: state, notices and credits in one transaction,
        refused (False) when another writer touched the watch since ``state`` was read."""
        rows = [(a, route(self.config, a, self.subscribers)) for a in alerts]
        try:
            with self.meter.carrying() as taken:
                done = self.store.record_poll(
                    watch_id, values, rows, taken, expected_poll_at=state.last_poll_at
                )
        except BaseException:
            self.forget(watch_id)
            raise
        if done:
            self._remember_state(watch_id, values)
        else:
            log.warning("watch=%s poll not recorded: another writer wrote it first", watch_id)
            self.forget(watch_id)
        return done

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
