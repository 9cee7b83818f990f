"""Who schedules the polls, and the poll job itself.

When: ``watcher.triggers`` (the interval grid or the crontab; a status report reads it too).
Who: ``PollJobs`` (APScheduler, one host) or ``cluster.ClusterJobs`` (procrastinate on
PostgreSQL), both ``Scheduling``. Either runs each poll through ``PollRunner``: the pipeline,
the metrics, the ``event=poll`` line operators grep, and a crash recorded on the watch
instead of swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .. import logs
from ..config import Config, WatchConfig
from ..metrics import Metrics
from ..pipeline import PollOutcome
from ..rules.tracks import is_track_rule
from ..runtime import ConfigChanges, Runtime
from ..triggers import GridTrigger as GridTrigger
from ..triggers import phase_of as phase_of
from ..triggers import trigger_for

log = logging.getLogger("watcher.daemon")

MISFIRE_GRACE = 60  # a run late by more than this is skipped (and coalesced)


class Scheduling(Protocol):
    """What the daemon asks of a scheduler: single host (``PollJobs``, APScheduler) or a
    cluster (``cluster.ClusterJobs``, procrastinate on PostgreSQL). Both run each poll
    through one ``PollRunner``."""

    @property
    def running(self) -> bool: ...

    async def start(self) -> None: ...

    def next_poll(self, watch_id: str) -> datetime | None: ...

    def pause(self) -> None: ...

    async def finish(self, grace: float, cancel_wait: Callable[[], float]) -> None: ...

    async def shutdown(self) -> None: ...

    async def reload(self, config: Config, changes: ConfigChanges) -> None:
        """Schedule a reloaded config: added watches poll now, removed ones no more, a new
        ``every`` or ``cron`` from the next poll on (the runner already has ``config``)."""
        ...


class PollRunner:
    """One poll of one watch as the daemon runs it, whoever scheduled it: the pipeline, the
    metrics, the ``event=poll`` line operators grep, the wake-up of delivery; and the polls
    in flight, which a stop waits for."""

    def __init__(
        self,
        config: Config,
        rt: Runtime,
        metrics: Metrics,
        *,
        stopping: asyncio.Event,
        on_alerts: Callable[[], None],
        on_cycle: Callable[[PollOutcome, float], None] | None = None,
    ) -> None:
        self.config = config
        self.rt = rt
        self.metrics = metrics
        self.stopping = stopping
        self.on_alerts = on_alerts
        self.on_cycle = on_cycle
        self.in_flight: set[asyncio.Task] = set()

    async def run(self, watch_id: str) -> PollOutcome | None:
        """The outcome, or None when a stop came first (or cut the poll short: the stop
        logs one line for all of them)."""
        if self.stopping.is_set():
            return None
        watch = self.config.watches.get(watch_id)
        if watch is None:  # removed by a reload while its poll was due
            return None
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        started = time.perf_counter()
        started_at = asyncio.get_running_loop().time()
        try:
            outcome = await self.rt.pipeline.poll(watch)
        except asyncio.CancelledError:
            # a stop cut it short: the stop logs one line for all of them (a scheduler
            # would log a traceback for each)
            return None
        except Exception as exc:  # past the pipeline's own net: on the watch, not swallowed
            return await self._crashed(watch_id, exc)
        finally:
            self.in_flight.discard(task)
        self.metrics.poll_duration.labels(watch=watch_id).observe(time.perf_counter() - started)
        self.metrics.polls.labels(watch=watch_id, status=outcome.status).inc()
        if outcome.status in ("failed", "partial"):
            self.metrics.poll_failures.labels(watch=watch_id).inc()
        for a in outcome.alerts:
            rule = "track" if is_track_rule(a.rule_id) else a.rule_id or "-"  # one series
            self.metrics.alerts.labels(rule=rule, kind=a.kind).inc()
        logs.event(
            log,
            "poll",
            watch=watch_id,
            status=outcome.status,
            products=outcome.products,
            pages=outcome.pages,
            alerts=len(outcome.alerts),
            error=outcome.errors[-1] if outcome.errors else None,
        )
        if outcome.alerts:
            self.on_alerts()
        if self.on_cycle is not None:
            self.on_cycle(outcome, started_at)
        return outcome

    async def finish(self, grace: float, cancel_wait: Callable[[], float]) -> None:
        """Let polls in flight finish within ``grace`` seconds, then cancel the rest."""
        if not self.in_flight:
            return
        _done, pending = await asyncio.wait(set(self.in_flight), timeout=grace)
        for t in pending:
            t.cancel()
        if pending:
            logs.event(log, "polls_cancelled", logging.WARNING, count=len(pending))
            await asyncio.wait(pending, timeout=cancel_wait())

    async def _crashed(self, watch_id: str, exc: Exception) -> PollOutcome:
        error = f"{type(exc).__name__}: {exc}"
        logs.event(log, "poll_crashed", logging.ERROR, watch=watch_id, error=repr(exc))
        self.metrics.polls.labels(watch=watch_id, status="crashed").inc()
        await asyncio.to_thread(self.record_crash, watch_id, error)
        return PollOutcome(watch_id, "failed", errors=(f"internal error: {error}",))

    def record_crash(self, watch_id: str, error: str) -> None:
        """A poll that crashed outside the pipeline's own net (a worker thread)."""
        self.rt.pipeline.forget(watch_id)  # written behind the pipeline's back
        try:
            self.rt.store.update_watch_state(watch_id, last_error=f"internal error: {error}")
        except Exception:
            logs.event(log, "crash_not_recorded", logging.ERROR, exc_info=True, watch=watch_id)


