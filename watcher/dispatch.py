"""Drains the outbox: claim what is due → plan → send → mark sent, or back off, or mark dead.

The deciding is pure (``delivery.plan``: what is held, what is grouped into digests;
``delivery.policy``: retry at or dead); this module is the I/O around it. A delivery is
marked sent only after the channel confirmed it, so a crash between the two repeats it
(at-least-once); receivers drop repeats by ``alert_id``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from . import logs
from .channels import Channel
from .delivery.plan import Item, Message, Mutes, TargetPlan, plan, quiet_until
from .delivery.policy import RETRY_AFTER_CAP, Dead, Retry, after_failure, backoff_delay
from .errors import ChatGone, ChatMoved, DeliveryError
from .kinds import CHANNEL_TYPES
from .store import HEARTBEAT_EVERY, Store

__all__ = ["RETRY_AFTER_CAP", "Dispatcher", "backoff_delay", "quiet_until"]

log = logging.getLogger("watcher.dispatch")


async def _all(aws: Iterable[Awaitable[None]]) -> None:
    """Await every one, even when one fails (a send left running after its pass ended
    would race the next pass for the same delivery); then raise the first failure."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _log_failure(
    channel: str, target: str, message: Message, fate: Retry | Dead, exc: DeliveryError
) -> None:
    fields = {
        "attempts": fate.attempts,
        "channel": channel,
        "target": target or "-",
        "alerts": ",".join(a.alert_id for a in message.alerts),
    }
    if isinstance(fate, Dead):
        logs.event(log, "dead", logging.ERROR, **fields, error=str(exc))
    else:
        retry_in = f"{fate.delay:.1f}s"
        logs.event(log, "retry", logging.WARNING, **fields, retry_in=retry_in, error=str(exc))


class SentMarks:
    """Marks sent deliveries in few transactions: sends that finish while a mark is being
    written are marked together next; each send still returns only once its own mark is
    committed."""

    def __init__(self, write: Callable[[list[int]], Awaitable[object]]) -> None:
        self._write = write
        self._lock = asyncio.Lock()
        self._pending: tuple[list[int], asyncio.Future] | None = None
        self._flushes: set[asyncio.Task] = set()

    async def mark(self, ids: list[int]) -> None:
        loop = asyncio.get_running_loop()
        if self._pending is None:
            done = loop.create_future()
            done.add_done_callback(_retrieved)  # every waiter may be gone (a stop)
            self._pending = ([], done)
            task = loop.create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        batch, done = self._pending
        batch.extend(ids)
        await asyncio.shield(done)

    async def _flush(self) -> None:
        async with self._lock:
            assert self._pending is not None
            (ids, done), self._pending = self._pending, None
            try:
                await self._write(ids)
            except BaseException as exc:
                if not done.done():
                    done.set_exception(
                        exc
                        if isinstance(exc, Exception)
                        else DeliveryError("stopped before the send was marked", retryable=True)
                    )
                raise
            else:
                done.set_result(None)

    async def written(self) -> None:
        """Every mark of a finished send is committed before claims are handed back (or
        the process ends): a send handed back unmarked would be sent again."""
        while self._flushes:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)


