"""Cluster mode: the polls of several ``watcher run`` on one PostgreSQL, as procrastinate jobs.

One poll of one watch is one job of task ``watcher.poll`` in its provider's queue
``poll.<provider>``. The watch id is the job's ``lock`` (never two polls of one watch at once,
cluster-wide) and its ``queueing_lock`` (never two waiting). A job, when its poll is done,
defers the next one for the watch's next grid point (or cron time), so each watch keeps the
schedule a single host gives it, whichever instance is free takes the next poll, and an
instance that joins takes a share at once.

Self-healing, every ``MAINTAIN_EVERY`` seconds on every instance:
- a job whose worker stopped its heartbeat (a killed instance, a lost host), or whose
  instance is known dead (restarted on the same host: its PID is gone), is retried; its
  poll runs again unless the watch's state shows it was committed;
- a watch with no job waiting or running (its chain broke: a database hiccup at the wrong
  moment, a watch added to the config) gets one, at the point its schedule says.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .. import logs
from ..config import Config, WatchConfig
from ..pipeline import POLLS_PER_REQUEST_SLOT
from ..runtime import ConfigChanges
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
POOL_WAIT = 5.0  # seconds a query waits for a connection of the job queue's pool
JOB_GRACE = 6.0  # seconds a stopping worker waits for its jobs (the polls get 5)
_RECOVER_KEY = 0x77617463686A6F62  # "watchjob": one recovery pass at a time, cluster-wide
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
                timeout=POOL_WAIT,  # a stop during a database outage must not wait 30 s
                kwargs={"application_name": f"watcher {store.instance_id[:8]}"},
            )
        )
        self.task = self.app.task(name=TASK, pass_context=True)(self._job)
        self._workers: dict[str, Any] = {}
        self._worker_tasks: dict[str, asyncio.Task] = {}
        self._stopping = False
        self._maintainer: asyncio.Task | None = None
        self._queued: dict[str, tuple[datetime | None, str]] = {}
        self._suspects: set[int] = set()  # our workers' doing jobs they do not run
        self._recorded: list[int] = []  # the worker ids our instance row names
        self._started = False
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
        self._started = True
        providers = sorted({w.provider for w in self.config.watches.values()})
        for provider in providers:
            self._start_worker(provider)
        self._maintainer = asyncio.create_task(self._maintain(), name="cluster-maintain")

    def _start_worker(self, provider: str) -> None:
        pcfg = self.config.providers.get(provider)
        concurrency = max((pcfg.max_concurrency if pcfg else 4) * POLLS_PER_REQUEST_SLOT, 2)
        worker = _worker_class()(
            self.app,
            queues=[queue_of(provider)],
            name=f"poll.{provider}",
            concurrency=concurrency,
            install_signal_handlers=False,
            delete_jobs="always",  # the chain goes on by itself: no finished row is kept
            fetch_job_polling_interval=FETCH_EVERY,
            update_heartbeat_interval=WORKER_HEARTBEAT,
            stalled_worker_timeout=STALLED_AFTER,
            shutdown_graceful_timeout=JOB_GRACE,
        )
        worker.on_registered = self._record_workers
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

    def _worker_ids(self) -> list[int]:
        return sorted(w.worker_id for w in self._workers.values() if w.worker_id is not None)

    async def _record_workers(self) -> None:
        """Name our workers in our instance row, so a restart here, or a survivor, retries
        their jobs the moment this instance is known dead."""
        ids = self._worker_ids()
        try:
            await asyncio.to_thread(self.store.set_poll_workers, ids)
            self._recorded = ids
        except Exception as exc:  # then their heartbeat tells it, STALLED_AFTER later
            logs.event(log, "record_workers_failed", logging.WARNING, error=repr(exc))

    async def reload(self, config: Config, changes: ConfigChanges) -> None:
        """A removed watch's chain ends at its next job (``_job`` finds it gone); an added
        one is queued now (a new provider gets its worker); a waiting job of a watch with a
        new ``every`` or ``cron`` moves to the new schedule's next point."""
        old, self.config = self.config, config
        for name in changes.providers_changed:
            was, now_ = old.providers[name], config.providers[name]
            if name in self._workers and was.max_concurrency != now_.max_concurrency:
                # its requests obey the new limit at once; its worker's job slots do not
                logs.event(
                    log,
                    "restart_needed",
                    logging.WARNING,
                    queue=queue_of(name),
                    reason="max_concurrency sizes the poll worker",
                )
        for provider in sorted({w.provider for w in config.watches.values()}):
            if provider not in self._workers and not self._stopping:
                self._start_worker(provider)
        now = datetime.now(UTC)
        queued = 0
        for wid in changes.added:
            queued += await self._defer(config.watches[wid], now)
        if queued:
            logs.event(log, "polls_queued", watches=queued)
        for wid in changes.rescheduled:
            at = trigger_for(config.watches[wid]).get_next_fire_time(None, now)
            try:
                await self.app.connector.execute_query_async(
                    "UPDATE procrastinate_jobs SET scheduled_at = %(at)s "
                    "WHERE task_name = %(task)s AND status = 'todo' AND lock = %(watch)s",
                    at=at,
                    task=TASK,
                    watch=wid,
                )
            except Exception as exc:  # then from the poll after the waiting one
                logs.event(log, "reschedule_failed", logging.WARNING, watch=wid, error=repr(exc))
        with contextlib.suppress(Exception):  # the next maintenance pass reads it anyway
            self._queued = await self._queued_jobs()

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
            if pending:  # a worker still unregistering (a slow database): not waited for
                await asyncio.wait(pending, timeout=cancel_wait())

    async def shutdown(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
        if self._open:
            self._open = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.app.close_async(), POOL_WAIT / 2)

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
            # for whichever instance is still running), on its schedule as the config says
            # now (a reload meanwhile: a new interval, or the watch removed: the chain ends)
            watch = self.config.watches.get(watch_id)
            if watch is not None:
                now = datetime.now(UTC)
                at = next_time(watch, scheduled, now) if done else now
                with contextlib.suppress(TimeoutError):  # the maintenance pass queues it then
                    await asyncio.wait_for(asyncio.shield(self._defer(watch, at)), POOL_WAIT)

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
        if self._worker_ids() != self._recorded:  # two first writes crossed, or one failed
            await self._record_workers()
        await self._retry_stalled()
        queued = await self._queued_jobs()
        missing = [w for w in self.config.watches.values() if w.id not in queued]
        if missing:
            # at start a watch with no chain polls now, as every watch does when a single
            # host starts; later (a chain broke, or an instance with an older config ended
            # it during a rolling update) at its next point, as if nothing had happened
            now = datetime.now(UTC)
            started = 0
            for watch in missing:
                at = trigger_for(watch).get_next_fire_time(None, now) if self._started else now
                started += await self._defer(watch, at)
            if started:
                logs.event(log, "polls_queued", watches=started)
            queued = await self._queued_jobs()
        self._queued = queued

    async def _retry_stalled(self) -> None:
        """Poll jobs left ``doing`` by a worker that is gone (its heartbeat stopped) or by
        one of ours that is not running them (a lost reply, a failed final write: seen
        twice, five seconds apart) run again, on whoever is free."""
        mine = {
            job_id
            for w in self._workers.values()
            if w.worker_id is not None
            for job_id in (await self._doing_on(w.worker_id)) - w.running_job_ids()
        }
        orphans, self._suspects = mine & self._suspects, mine
        dead = await asyncio.to_thread(self.store.dead_poll_workers)
        for watch_id, outcome in await asyncio.to_thread(
            recover, self.store.engine, sorted(orphans), STALLED_AFTER, dead
        ):
            logs.event(log, "poll_taken_over", watch=watch_id, outcome=outcome)

    async def _doing_on(self, worker_id: int) -> set[int]:
        rows = await self.app.connector.execute_query_all_async(
            "SELECT id FROM procrastinate_jobs WHERE status = 'doing' "
            "AND task_name = %(task)s AND worker_id = %(worker)s",
            task=TASK,
            worker=worker_id,
        )
        return {row["id"] for row in rows}

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


