"""The providers' HTTP 402 pauses as one process sees them: read, gated, started, ended.

The decisions are ``health.pause_step``'s; this holds the few seconds' memory of "not
paused", the probe that alone polls when a pause runs out, and the writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from .. import logs
from ..config import WatchConfig
from ..health import Observation, Seen, pause_step, paused
from ..models import Alert, ProviderState
from ..store import Store
from .outcome import PollOutcome, notice_alerts

log = logging.getLogger("watcher.pipeline")

PROVIDER_STATE_TTL = 10.0  # seconds "not paused" is believed without reading it again

PollWatch = Callable[[ProviderState | None], Awaitable[PollOutcome]]


class Pauses:
    """Per provider: whether its polls may go, the probe after a pause, and the writes."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        targets: Callable[[Alert], list[tuple[str, str]]],
        *,
        dry_run: bool,
    ) -> None:
        self.store = store
        self.clock = clock
        self.targets = targets
        self.dry_run = dry_run
        self._probe_locks: dict[str, asyncio.Lock] = {}
        self._providers: dict[str, tuple[float, ProviderState | None]] = {}

    def forget(self, provider: str | None = None) -> None:
        if provider is None:
            self._providers.clear()
        else:
            self._providers.pop(provider, None)

    async def state(self, provider: str, *, fresh: bool = False) -> ProviderState | None:
        hit = self._providers.get(provider)
        # "not paused" is remembered for a few seconds; a pause is read each time (rare,
        # and when it ends, or another process ends it, matters to the minute)
        unpaused = hit is not None and not (hit[1] and hit[1].paused_until)
        if not fresh and unpaused and time.monotonic() - hit[0] < PROVIDER_STATE_TTL:
            return hit[1]
        state = await asyncio.to_thread(self.store.provider_state, provider)
        self._providers[provider] = (time.monotonic(), state)
        return state

    async def gate(self, watch: WatchConfig, poll_watch: PollWatch) -> PollOutcome:
        """Poll (``poll_watch(probing)``) unless the provider is paused; when its pause ran
        out, one poll probes and the provider's other watches wait for its answer."""
        provider = watch.provider
        pstate = await self.state(provider)
        if not (pstate and pstate.paused_until):
            return await poll_watch(None)
        if paused(pstate, self.clock()):
            return self._skipped(watch)
        async with self._probe_locks.setdefault(provider, asyncio.Lock()):
            pstate = await self.state(provider, fresh=True)
            if pstate and pstate.paused_until:
                if paused(pstate, self.clock()):
                    return self._skipped(watch)  # the probe was refused: paused again
                return await poll_watch(pstate)
        return await poll_watch(None)  # another poll's probe succeeded

    @staticmethod
    def _skipped(watch: WatchConfig) -> PollOutcome:
        return PollOutcome(watch.id, "skipped", errors=(f"{watch.provider} paused (HTTP 402)",))

    def pause(self, provider: str, watch: WatchConfig, message: str, now: datetime) -> PollOutcome:
        """A 402 (a worker thread). ``Store.pause_provider`` applies the step as one
        compare-and-set: it stores the episode's notice only when the pause starts one, so
        processes sharing the database tell it once. A dry run only reads."""
        current = self.store.provider_state(provider) if self.dry_run else None
        observation = Observation(Seen.PAYMENT_REQUIRED, error=message)
        new, notices = pause_step(current or ProviderState(provider), observation, now)
        assert new.paused_until is not None
        alerts = notice_alerts(notices, now)
        if not self.dry_run:
            rows = [(a, self.targets(a)) for a in alerts]
            if not self.store.pause_provider(provider, new.paused_until, rows):
                alerts = []
        self.forget(provider)
        logs.event(
            log,
            "provider_paused",
            logging.ERROR,
            provider=provider,
            until=new.paused_until.isoformat(),
            error=message,
        )
        return PollOutcome(watch.id, "skipped", alerts=alerts, errors=(message,))

    async def answered(
        self, probing: ProviderState, observation: Observation, now: datetime
    ) -> None:
        """The probe got an answer (anything but a 402): the pause is over."""
        if self.dry_run:
            return
        ended, _ = pause_step(probing, observation, now)
        await asyncio.to_thread(
            self.store.set_provider_state,
            probing.provider,
            paused_until=ended.paused_until,
            pause_notified=ended.pause_notified,
        )
        self.forget(probing.provider)
