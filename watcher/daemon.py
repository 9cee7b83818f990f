"""``watcher run``: scheduling, continuous delivery, the bot, health, and a clean stop.

Lifecycle: start channels and bot → schedule every watch (first poll now) → deliver alerts as
they are stored → on SIGTERM/SIGINT pause scheduling, let in-flight polls finish (cancel them
after a grace period), flush what the outbox can deliver, close everything, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from .config import Config, WatchConfig
from .metrics import Metrics
from .pipeline import PollOutcome
from .runtime import Runtime

log = logging.getLogger("watcher.daemon")

STOP_BUDGET = 8.0  # seconds from SIGTERM to exit, all steps together (the promise is 10)
POLL_GRACE = 5.0  # seconds in-flight polls get to finish on stop
FLUSH_BUDGET = 3.0  # seconds the outbox gets on stop
PRUNE_FIRST = 30.0  # seconds after start for the first retention pass
PRUNE_EVERY = 3600.0
PRUNE_PAUSE = 0.1  # seconds between two retention batches
TAKEOVER_EVERY = 10.0  # seconds between looks for claims of dead instances
CLOSE_RESERVE = 1.5  # seconds before the deadline when no new send may start
MISFIRE_GRACE = 60  # a run late by more than this is skipped (and coalesced)


def phase_of(watch_id: str, every: float) -> float:
    """Where in its interval a watch polls, from a hash of its id: stable across restarts,
    and a fleet of watches with one interval spreads evenly over it."""
    digest = hashlib.blake2b(watch_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * every


class GridTrigger(BaseTrigger):
    """Fires on ``phase + k * every`` (UTC epoch seconds), never less than half an interval
    after the previous run: no jitter to accumulate, so a watch never drifts, and the first
    poll (run at start, off the grid) is followed by the grid's next point."""

    def __init__(self, every: float, phase: float) -> None:
        self.every = every
        self.phase = phase

    def get_next_fire_time(self, previous_fire_time, now):
        earliest = (
            previous_fire_time.timestamp() + self.every / 2
            if previous_fire_time is not None
            else now.timestamp()
        )
        k = math.ceil((earliest - self.phase) / self.every)
        return datetime.fromtimestamp(self.phase + k * self.every, tz=UTC)

    def __str__(self) -> str:
        return f"every {self.every:g}s at +{self.phase:.1f}s"


def trigger_for(watch: WatchConfig):
    if watch.cron:
        return CronTrigger.from_crontab(watch.cron, timezone=UTC)
    assert watch.every is not None
    every = watch.every.total_seconds()
    return GridTrigger(every, phase_of(watch.id, every))


class Notifier:
    """sd_notify when run under systemd (NOTIFY_SOCKET set); a no-op otherwise."""

    def __init__(self) -> None:
        self._n = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            self._n = sdnotify.SystemdNotifier()

    def __call__(self, message: str) -> None:
        if self._n is not None:
            self._n.notify(message)

    @staticmethod
    def watchdog_interval() -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        return int(usec) / 2e6 if usec and usec.isdigit() else None


