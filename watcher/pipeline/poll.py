"""One poll of one watch: load → fetch → decide → commit.

The pure core (``health.step``, ``diff``, ``rules.evaluate``, ``render``) does the deciding;
this module loads what a poll starts from, fetches, calls the core (``decision``) and hands
the result to ``Committer``, which writes it in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Protocol

from .. import logs
from ..config import Config, WatchConfig
from ..errors import PaymentRequired, ProviderUnavailable
from ..health import Observation, Seen
from ..models import PollResult, ProviderState, Tracked, WatchState
from ..routing import Subscribers
from ..store import Store
from ..util import utcnow
from .commit import Committer, Memory
from .credits import CreditMeter
from .decision import assess, decide, definition_hash, needs_baseline
from .outcome import PollOutcome, notice_alerts
from .pauses import Pauses

log = logging.getLogger("watcher.pipeline")

POLLS_PER_REQUEST_SLOT = 2  # polls in flight per provider request slot (max_concurrency)


class Source(Protocol):
    async def poll(self, watch: WatchConfig) -> PollResult: ...


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
        shared: bool = False,
    ) -> None:
        self.config = config
        # other instances poll these watches too (a cluster): what this one remembers is
        # checked against the stored state (one primary-key read) before it is trusted
        self.shared = shared
        self.store = store
        self.sources = sources
        self.meter = meter
        self.clock = clock
        self.dry_run = dry_run
        self.subscribers = subscribers
        self._memory = Memory()
        self._commit = Committer(config, store, meter, self._memory, subscribers)
        self._pauses = Pauses(store, clock, self._commit.targets, dry_run=dry_run)
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._hashes: dict[str, str] = {}
        self._stopping = False

    def stop_starting(self) -> None:
        """Polls still waiting for a slot end at once (skipped); polls in flight go on."""
        self._stopping = True

    def forget(self, watch_id: str | None = None) -> None:
        """Drop what is remembered (of one watch, or all): the next poll reads the database."""
        self._memory.forget(watch_id)
        if watch_id is None:
            self._pauses.forget()

    def reconfigure(
        self, config: Config, watches: Iterable[str] = (), providers: Iterable[str] = ()
    ) -> None:
        """A reloaded config from the next poll on. ``watches`` (changed or removed) are
        forgotten: a changed one is read again and, its definition hash differing, takes a
        new baseline (SPEC section 4); ``providers`` (changed) get new request slots."""
        self.config = config
        self._commit.config = config
        for watch_id in watches:
            self._memory.forget(watch_id)
            self._hashes.pop(watch_id, None)
        for provider in providers:
            self._slots.pop(provider, None)

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
                logs.event(log, "poll_error", logging.ERROR, exc_info=True, watch=watch.id)
                message = f"internal error: {type(exc).__name__}: {exc}"
                try:
                    outcome = await asyncio.to_thread(self._crashed, watch, message)
                    return outcome
                except Exception:  # the database itself is failing: say so, keep going
                    logs.event(
                        log,
                        "poll_error_not_recorded",
                        logging.ERROR,
                        exc_info=True,
                        watch=watch.id,
                    )
                    return PollOutcome(watch.id, "failed", errors=(message,))
            finally:
                # credits of a poll that wrote nothing (skipped, dry run, broken database)
                if (outcome is None or not outcome.credits_written) and self.meter.pending:
                    try:
                        await asyncio.to_thread(self.meter.flush)
                    except Exception:
                        logs.event(log, "credits_not_recorded", logging.ERROR, exc_info=True)

    def _crashed(self, watch: WatchConfig, message: str) -> PollOutcome:
        self.forget(watch.id)
        state = self.store.watch_state(watch.id) or WatchState(watch_id=watch.id)
        result = PollResult(products=(), complete=False, exhausted=False, errors=(message,))
        return self._unanswered(watch, state, result, self.clock())

    async def _poll(self, watch: WatchConfig) -> PollOutcome:
        return await self._pauses.gate(watch, lambda probing: self._poll_watch(watch, probing))

    # ------------------------------------------------------------ one watch

    def _load(
        self, watch: WatchConfig, def_hash: str
    ) -> tuple[WatchState, Mapping[str, Tracked] | None]:
        """What a poll starts from, read in one go (a worker thread)."""
        if self.meter.refresh_due(watch.provider):
            self.meter.refresh(watch.provider)
        known = self._memory.get(watch.id)
        if known is not None and not self.shared:
            return known
        if known is not None:
            fresh = self.store.watch_state(watch.id)
            last = known[0]
            if fresh and (fresh.seq, fresh.last_poll_at) == (last.seq, last.last_poll_at):
                return fresh, known[1]  # nobody polled it since this instance did
            self._memory.forget(watch.id)
        if self.dry_run:  # a dry run writes nothing but credits
            state = self.store.watch_state(watch.id) or WatchState(watch_id=watch.id)
        else:
            state = self.store.ensure_watch(watch.id)
        baseline = needs_baseline(state, def_hash)
        return state, None if baseline else self.store.load_tracked(watch.id)

    async def _poll_watch(self, watch: WatchConfig, probing: ProviderState | None) -> PollOutcome:
        """``probing``: the expired pause this poll probes (None: not a probe)."""
        provider = watch.provider
        now = self.clock()
        # load
        def_hash = self._hashes.get(watch.id)
        if def_hash is None:
            def_hash = self._hashes[watch.id] = definition_hash(watch)
        known = self._memory.get(watch.id)
        if known is None or self.shared or self.meter.refresh_due(provider):
            known = await asyncio.to_thread(self._load, watch, def_hash)
        state, previous = known
        # fetch
        try:
            result = await self.sources[provider].poll(watch)
        except PaymentRequired as exc:
            return await asyncio.to_thread(self._pauses.pause, provider, watch, str(exc), now)
        except ProviderUnavailable as exc:
            return PollOutcome(watch.id, "skipped", errors=(str(exc),))
        now = self.clock()
        if probing is not None:  # any answer ends the pause
            await self._pauses.answered(probing, Observation.of(result), now)
        if result.not_found or (result.errors and not result.products):
            return await asyncio.to_thread(self._unanswered, watch, state, result, now)
        # decide
        decision = decide(watch, state, previous, result, def_hash=def_hash, now=now)
        alerts = notice_alerts(decision.notices, now)
        outcome = PollOutcome(
            watch.id,
            decision.status,
            products=len(result.products),
            pages=result.pages,
            alerts=alerts,
            errors=result.errors,
        )
        if self.dry_run:
            if not decision.baseline:
                alerts += await asyncio.to_thread(
                    self._commit.evaluate, watch, decision.diff, state.seq, now, state.baseline_seq
                )
            return outcome
        # commit: the one hop of a poll that got an answer (rules' context, one transaction)
        committed = await asyncio.to_thread(
            self._commit.commit, watch, state, previous, decision, alerts, now
        )
        outcome.credits_written = True
        if not committed:
            logs.event(log, "poll_not_committed", logging.WARNING, watch=watch.id)
            outcome.status, outcome.alerts = "conflict", []
        return outcome

    def _unanswered(
        self, watch: WatchConfig, state: WatchState, result: PollResult, now: datetime
    ) -> PollOutcome:
        """A poll without a snapshot (failed, not found): health, then state and notices."""
        observation = Observation.of(result)
        health, notices = assess(watch, state, observation, now)
        alerts = notice_alerts(notices, now)
        if observation.seen is Seen.NOT_FOUND:
            outcome = PollOutcome(watch.id, "not_found", alerts=alerts)
        else:
            outcome = PollOutcome(
                watch.id, "failed", pages=result.pages, alerts=alerts, errors=result.errors
            )
        if not self.dry_run:
            if not self._commit.record(watch.id, state, health.columns(), alerts):
                outcome.status, outcome.alerts = "conflict", []
            outcome.credits_written = True
        return outcome
