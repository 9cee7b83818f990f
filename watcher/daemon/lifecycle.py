"""``watcher run``'s lifecycle: start, the long-running loops, signals, sd_notify, a clean stop.

Start channels and bot → schedule every watch (first poll now) → deliver alerts as they are
stored → on SIGTERM/SIGINT pause scheduling, let in-flight polls finish (cancel them after a
grace period), flush what the outbox can deliver, close everything, exit 0.

SIGHUP (``systemctl reload``) re-reads the config file (``reload``): an invalid one is
logged issue by issue and the running config stays; a valid one is applied without a
restart. A SIGHUP while the daemon is starting is applied once it has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .. import logs
from ..channels import Channel, channel_type
from ..config import Config, load_config
from ..errors import ConfigError
from ..metrics import Metrics
from ..pipeline import PollOutcome
from ..runtime import ConfigChanges, Retired, Runtime
from ..status import WatchStatus
from ..store.engine import is_postgresql, resolve_url
from ..util import iso_utc
from . import loops
from .http import HealthServer
from .runlock import RunLock
from .schedule import PollJobs, PollRunner, Scheduling

if TYPE_CHECKING:  # python-telegram-bot only where a channel has a bot
    from ..bot import BotService

log = logging.getLogger("watcher.daemon")

STOP_BUDGET = 8.0  # seconds from SIGTERM to exit, all steps together (the promise is 10)
POLL_GRACE = 5.0  # seconds in-flight polls get to finish on stop
FLUSH_BUDGET = 3.0  # seconds the outbox gets on stop
CLOSE_RESERVE = 1.5  # seconds before the deadline when no new send may start


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
    """One ``watcher run`` (or ``watcher demo``): owns the runtime, the poll jobs, the bots,
    the delivery loop and the HTTP server, and stops them in order within STOP_BUDGET."""

    def __init__(
        self,
        config: Config,
        db: str | None,
        *,
        http: str | None = None,
        on_cycle: Callable[[PollOutcome, float], None] | None = None,
        command: str = "run",
    ) -> None:
        self.config = config
        self.command = command  # recorded on the instance row (run, demo)
        self.db = resolve_url(db)
        # PostgreSQL: a cluster of as many `watcher run` as share the database (procrastinate
        # schedules the polls); SQLite: this one daemon (APScheduler), alone on its file
        self.cluster = is_postgresql(self.db)
        self._run_lock = None if self.cluster else RunLock(self.db)
        self.http = http
        self.instance_id = uuid.uuid4().hex  # its claims, its bot lock, its /metrics label
        # in a cluster every sample carries the instance (series of several never merge)
        self.metrics = Metrics(self.instance_id, cluster=True) if self.cluster else Metrics()
        self.on_cycle = on_cycle
        self.notify = Notifier()
        self.rt: Runtime | None = None
        self.jobs: Scheduling | None = None
        self.runner: PollRunner | None = None
        self.bots: list = []
        self._services: dict[str, tuple[BotService, object]] = {}  # channel → (bot, lead)
        # the CLI read the config just before: when the running config was loaded
        self.config_loaded_at = datetime.now(UTC)
        self.reload_error: str | None = None  # the last failed reload, until one succeeds
        self._reload = asyncio.Event()
        self._closing: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._server: HealthServer | None = None
        self._share = 1  # this instance's share of the providers' limits: 1/N

    # ------------------------------------------------------------ public

    @property
    def http_port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config at the next chance (reloads never overlap)."""
        self._reload.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        handlers: list[tuple[int, Callable[[], None]]] = [
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
        ]
        if self.command == "run":  # the demo's config is built in, nothing to re-read
            handlers.append((signal.SIGHUP, self.request_reload))
        for sig, handler in handlers:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)
        try:
            await self._start()
            self.notify("READY=1")
            self.notify(f"STATUS=watching {len(self.config.watches)} watches")
            logs.event(log, "started", watches=len(self.config.watches))
            assert self.rt is not None
            tasks = [
                asyncio.create_task(
                    loops.deliver(self.rt, self._stop, self._wake), name="dispatch"
                ),
                asyncio.create_task(loops.prune(self.rt), name="prune"),
            ]
            if self.cluster:
                share = loops.share(self.rt, self._share)
                tasks.append(asyncio.create_task(share, name="share"))
            if self.command == "run":
                tasks.append(asyncio.create_task(self._reloads(), name="reload"))
            if (interval := Notifier.watchdog_interval()) is not None:
                watchdog = loops.watchdog(self.healthy, self.notify, interval, self._stop)
                tasks.append(asyncio.create_task(watchdog, name="watchdog"))
            await self._stop.wait()
            self.notify("STOPPING=1")
            logs.event(log, "stopping")
            await self._shutdown(tasks)
        finally:
            for sig, _handler in handlers:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            if self.command == "run":  # removing the handler restored the default: exit
                with contextlib.suppress(ValueError):
                    signal.signal(signal.SIGHUP, signal.SIG_IGN)
        logs.event(log, "stopped")
        return 0

    def status(self) -> list[WatchStatus]:
        """Per-watch state for the bot's /status: last poll, next poll, last error, products."""
        assert self.rt is not None
        states = self.rt.store.all_watch_states()
        out = []
        for wid in self.config.watches:
            st = states.get(wid)
            out.append(
                WatchStatus(
                    watch_id=wid,
                    last_poll=st.last_poll_at if st else None,
                    next_poll=self.jobs.next_poll(wid) if self.jobs else None,
                    last_error=st.last_error if st else None,
                    products=st.products if st else 0,
                )
            )
        return out

    # ------------------------------------------------------------ reload

    async def _reloads(self) -> None:
        while not self._stop.is_set():
            await self._reload.wait()
            self._reload.clear()
            if self._stop.is_set():
                return
            try:
                await self.reload()
            except Exception as exc:  # a bug here must not end the daemon, nor reloads
                logs.event(log, "reload_failed", logging.ERROR, exc_info=True, error=repr(exc))
                self.reload_error = f"{type(exc).__name__}: {exc}"

    async def reload(self) -> bool:
        """Re-read the config file and apply it; False (the running config stays, every
        issue logged with its file:line) when it is invalid."""
        path = self.config.path
        logs.event(log, "reloading", config=path)
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            try:
                new = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                for issue in exc.issues:
                    logs.event(log, "reload_failed", logging.ERROR, error=str(issue))
                n = len(exc.issues)
                self.reload_error = f"{n} error{'s' if n != 1 else ''} in {path}"
                logs.event(
                    log,
                    "config_kept",
                    logging.WARNING,
                    errors=n,
                    loaded_at=iso_utc(self.config_loaded_at),
                )
                return False
            await self._apply(new)
            return True
        finally:
            self.notify("READY=1")
            self.notify(f"STATUS=watching {len(self.config.watches)} watches")

    async def _apply(self, new: Config) -> None:
        assert self.rt is not None and self.jobs is not None and self.runner is not None
        changes = ConfigChanges.between(self.config, new)
        # a new client takes this instance's share of its limits before it serves
        retired = await self.rt.reconfigure(
            new, changes, share=self._share if self.cluster else None
        )
        self.config = self.runner.config = new  # the runtime runs it from here on
        self.config_loaded_at = datetime.now(UTC)
        try:
            await self.jobs.reload(new, changes)
            await self._reload_bots(new, retired)
        finally:  # what was replaced is closed even when a step after it failed
            in_flight = set(self.runner.in_flight)
            for channel in retired.channels:
                with contextlib.suppress(Exception):
                    await channel.close()
            if retired.clients:  # once the polls that use them are done
                task = asyncio.create_task(self._close_clients(retired, in_flight))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        self.reload_error = None
        await self._record_loaded()

        def ids(names: tuple[str, ...]) -> str:
            return ",".join(names) or "-"

        logs.event(
            log,
            "config_reloaded",
            watches=len(new.watches),
            added=ids(changes.added),
            removed=ids(changes.removed),
            changed=ids(changes.changed),
            rules=ids(changes.rules),
            channels=ids(
                (*changes.channels_added, *changes.channels_removed, *changes.channels_changed)
            ),
            providers=ids(
                (*changes.providers_added, *changes.providers_removed, *changes.providers_changed)
            ),
        )
        for wid in changes.redefined:
            logs.event(log, "watch_redefined", watch=wid, next_poll="baseline")
        for cid in changes.channels_removed:
            # its deliveries are never claimed: pending until a channel of that id returns
            logs.event(log, "channel_removed", logging.WARNING, channel=cid, deliveries="kept")

    async def _record_loaded(self) -> None:
        """On the instance row, for ``watcher status`` and /status (a daemon's own /healthz
        has it from memory)."""
        assert self.rt is not None
        try:
            await asyncio.to_thread(self.rt.store.set_config_loaded, self.config_loaded_at)
        except Exception as exc:  # a database hiccup: only the report misses it
            logs.event(log, "config_loaded_not_recorded", logging.WARNING, error=repr(exc))

    async def _close_clients(self, retired: Retired, in_flight: set[asyncio.Task]) -> None:
        if in_flight:
            await asyncio.wait(in_flight)
        for client in retired.clients:
            with contextlib.suppress(Exception):
                await client.close()

    async def _reload_bots(self, config: Config, retired: Retired) -> None:
        """A bot whose channel was removed (or rebuilt as another type) stops; the others
        answer from the new config; a new Telegram channel gets its bot."""
        assert self.rt is not None
        channels = self.rt.dispatcher.channels
        gone: list[Channel] = list(retired.channels)
        for cid, (svc, leadership) in list(self._services.items()):
            if svc.channel in gone or channels.get(cid) is not svc.channel:
                await leadership.stop()  # type: ignore[attr-defined]
                self.bots.remove(leadership)
                del self._services[cid]
            else:
                svc.reconfigure(config)
        for ch in channels.values():
            if channel_type(ch.config.type).has_bot and ch.id not in self._services:
                try:
                    await self._start_bot(ch, config)
                except Exception as exc:  # one bot failing to start keeps the others going
                    logs.event(
                        log, "bot_start_failed", logging.ERROR, channel=ch.id, error=repr(exc)
                    )

    def healthy(self) -> bool:
        if self.jobs is None or not self.jobs.running or self.rt is None:
            return False
        try:
            return self.rt.store.ping()
        except Exception:  # the database not answering is exactly what health reports
            logs.event(log, "health_check_failed", logging.WARNING, exc_info=True)
            return False

    def info(self) -> dict[str, object]:
        """/healthz's account of this instance: who it is, and whether it is in the cluster
        (its heartbeat fresh in the database and its poll workers running)."""
        assert self.rt is not None
        instances = self.rt.store.instances()
        me = next((i for i in instances if i.id == self.instance_id), None)
        return {
            "instance": self.instance_id,
            "config_loaded_at": iso_utc(self.config_loaded_at),
            "config_reload_error": self.reload_error,
            "cluster": self.cluster,
            "in_cluster": bool(me and me.alive and self.jobs and self.jobs.running),
            "instances_alive": sum(1 for i in instances if i.alive and i.command != "once"),
            "serves_bot": any(b.is_leader for b in self.bots),
        }

    # ------------------------------------------------------------ start

    async def _start(self) -> None:
        if self._run_lock is not None:  # before anything is opened: a refusal changes nothing
            self._run_lock.acquire()
        self.rt = Runtime(
            self.config,
            self.db,
            metrics=self.metrics,
            shared=self.cluster,
            command=self.command,
            instance_id=self.instance_id,
        )
        if self._run_lock is not None:
            self._run_lock.name(self.rt.store.instance_id)
        await self._record_loaded()
        self.rt.dispatcher.on_outcome = self.metrics.delivery
        await self._start_bots()
        if self.cluster:  # before the first poll: the limits are the cluster's
            self._share = await loops.apply_share(self.rt)
        self.runner = runner = PollRunner(
            self.config,
            self.rt,
            self.metrics,
            stopping=self._stop,
            on_alerts=self._wake.set,
            on_cycle=self.on_cycle,
        )
        if self.cluster:
            from .cluster import ClusterJobs

            self.jobs = ClusterJobs(self.config, runner, self.rt.store)
        else:
            self.jobs = PollJobs(self.config, runner)
        await self.jobs.start()
        if self.http:  # once polls are scheduled: /healthz answers 200 from its first request
            self._server = HealthServer(self.healthy, self.metrics, info=self.info)
            await self._server.start(self.http)

    async def _start_bots(self) -> None:
        """One command service per channel whose type has a bot (Telegram), sharing its
        client, on the one instance that leads for it: in a cluster the holder of its
        PostgreSQL advisory lock (two pollers of one token get 409 from Telegram); alone,
        this daemon. Every instance sends alerts through the channel either way."""
        assert self.rt is not None
        chats = [
            c for c in self.rt.dispatcher.channels.values() if channel_type(c.config.type).has_bot
        ]
        for ch in chats:
            await self._start_bot(ch)

    async def _start_bot(self, ch: Channel, config: Config | None = None) -> None:
        from ..bot import BotService
        from .leader import Leadership, LocalLeadership

        assert self.rt is not None
        # alone, the scheduler knows the next polls exactly; a cluster's come from the
        # job queue, which the report reads itself
        status = None if self.cluster else self.status
        svc = BotService(config or self.config, self.rt.store, ch, status=status)  # type: ignore[arg-type]
        kind = Leadership if self.cluster else LocalLeadership
        leadership = kind(
            self.db, ch.id, on_elected=self._bot_up(svc), on_deposed=self._bot_down(svc)
        )
        await leadership.start()
        self.bots.append(leadership)
        self._services[ch.id] = (svc, leadership)

    def _bot_up(self, svc: BotService) -> Callable[[], Awaitable[None]]:
        async def elected() -> None:
            try:
                await svc.start()
            except Exception as exc:  # a bot that cannot start must not stop the alerts
                logs.event(
                    log, "bot_start_failed", logging.ERROR, channel=svc.channel_id, error=str(exc)
                )
                if self.cluster:
                    raise  # step down: another instance may be able to
                return
            assert self.rt is not None
            await asyncio.to_thread(self.rt.store.set_serves_bot, True)

        return elected

    def _bot_down(self, svc: BotService) -> Callable[[], Awaitable[None]]:
        async def deposed() -> None:
            await svc.stop()
            assert self.rt is not None
            with contextlib.suppress(Exception):  # the database may be what deposed it
                await asyncio.to_thread(self.rt.store.set_serves_bot, False)

        return deposed

    # ------------------------------------------------------------ stop

    async def _shutdown(self, tasks: list[asyncio.Task]) -> None:
        """Every step shares one deadline, so the whole stop fits systemd's patience."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_BUDGET

        def left(cap: float) -> float:
            return max(0.05, min(cap, deadline - loop.time()))

        if self.jobs is not None:
            self.jobs.pause()
        if self.rt is not None:
            self.rt.pipeline.stop_starting()
        if self.jobs is not None:
            await self.jobs.finish(left(POLL_GRACE), lambda: left(1.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.jobs.shutdown(), left(3.0))
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
        if self._closing:  # clients a reload retired: their polls are over by now
            _done, hanging = await asyncio.wait(self._closing, timeout=left(1.0))
            for t in hanging:
                t.cancel()
        if self._server is not None:
            await self._server.close()
        if self._run_lock is not None:
            self._run_lock.release()