class PollJobs:
    """Single host: one APScheduler job per watch."""

    def __init__(self, config: Config, runner: PollRunner) -> None:
        self.config = config
        self.runner = runner
        self.scheduler = AsyncIOScheduler(timezone=UTC)

    @property
    def running(self) -> bool:
        return self.scheduler.running

    async def start(self) -> None:
        """Every watch polls right away (the pipeline's slots pace them), then on its own
        phase of its interval."""
        self.scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        now = datetime.now(UTC)
        for watch in self.config.watches.values():
            self._add(watch, now)
        self.scheduler.start()

    def _add(self, watch: WatchConfig, now: datetime) -> None:
        self.scheduler.add_job(
            self.runner.run,
            trigger_for(watch),
            args=[watch.id],
            id=watch.id,
            name=f"poll {watch.id}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=MISFIRE_GRACE,
            next_run_time=now,
            replace_existing=True,
        )

    async def reload(self, config: Config, changes: ConfigChanges) -> None:
        self.config = config
        now = datetime.now(UTC)
        for wid in changes.removed:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(wid)
        for wid in changes.added:
            self._add(config.watches[wid], now)
        for wid in changes.rescheduled:
            # the next poll on the new grid or crontab; a poll in flight finishes first
            self.scheduler.reschedule_job(wid, trigger=trigger_for(config.watches[wid]))

    def next_poll(self, watch_id: str) -> datetime | None:
        job = self.scheduler.get_job(watch_id)
        return job.next_run_time if job else None

    def pause(self) -> None:
        if self.scheduler.running:
            self.scheduler.pause()

    async def finish(self, grace: float, cancel_wait: Callable[[], float]) -> None:
        await self.runner.finish(grace, cancel_wait)

    async def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        """APScheduler swallows job exceptions: record them on the watch instead."""
        if event.code == EVENT_JOB_MISSED:
            logs.event(log, "poll_missed", logging.WARNING, watch=event.job_id)
            return
        exc = event.exception
        logs.event(log, "poll_crashed", logging.ERROR, watch=event.job_id, error=repr(exc))
        self.runner.metrics.polls.labels(watch=event.job_id, status="crashed").inc()
        # a listener runs on the loop: write from a worker thread, never block polls
        asyncio.get_running_loop().run_in_executor(
            None, self.runner.record_crash, event.job_id, f"{type(exc).__name__}: {exc}"
        )