class Daemon:
    def __init__(
        self,
        config: Config,
        db: str | None,
        *,
        http: str | None = None,
        on_cycle: Callable[[PollOutcome, float], None] | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.http = http
        self.metrics = Metrics()
        self.on_cycle = on_cycle
        self.notify = Notifier()
        self.rt: Runtime | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.bots: list = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._polls: set[asyncio.Task] = set()
        self._http_runner: web.AppRunner | None = None
        self.http_port: int | None = None

    # ------------------------------------------------------------ public

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._start()
            self.notify("READY=1")
            self.notify(f"STATUS=watching {len(self.config.watches)} watches")
            log.info("event=started watches=%d", len(self.config.watches))
            tasks = [asyncio.create_task(self._dispatch_loop(), name="dispatch")]
            tasks.append(asyncio.create_task(self._prune_loop(), name="prune"))
            if (interval := Notifier.watchdog_interval()) is not None:
                tasks.append(asyncio.create_task(self._watchdog(interval), name="watchdog"))
            await self._stop.wait()
            self.notify("STOPPING=1")
            log.info("event=stopping")
            await self._shutdown(tasks)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("event=stopped")
        return 0

    def status(self) -> list:
        """Per-watch state for the bot's /status: last poll, next poll, last error, products."""
        from .bot import WatchStatus

        assert self.rt is not None
        states = self.rt.store.all_watch_states()
        out = []
        for wid in self.config.watches:
            job = self.scheduler.get_job(wid) if self.scheduler else None
            st = states.get(wid)
            out.append(
                WatchStatus(
                    watch_id=wid,
                    last_poll=st.last_poll_at if st else None,
                    next_poll=job.next_run_time if job else None,
                    last_error=st.last_error if st else None,
                    products=st.products if st else 0,
                )
            )
        return out

    def healthy(self) -> bool:
        if self.scheduler is None or not self.scheduler.running or self.rt is None:
            return False
        try:
            return self.rt.store.ping()
        except Exception:  # the database not answering is exactly what health reports
            log.warning("event=health_check_failed", exc_info=True)
            return False

    # ------------------------------------------------------------ start

    async def _start(self) -> None:
        self.rt = Runtime(self.config, self.db, metrics=self.metrics)
        self.rt.dispatcher.on_outcome = self.metrics.delivery
        await self._start_bots()
        if self.http:
            await self._start_http(self.http)
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        now = datetime.now(UTC)
        for watch in self.config.watches.values():
            self.scheduler.add_job(
                self._poll_job,
                trigger_for(watch),
                args=[watch.id],
                id=watch.id,
                name=f"poll {watch.id}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=MISFIRE_GRACE,
                # every watch polls right away (the pipeline's slots pace them), then on
                # its own phase of its interval
                next_run_time=now,
            )
        self.scheduler.start()

    async def _start_bots(self) -> None:
        """One command service per Telegram channel, sharing the channel's bot."""
        assert self.rt is not None
        telegram = [c for c in self.rt.dispatcher.channels.values() if c.config.type == "telegram"]
        if not telegram:
            return
        from .bot import BotService

        for ch in telegram:
            svc = BotService(self.config, self.rt.store, ch, status=self.status)
            try:
                await svc.start()
            except Exception as exc:  # a bot that cannot start must not stop the alerts
                log.error("event=bot_start_failed channel=%s error=%s", ch.id, exc)
                continue
            self.bots.append(svc)

    async def _start_http(self, spec: str) -> None:
        host, _, port = spec.rpartition(":")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, host or "127.0.0.1", int(port))
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("event=http_listening addr=%s:%s", host or "127.0.0.1", self.http_port)

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = await asyncio.to_thread(self.healthy)
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain")

    # ------------------------------------------------------------ jobs

    async def _poll_job(self, watch_id: str) -> None:
        assert self.rt is not None
        if self._stop.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self._polls.add(task)
        started = time.perf_counter()
        started_at = asyncio.get_running_loop().time()
        try:
            outcome = await self.rt.pipeline.poll(self.config.watches[watch_id])
        except asyncio.CancelledError:
            # a stop cut it short: the stop logs one line for all of them (APScheduler
            # would log a traceback for each)
            return
        finally:
            self._polls.discard(task)
        self.metrics.poll_duration.labels(watch=watch_id).observe(time.perf_counter() - started)
        self.metrics.polls.labels(watch=watch_id, status=outcome.status).inc()
        if outcome.status in ("failed", "partial"):
            self.metrics.poll_failures.labels(watch=watch_id).inc()
        for a in outcome.alerts:
            self.metrics.alerts.labels(rule=a.rule_id or "-", kind=a.kind).inc()
        log.info(
            "event=poll watch=%s status=%s products=%d pages=%d alerts=%d%s",
            watch_id,
            outcome.status,
            outcome.products,
            outcome.pages,
            len(outcome.alerts),
            f" error={outcome.errors[-1]!r}" if outcome.errors else "",
        )
        if outcome.alerts:
            self._wake.set()
        if self.on_cycle is not None:
            self.on_cycle(outcome, started_at)

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        """APScheduler swallows job exceptions: record them on the watch instead."""
        if event.code == EVENT_JOB_MISSED:
            log.warning("event=poll_missed watch=%s", event.job_id)
            return
        exc = event.exception
        log.error("event=poll_crashed watch=%s error=%r", event.job_id, exc)
        self.metrics.polls.labels(watch=event.job_id, status="crashed").inc()
        if self.rt is not None:
            # a listener runs on the loop: write from a worker thread, never block polls
            asyncio.get_running_loop().run_in_executor(
                None, self._record_crash, event.job_id, f"{type(exc).__name__}: {exc}"
            )

    def _record_crash(self, watch_id: str, error: str) -> None:
        assert self.rt is not None
        self.rt.pipeline.forget(watch_id)  # written behind the pipeline's back
        try:
            self.rt.store.update_watch_state(watch_id, last_error=f"internal error: {error}")
        except Exception:
            log.exception("event=crash_not_recorded watch=%s", watch_id)

    async def _dispatch_loop(self) -> None:
        """Deliver new alerts within a second of being stored, and retries when due."""
        assert self.rt is not None
        loop = asyncio.get_running_loop()
        next_takeover = loop.time() + TAKEOVER_EVERY
        while not self._stop.is_set():
            try:
                if loop.time() >= next_takeover:
                    # claims of an instance that died (a killed `watcher once`, another
                    # daemon) come back within HEARTBEAT_TIMEOUT + TAKEOVER_EVERY
                    next_takeover = loop.time() + TAKEOVER_EVERY
                    if await asyncio.to_thread(self.rt.store.release_dead_claims):
                        log.info("event=claims_taken_over")
                await self.rt.dispatcher.deliver_due()
                nxt = await asyncio.to_thread(
                    self.rt.store.next_due, list(self.rt.dispatcher.channels)
                )
            except Exception as exc:  # a database hiccup must not end delivery for good
                log.error("event=dispatch_error error=%r", exc)
                nxt = None
            wait = TAKEOVER_EVERY
            if nxt is not None:
                wait = min(max((nxt - datetime.now(UTC)).total_seconds(), 0.05), TAKEOVER_EVERY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    async def _prune_loop(self) -> None:
        """Retention, off the hot path: small batches with pauses, once an hour."""
        assert self.rt is not None
        await asyncio.sleep(PRUNE_FIRST)
        while True:
            try:
                await self.rt.prune(pause=PRUNE_PAUSE)
            except Exception as exc:  # a database hiccup: try again next time
                log.error("event=prune_error error=%r", exc)
            await asyncio.sleep(PRUNE_EVERY)

    async def _watchdog(self, interval: float) -> None:
        while not self._stop.is_set():
            if await asyncio.to_thread(self.healthy):
                self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ stop

    async def _shutdown(self, tasks: list[asyncio.Task]) -> None:
        """Every step shares one deadline, so the whole stop fits systemd's patience."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_BUDGET

        def left(cap: float) -> float:
            return max(0.05, min(cap, deadline - loop.time()))

        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()
        if self.rt is not None:
            self.rt.pipeline.stop_starting()
        if self._polls:
            _done, pending = await asyncio.wait(set(self._polls), timeout=left(POLL_GRACE))
            for t in pending:
                t.cancel()
            if pending:
                log.warning("event=polls_cancelled count=%d", len(pending))
                await asyncio.wait(pending, timeout=left(1.0))
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        # Delivery is never cancelled mid-send (the receiver would see the alert again when
        # the handed-back delivery is retried): new sends stop a little before the deadline,
        # sends in flight finish, and only a send still hanging at the deadline is cut.
        dispatcher = self.rt.dispatcher if self.rt is not None else None
        stop_sends = (
            loop.call_at(deadline - CLOSE_RESERVE, dispatcher.stop_accepting)
            if dispatcher is not None
            else None
        )
        self._wake.set()
        loops = [t for t in tasks if t.get_name() == "dispatch"]
        for t in tasks:
            if t not in loops:
                t.cancel()
        if loops:
            _done, hanging = await asyncio.wait(loops, timeout=left(STOP_BUDGET))
            for t in hanging:
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.bots:
            await asyncio.gather(
                *(asyncio.wait_for(bot.stop(), left(3.0)) for bot in self.bots),
                return_exceptions=True,
            )
        if dispatcher is not None and self.rt is not None:
            if dispatcher.accepting:  # what the last polls stored, within the budget
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        dispatcher.drain(FLUSH_BUDGET), left(FLUSH_BUDGET + CLOSE_RESERVE)
                    )
            if stop_sends is not None:
                stop_sends.cancel()
            dispatcher.stop_accepting()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.rt.close(), left(2.0))
        if self._http_runner is not None:
            await self._http_runner.cleanup()