class Heartbeat:
    """Renews this instance's heartbeat while it may hold claims (even mid-send)."""

    def __init__(self, beat: Callable[[], Awaitable[object]]) -> None:
        self._beat = beat
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())
            try:
                await self._beat()
            except Exception as exc:  # a database hiccup: the next beat tries again
                logs.event(log, "heartbeat_failed", logging.WARNING, error=repr(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _merging(channels: Mapping[str, Channel]) -> frozenset[str]:
    """The channels that send a product's alerts of one poll as one message."""
    types = {cid: CHANNEL_TYPES.get(ch.config.type) for cid, ch in channels.items()}
    return frozenset(c for c, t in types.items() if t and t.merges_per_product)


class Dispatcher:
    """Sends due deliveries through their channels; one instance per process."""

    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        on_outcome: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.on_outcome = on_outcome
        self.store = store
        self.channels = channels
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        self._lock = asyncio.Lock()
        self._accepting = True
        self._heartbeat = Heartbeat(lambda: self._db(self.store.heartbeat))
        # the outbox's reads and writes never queue behind the polls' database work
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dispatch")
        self._marks = SentMarks(lambda ids: self._db(self.store.mark_sent, ids, self.clock()))
        self._per_product = _merging(channels)

    async def _db(self, fn: Callable[..., object], *args: object, **kwargs: object):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # ------------------------------------------------------------ lifecycle

    def stop_accepting(self) -> None:
        """No new send starts from now on; sends in flight finish.

        What a pass did not start is handed back (``deliver_due``'s ``finally``). Cancelling
        a send instead would leave its outcome unknown and the receiver would get it twice.
        """
        self._accepting = False

    async def replace_channels(self, channels: Mapping[str, Channel]) -> None:
        """A reloaded config's channels, from the next pass on (a pass under way ends with
        the channels it started with). Deliveries of a channel no longer configured are not
        claimed: they stay pending, and go out if a channel of that id comes back."""
        async with self._lock:
            self.channels = channels
            self._per_product = _merging(channels)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def busy(self) -> bool:
        """A pass is under way (claimed before, marked after: all of it inside)."""
        return self._lock.locked()

    # ------------------------------------------------------------ one pass

    async def deliver_due(self) -> int:
        """One pass over everything due now; returns how many deliveries were attempted."""
        self._heartbeat.start()
        async with self._lock:
            due, mutes = await self._db(self._claim, self.clock())
            if not due:
                return 0
            token = due[0][0].claim
            try:
                await _all(self._execute(t) for t in self.plan(due, mutes))
            finally:
                # A pass cut short (shutdown) hands back what it did not get to, at once,
                # instead of leaving it leased for minutes; what was sent is marked first.
                try:
                    await asyncio.shield(self._marks.written())
                finally:
                    if token is not None:
                        # off the loop (it may wait for SQLite's write lock), and shielded:
                        # a cancelled pass still hands its claims back
                        await asyncio.shield(
                            self._db(self.store.release_claim, token, self.clock())
                        )
            return len(due)

    def _claim(self, now: datetime) -> tuple[list[Item], Mutes]:
        """What is due, and the mutes that may hold it: one trip to the database thread."""
        due = self.store.claim_due(now, list(self.channels))
        return due, (self.store.mutes() if due else {})

    def plan(self, due: list[Item], mutes: Mutes) -> list[TargetPlan]:
        """The pure plan of this pass, from the channels' settings and the clock."""
        settings = {cid: ch.config for cid, ch in self.channels.items()}
        return plan(due, settings, mutes, self.clock(), per_product=self._per_product)

    async def _execute(self, target: TargetPlan) -> None:
        """Hold a target's deliveries, or send its messages one after another, in order."""
        if target.held_until is not None:
            await self._db(self.store.hold, target.ids, target.held_until)
            where = {"channel": target.channel, "target": target.target or "-"}
            until = target.held_until.isoformat()
            logs.event(log, "holding", **where, alerts=len(target.ids), until=until)
            return
        for message in target.messages:
            await self._send(self.channels[target.channel], target.target, message)

    async def _send(self, channel: Channel, target: str, message: Message) -> None:
        if not self._accepting:
            return  # stopping: left pending, handed back when the pass ends
        try:
            try:
                await self._deliver(channel, target, message)
            except DeliveryError:
                raise
            except Exception as exc:  # a channel bug must not park a delivery forever
                fields = {"channel": channel.id, "target": target or "-"}
                logs.event(log, "send_error", logging.ERROR, exc_info=True, **fields)
                raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except DeliveryError as exc:
            await self._failed(channel, target, message, exc)
            return
        await self._marks.mark(message.ids)
        self._count(channel.id, "sent", len(message.ids))
        logs.event(
            log,
            "sent",
            alerts=",".join(a.alert_id for a in message.alerts),
            channel=channel.id,
            target=target or "-",
        )

    async def _deliver(self, channel: Channel, target: str, message: Message) -> None:
        """One send; a chat that moved is followed once, at once (a second move in the same
        delivery is an ordinary retryable failure)."""
        try:
            await channel.send(target, message.alerts)
        except ChatMoved as moved:
            logs.event(
                log, "chat_migrated", channel=channel.id, chat=moved.old_id, new=moved.new_id
            )
            await self._db(self.store.migrate_chat, channel.id, moved.old_id, moved.new_id)
            try:
                await channel.send(str(moved.new_id), message.alerts)
            except ChatMoved as again:
                raise DeliveryError(str(again), retryable=True) from again

    async def _failed(
        self, channel: Channel, target: str, message: Message, exc: DeliveryError
    ) -> None:
        if isinstance(exc, ChatGone):
            logs.event(log, "chat_gone", logging.WARNING, channel=channel.id, chat=exc.chat_id)
            await self._db(self.store.forget_chat, channel.id, exc.chat_id)
        fate = after_failure(
            max(d.attempts for d, _ in message.items),
            retryable=exc.retryable,
            retry_after=exc.retry_after,
            max_attempts=channel.config.max_attempts,
            now=self.clock(),
            jitter=self.rand(),
        )
        dead = isinstance(fate, Dead)
        await self._db(
            self.store.mark_failed,
            message.ids,
            error=str(exc),
            dead=dead,
            next_attempt_at=fate.at if isinstance(fate, Retry) else None,
        )
        self._count(channel.id, "dead" if dead else "retry", len(message.ids))
        _log_failure(channel.id, target, message, fate, exc)

    def _count(self, channel: str, outcome: str, n: int) -> None:
        if self.on_outcome is not None:
            self.on_outcome(channel, outcome, n)

    # ------------------------------------------------------------ loops

    async def drain(self, budget: float) -> bool:
        """Deliver until nothing is pending or ``budget`` seconds passed; True if all done.

        Waits for retries that come due within the budget (``watcher once``: 30 s).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        while self._accepting:
            await self.deliver_due()
            nxt = await self._db(self.store.next_due, list(self.channels))
            if nxt is None:
                return True
            wait = (nxt - self.clock()).total_seconds()
            if loop.time() + max(wait, 0) > deadline:
                return False
            if wait > 0:
                await self.sleep(wait)
        return False

    async def close(self) -> None:
        await self._marks.written()
        await self._heartbeat.stop()
        for ch in self.channels.values():
            await ch.close()
        self._executor.shutdown(wait=False)
