"""Cluster mode: the polls of several ``watcher run`` on one PostgreSQL, as procrastinate jobs.

One poll of one watch is one job of task ``watcher.poll`` in its provider's queue
``poll.<provider>``. The watch id is the job's ``lock`` (never two polls of one watch at once,
cluster-wide) and its ``queueing_lock`` (never two waiting). A job, when its poll is done,
defers the next one for the watch's next grid point (or cron time), so each watch keeps the
schedule a single host gives it, whichever instance is free takes the next poll, and an
instance that joins takes a share at once.

Self-healing, every ``MAINTAIN_EVERY`` seconds on every instance:
- a job whose worker stopped its heartbeat (a killed instance, a lost host) is retried; its
  poll runs again unless the watch's state shows it was committed;
- a watch with no job waiting or running (its chain broke: a database hiccup at the wrong
  moment, a watch added to the config) gets one, at the point its schedule says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import logs
from ..config import Config, WatchConfig
from ..pipeline import POLLS_PER_REQUEST_SLOT
from ..store import Store
from ..store.engine import libpq_conninfo
from ..triggers import trigger_for
from .schedule import PollRunner

log = logging.getLogger("watcher.daemon")

TASK = "watcher.poll"
MAINTAIN_EVERY = 5.0  # seconds between looks for stalled jobs and broken chains
WORKER_HEARTBEAT = 5.0  # seconds between a worker's heartbeats
STALLED_AFTER = 20.0  # a worker silent this long is gone: its jobs are retried
FETCH_EVERY = 1.0  # seconds: the latest a deferred job starts after its time
MISSED = timedelta(minutes=1)  # a poll later than this is skipped for the next one


def queue_of(provider: str) -> str:
    return f"poll.{provider}"


def next_time(watch: WatchConfig, after: datetime, now: datetime) -> datetime:
    """When the poll after one scheduled at ``after`` is due: the watch's next grid point
    (never sooner than half an interval after ``after``) or cron time. One already past is
    run now; one past by more than ``MISSED`` is skipped for the next (as APScheduler's
    misfire grace does on a single host)."""
    trigger = trigger_for(watch)
    at = trigger.get_next_fire_time(after, now)
    if at is None or at < now - MISSED:
        at = trigger.get_next_fire_time(None, now)
    return max(at, now)


def resume_time(watch: WatchConfig, last_poll: datetime | None, now: datetime) -> datetime:
    """When a watch without a queued poll polls: now if never, or if its next point after
    the last poll has passed (a single host polls every watch at start); else that point."""
    if last_poll is None:
        return now
    at = trigger_for(watch).get_next_fire_time(last_poll, now)
    return now if at is None or at <= now else at


class ClusterJobs:
    """Polls as procrastinate jobs: one worker per provider queue, the maintenance loop."""

    def __init__(self, config: Config, runner: PollRunner, store: Store) -> None:
        import procrastinate  # PostgreSQL only (the postgres extra)

        self.config = config
        self.runner = runner
        self.store = store
        self._procrastinate = procrastinate
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=libpq_conninfo(store.url),
                min_size=1,
                max_size=4 + len(config.providers),
                kwargs={"application_name": f"watcher {store.instance_id[:8]}"},
            )
        )
        self.task = self.app.task(name=TASK, pass_context=True)(self._job)
        self._workers: dict[str, Any] = {}
        self._worker_tasks: dict[str, asyncio.Task] = {}
        self._stopping = False
        self._maintainer: asyncio.Task | None = None
        self._queued: dict[str, tuple[datetime | None, str]] = {}
        self._open = False

    # ------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        tasks = self._worker_tasks.values()
        return bool(tasks) and not any(t.done() for t in tasks)

    async def start(self) -> None:
        await self.app.open_async()
        self._open = True
        await self._maintain_once()
        providers = sorted({w.provider for w in self.config.watches.values()})
        for provider in providers:
            self._start_worker(provider)
        self._maintainer = asyncio.create_task(self._maintain(), name="cluster-maintain")

    def _start_worker(self, provider: str) -> None:
        from procrastinate.worker import Worker

        pcfg = self.config.providers.get(provider)
        concurrency = max((pcfg.max_concurrency if pcfg else 4) * POLLS_PER_REQUEST_SLOT, 2)
        worker = Worker(
            self.app,
            queues=[queue_of(provider)],
            name=f"poll.{provider}",
            concurrency=concurrency,
            install_signal_handlers=False,
            delete_jobs="successful",
            fetch_job_polling_interval=FETCH_EVERY,
            update_heartbeat_interval=WORKER_HEARTBEAT,
            stalled_worker_timeout=STALLED_AFTER,
            shutdown_graceful_timeout=None,  # the daemon's stop budget decides (finish)
        )
        self._workers[provider] = worker
        self._worker_tasks[provider] = asyncio.create_task(worker.run(), name=f"poll.{provider}")

    def _revive_workers(self) -> None:
        """A worker ends when its database connection fails (PostgreSQL restarted): start a
        new one, so an instance never silently stops polling."""
        for provider, task in list(self._worker_tasks.items()):
            if task.done() and not self._stopping:
                error = None if task.cancelled() else task.exception()
                logs.event(
                    log,
                    "poll_worker_restarted",
                    logging.WARNING,
                    queue=queue_of(provider),
                    error=repr(error),
                )
                self._start_worker(provider)

    def next_poll(self, watch_id: str) -> datetime | None:
        """When this watch's waiting job is due (as of the last maintenance pass)."""
        at, status = self._queued.get(watch_id, (None, ""))
        return datetime.now(UTC) if status == "doing" else at

    def pause(self) -> None:
        """No job starts from now on (on this instance); jobs in flight go on."""
        self._stopping = True
        for worker in self._workers.values():
            worker.stop()
        if self._maintainer is not None:
            self._maintainer.cancel()

    async def finish(self, grace: float, cancel_wait: Callable[[], float]) -> None:
        """Polls in flight get ``grace`` seconds; the rest are cancelled (their jobs defer a
        poll due now, which another instance takes)."""
        await self.runner.finish(grace, cancel_wait)
        tasks = list(self._worker_tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=cancel_wait())
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
        if self._open:
            self._open = False
            with contextlib.suppress(Exception):
                await self.app.close_async()

    # ------------------------------------------------------------ one job

    async def _job(self, context: Any, watch_id: str) -> None:
        watch = self.config.watches.get(watch_id)
        if watch is None:  # gone from the config: the chain ends here
            logs.event(log, "poll_unknown_watch", logging.WARNING, watch=watch_id)
            return
        job = context.job
        now = datetime.now(UTC)
        scheduled = job.scheduled_at or now
        done = False
        try:
            if job.attempts and await self._committed_since(watch_id, scheduled):
                # a retried job of a dead instance whose poll had committed: not again
                logs.event(log, "poll_already_done", watch=watch_id)
                done = True
            else:
                done = await self.runner.run(watch_id) is not None
        finally:
            # the next poll of this watch, even when this one was cut short (then due now,
            # for whichever instance is still running)
            now = datetime.now(UTC)
            at = next_time(watch, scheduled, now) if done else now
            await asyncio.shield(self._defer(watch, at))

    async def _committed_since(self, watch_id: str, scheduled: datetime) -> bool:
        state = await asyncio.to_thread(self.store.watch_state, watch_id)
        return bool(state and state.last_poll_at and state.last_poll_at >= scheduled)

    async def _defer(self, watch: WatchConfig, at: datetime) -> bool:
        """Queue a poll of ``watch`` at ``at``; False when one is already waiting."""
        exceptions = self._procrastinate.exceptions
        try:
            await self.task.configure(
                lock=watch.id,
                queueing_lock=watch.id,
                queue=queue_of(watch.provider),
                schedule_at=at,
            ).defer_async(watch_id=watch.id)
        except exceptions.AlreadyEnqueued:
            return False
        except Exception as exc:  # the maintenance pass queues it again
            logs.event(log, "defer_failed", logging.WARNING, watch=watch.id, error=repr(exc))
            return False
        return True

    # ------------------------------------------------------------ maintenance

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTAIN_EVERY)
            try:
                self._revive_workers()
                await self._maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database hiccup: next pass
                logs.event(log, "cluster_maintain_failed", logging.WARNING, error=repr(exc))

    async def _maintain_once(self) -> None:
        await self._retry_stalled()
        queued = await self._queued_jobs()
        missing = [w for w in self.config.watches.values() if w.id not in queued]
        if missing:
            states = await asyncio.to_thread(self.store.all_watch_states)
            now = datetime.now(UTC)
            started = 0
            for watch in missing:
                st = states.get(watch.id)
                last = st.last_poll_at if st else None
                at = resume_time(watch, last, now)
                started += await self._defer(watch, at)
            if started:
                logs.event(log, "polls_queued", watches=started)
            queued = await self._queued_jobs()
        self._queued = queued

    async def _retry_stalled(self) -> None:
        """Jobs of workers that stopped their heartbeat run again, on whoever is free."""
        manager = self.app.job_manager
        stalled = list(
            await manager.get_stalled_jobs(task_name=TASK, seconds_since_heartbeat=STALLED_AFTER)
        )
        exceptions = self._procrastinate.exceptions
        for job in stalled:
            try:
                await manager.retry_job(job)
            except exceptions.UniqueViolation:
                # the job had queued its watch's next poll before its instance died (the
                # queueing lock refuses a second one waiting): this one is done
                with contextlib.suppress(exceptions.ConnectorException):
                    await manager.finish_job_by_id_async(
                        job.id, self._procrastinate.jobs.Status.FAILED, delete_job=True
                    )
            except exceptions.ConnectorException:
                continue  # another instance retried it first
            logs.event(log, "poll_taken_over", watch=job.lock, job=job.id)

    async def _queued_jobs(self) -> dict[str, tuple[datetime | None, str]]:
        rows = await self.app.connector.execute_query_all_async(
            "SELECT lock, scheduled_at, status::text AS status FROM procrastinate_jobs "
            "WHERE task_name = %(task)s AND status IN ('todo', 'doing')",
            task=TASK,
        )
        return _by_watch(rows)


def _by_watch(rows: Iterable[dict[str, Any]]) -> dict[str, tuple[datetime | None, str]]:
    out: dict[str, tuple[datetime | None, str]] = {}
    for row in rows:
        if row["status"] == "doing" or row["lock"] not in out:
            out[row["lock"]] = (row["scheduled_at"], row["status"])
    return out
