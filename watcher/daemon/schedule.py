"""When each watch polls, and the poll job itself.

When: ``watcher.triggers`` (the interval grid or the crontab; a status report reads it too).
The job polls through the pipeline, counts the outcome in the metrics, writes the
``event=poll`` line operators grep, and records on the watch what APScheduler would otherwise
swallow (a crashing job).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .. import logs
from ..config import Config
from ..metrics import Metrics
from ..pipeline import PollOutcome
from ..runtime import Runtime
from ..triggers import GridTrigger as GridTrigger
from ..triggers import phase_of as phase_of
from ..triggers import trigger_for

log = logging.getLogger("watcher.daemon")

MISFIRE_GRACE = 60  # a run late by more than this is skipped (and coalesced)


class PollJobs:
    """One APScheduler job per watch, and the polls in flight (a stop waits for them)."""

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
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.in_flight: set[asyncio.Task] = set()

    @property
    def running(self) -> bool:
        return self.scheduler.running

    def start(self) -> None:
        """Every watch polls right away (the pipeline's slots pace them), then on its own
        phase of its interval. Call inside the running loop."""
        self.scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        now = datetime.now(UTC)
        for watch in self.config.watches.values():
            self.scheduler.add_job(
                self._poll,
                trigger_for(watch),
                args=[watch.id],
                id=watch.id,
                name=f"poll {watch.id}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=MISFIRE_GRACE,
                next_run_time=now,
            )
        self.scheduler.start()

    def next_poll(self, watch_id: str) -> datetime | None:
        job = self.scheduler.get_job(watch_id)
        return job.next_run_time if job else None

    def pause(self) -> None:
        if self.scheduler.running:
            self.scheduler.pause()

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

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def _poll(self, watch_id: str) -> None:
        if self.stopping.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        started = time.perf_counter()
        started_at = asyncio.get_running_loop().time()
        try:
            outcome = await self.rt.pipeline.poll(self.config.watches[watch_id])
        except asyncio.CancelledError:
            # a stop cut it short: the stop logs one line for all of them (APScheduler
            # would log a traceback for each)
            return
        finally:
            self.in_flight.discard(task)
        self.metrics.poll_duration.labels(watch=watch_id).observe(time.perf_counter() - started)
        self.metrics.polls.labels(watch=watch_id, status=outcome.status).inc()
        if outcome.status in ("failed", "partial"):
            self.metrics.poll_failures.labels(watch=watch_id).inc()
        for a in outcome.alerts:
            self.metrics.alerts.labels(rule=a.rule_id or "-", kind=a.kind).inc()
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

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        """APScheduler swallows job exceptions: record them on the watch instead."""
        if event.code == EVENT_JOB_MISSED:
            logs.event(log, "poll_missed", logging.WARNING, watch=event.job_id)
            return
        exc = event.exception
        logs.event(log, "poll_crashed", logging.ERROR, watch=event.job_id, error=repr(exc))
        self.metrics.polls.labels(watch=event.job_id, status="crashed").inc()
        # a listener runs on the loop: write from a worker thread, never block polls
        asyncio.get_running_loop().run_in_executor(
            None, self._record_crash, event.job_id, f"{type(exc).__name__}: {exc}"
        )

    def _record_crash(self, watch_id: str, error: str) -> None:
        self.rt.pipeline.forget(watch_id)  # written behind the pipeline's back
        try:
            self.rt.store.update_watch_state(watch_id, last_error=f"internal error: {error}")
        except Exception:
            logs.event(log, "crash_not_recorded", logging.ERROR, exc_info=True, watch=watch_id)