_STALLED = text(
    """
    SELECT j.id, j.lock, j.scheduled_at FROM procrastinate_jobs j
    LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
    WHERE j.task_name = :task AND j.status = 'doing'
      AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => :secs)
           OR j.id = ANY(CAST(:orphans AS bigint[]))
           OR j.worker_id = ANY(CAST(:dead AS bigint[])))
    FOR UPDATE OF j SKIP LOCKED
    """
)


_RETRY = text("SELECT procrastinate_retry_job_v2(:id, COALESCE(:at, now()), NULL, NULL, NULL)")


def recover(
    engine: Engine, orphans: list[int], stalled_after: float, dead: Iterable[int] = ()
) -> list[tuple[str, str]]:
    """Put stalled poll jobs back in the queue, in one transaction that holds their rows
    (a worker cannot take one meanwhile, and two instances never recover one twice): those
    of workers silent ``stalled_after`` seconds, of ``dead`` workers, and ``orphans``.

    A job keeps its scheduled time, so its poll can tell whether the dead instance had
    committed it. A job whose watch already has its next poll waiting (it was queued before
    the instance died: the queueing lock refuses a second) is done and removed. Returns
    (watch id, "retried" or "done") per job.
    """
    out: list[tuple[str, str]] = []
    with engine.begin() as conn:
        if not conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _RECOVER_KEY}
        ).scalar():
            return out  # another instance is at it
        rows = conn.execute(
            _STALLED,
            {"task": TASK, "secs": stalled_after, "orphans": orphans, "dead": list(dead)},
        ).all()
        for job_id, lock, scheduled_at in rows:
            savepoint = conn.begin_nested()
            try:
                conn.execute(
                    _RETRY,
                    {"id": job_id, "at": scheduled_at},
                )
                savepoint.commit()
                out.append((lock, "retried"))
            except IntegrityError:
                savepoint.rollback()
                conn.execute(
                    text("SELECT procrastinate_finish_job_v1(:id, 'failed', true)"),
                    {"id": job_id},
                )
                out.append((lock, "done"))
    return out


