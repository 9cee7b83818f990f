"""Drains the outbox: claim what is due → send → mark sent, or back off, or mark dead.

A delivery is marked sent only after the channel confirmed it, so a crash between the two
repeats it (at-least-once); receivers drop repeats by ``alert_id``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .channels import Channel
from .errors import DeliveryError
from .models import Alert
from .store import HEARTBEAT_EVERY, DeliveryRow, Store

log = logging.getLogger("watcher.dispatch")

# Attempt n waits about BACKOFF_BASE * BACKOFF_FACTOR**n, jittered: 2 s, 8 s, 32 s, 2 min,
# 8.5 min, 34 min, 1 h: the default 8 attempts ride out one to two hours of downtime, while
# `watcher once` still gets three tries inside its 30 s.
BACKOFF_BASE = 2.0
BACKOFF_FACTOR = 4
BACKOFF_CAP = 3600.0
RETRY_AFTER_CAP = 3600.0  # a receiver's Retry-After is honoured, up to an hour


def backoff_delay(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter in [0.5, 1.0] of the step, so retries spread out."""
    step = min(BACKOFF_CAP, BACKOFF_BASE * BACKOFF_FACTOR ** min(attempts, 20))
    return step * (0.5 + rand() / 2)


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


def quiet_until(now: datetime, window: tuple[str, str] | None, tz: str) -> datetime | None:
    """When the quiet window that ``now`` falls in ends (UTC), or None outside quiet hours.

    ``window`` is local wall-clock ("23:00", "07:00") in ``tz``; it may cross midnight.
    """
    if not window:
        return None
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    start, end = (time(*map(int, w.split(":"))) for w in window)
    t = local.time().replace(tzinfo=None)
    if start == end:
        return None
    end_day: date = local.date()
    if start < end:
        inside = start <= t < end
    else:
        inside = t >= start or t < end
        if t >= start:
            end_day += timedelta(days=1)
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


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
        self._heartbeat: asyncio.Task | None = None
        # the outbox's reads and writes never queue behind the polls' database work
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dispatch")
        self._mark_lock = asyncio.Lock()
        self._marks: tuple[list[int], asyncio.Future] | None = None
        self._flushes: set[asyncio.Task] = set()

    async def _db(self, fn: Callable[..., object], *args: object, **kwargs: object):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _mark_sent(self, ids: list[int]) -> None:
        """Sends that finish while a mark is being written are marked together next, in one
        transaction; each send still returns only once its own mark is committed."""
        loop = asyncio.get_running_loop()
        if self._marks is None:
            done = loop.create_future()
            done.add_done_callback(_retrieved)  # every waiter may be gone (a stop)
            self._marks = ([], done)
            task = loop.create_task(self._flush_marks())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        batch, done = self._marks
        batch.extend(ids)
        await asyncio.shield(done)

    async def _flush_marks(self) -> None:
        async with self._mark_lock:
            assert self._marks is not None
            (ids, done), self._marks = self._marks, None
            try:
                await self._db(self.store.mark_sent, ids, self.clock())
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

    async def _marks_written(self) -> None:
        """Every mark of a finished send is committed before claims are handed back (or
        the process ends): a send handed back unmarked would be sent again."""
        while self._flushes:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)

    def stop_accepting(self) -> None:
        """No new send starts from now on; sends in flight finish.

        What a pass did not start is handed back (``deliver_due``'s ``finally``). Cancelling
        a send instead would leave its outcome unknown and the receiver would get it twice.
        """
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def busy(self) -> bool:
        """A pass is under way (claimed before, marked after: all of it inside)."""
        return self._lock.locked()

    async def deliver_due(self) -> int:
        """One pass over everything due now; returns how many deliveries were attempted."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        async with self._lock:
            due, mutes = await self._db(self._claim, self.clock())
            if not due:
                return 0
            token = due[0][0].claim
            try:
                groups: dict[tuple[str, str], list[tuple[DeliveryRow, Alert]]] = defaultdict(list)
                for row, alert in due:
                    groups[(row.channel, row.target)].append((row, alert))
                await _all(self._send_group(k, v, mutes) for k, v in groups.items())
            finally:
                # A pass cut short (shutdown) hands back what it did not get to, at once,
                # instead of leaving it leased for minutes; what was sent is marked first.
                try:
                    await asyncio.shield(self._marks_written())
                finally:
                    if token is not None:
                        # off the loop (it may wait for SQLite's write lock), and shielded:
                        # a cancelled pass still hands its claims back
                        await asyncio.shield(
                            self._db(self.store.release_claim, token, self.clock())
                        )
            return len(due)

    def _claim(self, now: datetime):
        """What is due, and the mutes that may hold it: one trip to the database thread."""
        due = self.store.claim_due(now, list(self.channels))
        return due, (self.store.mutes() if due else {})

    def hold_until(
        self, channel: Channel, target: str, mutes: Mapping[tuple[str, int], datetime]
    ) -> datetime | None:
        """Quiet hours of the channel, or a /mute of the chat: until when to hold its alerts."""
        now = self.clock()
        cfg = channel.config
        ends = [quiet_until(now, cfg.quiet_hours, cfg.timezone)]
        if target.lstrip("-").isdigit():
            muted = mutes.get((channel.id, int(target)))
            if muted is not None and muted > now:
                ends.append(muted)
        held = [e for e in ends if e is not None]
        return max(held) if held else None

    async def _send_group(
        self,
        key: tuple[str, str],
        items: list[tuple[DeliveryRow, Alert]],
        mutes: Mapping[tuple[str, int], datetime],
    ) -> None:
        channel = self.channels[key[0]]
        until = self.hold_until(channel, key[1], mutes)
        if until is not None:
            ids = [row.id for row, _ in items if row.id is not None]
            await self._db(self.store.hold, ids, until)
            log.info(
                "channel=%s target=%s holding %d alerts until %s",
                channel.id,
                key[1] or "-",
                len(ids),
                until.isoformat(),
            )
            return
        if any(row.held for row, _ in items):
            # The end of quiet hours or a mute: everything held goes out as one digest.
            await self._send(channel, key[1], items)
            return
        by_batch: dict[str, list[tuple[DeliveryRow, Alert]]] = defaultdict(list)
        for item in items:
            by_batch[item[1].batch].append(item)
        # one target (a chat, a webhook URL) gets its alerts one after another, in order:
        # a crash then has at most one send of it in flight to repeat
        for batch in by_batch.values():
            if len(batch) > channel.config.group_over:
                await self._send(channel, key[1], batch)
            else:
                for item in batch:
                    await self._send(channel, key[1], [item])

    async def _send(
        self, channel: Channel, target: str, items: Sequence[tuple[DeliveryRow, Alert]]
    ) -> None:
        if not self._accepting:
            return  # stopping: left pending, handed back when the pass ends
        ids = [row.id for row, _ in items if row.id is not None]
        alerts = [alert for _, alert in items]
        try:
            try:
                await channel.send(target, alerts)
            except DeliveryError:
                raise
            except Exception as exc:  # a channel bug must not park a delivery forever
                log.exception("channel=%s target=%s unexpected send error", channel.id, target)
                raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except DeliveryError as exc:
            attempts = max(row.attempts for row, _ in items) + 1
            dead = not exc.retryable or attempts >= channel.config.max_attempts
            delay = backoff_delay(attempts - 1, self.rand)
            if exc.retry_after is not None:
                delay = min(max(exc.retry_after, 0.0), RETRY_AFTER_CAP)
            next_at = None if dead else self.clock() + timedelta(seconds=delay)
            await self._db(
                self.store.mark_failed, ids, error=str(exc), dead=dead, next_attempt_at=next_at
            )
            self._count(channel.id, "dead" if dead else "retry", len(ids))
            if dead:
                log.error(
                    "channel=%s target=%s alerts=%s dead after %d attempts: %s",
                    channel.id,
                    target or "-",
                    ",".join(a.alert_id for a in alerts),
                    attempts,
                    exc,
                )
            else:
                log.warning(
                    "channel=%s target=%s alerts=%s attempt %d failed, retry in %.1fs: %s",
                    channel.id,
                    target or "-",
                    ",".join(a.alert_id for a in alerts),
                    attempts,
                    delay,
                    exc,
                )
            return
        await self._mark_sent(ids)
        self._count(channel.id, "sent", len(ids))
        log.info(
            "channel=%s target=%s sent alerts=%s",
            channel.id,
            target or "-",
            ",".join(a.alert_id for a in alerts),
        )

    def _count(self, channel: str, outcome: str, n: int) -> None:
        if self.on_outcome is not None:
            self.on_outcome(channel, outcome, n)

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

    async def _beat(self) -> None:
        """Renew this instance's heartbeat while it may hold claims (even mid-send)."""
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())
            try:
                await self._db(self.store.heartbeat)
            except Exception as exc:  # a database hiccup: the next beat tries again
                log.warning("event=heartbeat_failed error=%r", exc)

    async def close(self) -> None:
        await self._marks_written()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        for ch in self.channels.values():
            await ch.close()
        self._executor.shutdown(wait=False)