@functools.cache
def _worker_class() -> type:
    """procrastinate's worker, made to outlive database hiccups: a heartbeat that fails
    once is tried again next time (procrastinate's own would stop the worker, and the
    others would retry its polls while they still run), and a job's final write is tried
    three times (a row left ``doing`` blocks its watch's lock)."""
    from procrastinate.exceptions import ConnectorException
    from procrastinate.worker import Worker

    class PollWorker(Worker):
        async def _update_heartbeat(self) -> None:
            while True:
                await asyncio.sleep(self.update_heartbeat_interval)
                try:
                    assert self.worker_id is not None
                    await self.app.job_manager.update_heartbeat(self.worker_id)
                except ConnectorException as exc:
                    logs.event(log, "worker_heartbeat_failed", logging.WARNING, error=repr(exc))

        async def _persist_job_status(self, *args: Any, **kwargs: Any) -> None:
            for attempt in range(3):
                try:
                    return await super()._persist_job_status(*args, **kwargs)
                except ConnectorException as exc:
                    if attempt == 2:
                        raise
                    logs.event(log, "job_status_retry", logging.WARNING, error=repr(exc))
                    await asyncio.sleep(1.0)

        on_registered: Callable[[], Awaitable[None]] | None = None

        async def _run_loop(self) -> None:
            if self.on_registered is not None:  # worker_id is known from here on
                await self.on_registered()
            await super()._run_loop()

        def running_job_ids(self) -> set[int]:
            return {c.job.id for c in self._running_jobs.values() if c.job.id is not None}

    return PollWorker
