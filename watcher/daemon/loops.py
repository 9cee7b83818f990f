"""The daemon's long-running tasks beside the polls: delivery, retention, the watchdog.

Each runs until the daemon's stop event is set (or it is cancelled) and survives a database
hiccup: it logs one line and tries again on its next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from .. import logs
from ..runtime import Runtime

log = logging.getLogger("watcher.daemon")

PRUNE_FIRST = 30.0  # seconds after start for the first retention pass
PRUNE_EVERY = 3600.0
PRUNE_PAUSE = 0.1  # seconds between two retention batches
TAKEOVER_EVERY = 10.0  # seconds between looks for claims of dead instances
SHARE_EVERY = 10.0  # seconds between recounts of a cluster's live instances


async def deliver(rt: Runtime, stop: asyncio.Event, wake: asyncio.Event) -> None:
    """Deliver new alerts within a second of being stored (``wake``), and retries when due."""
    loop = asyncio.get_running_loop()
    next_takeover = loop.time() + TAKEOVER_EVERY
    while not stop.is_set():
        try:
            if loop.time() >= next_takeover:
                # claims of an instance that died (a killed `watcher once`, another
                # daemon) come back within HEARTBEAT_TIMEOUT + TAKEOVER_EVERY
                next_takeover = loop.time() + TAKEOVER_EVERY
                if await asyncio.to_thread(rt.store.release_dead_claims):
                    logs.event(log, "claims_taken_over")
            await rt.dispatcher.deliver_due()
            nxt = await asyncio.to_thread(rt.store.next_due, list(rt.dispatcher.channels))
        except Exception as exc:  # a database hiccup must not end delivery for good
            logs.event(log, "dispatch_error", logging.ERROR, error=repr(exc))
            nxt = None
        wait = TAKEOVER_EVERY
        if nxt is not None:
            wait = min(max((nxt - datetime.now(UTC)).total_seconds(), 0.05), TAKEOVER_EVERY)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), wait)
        wake.clear()


async def prune(rt: Runtime) -> None:
    """Retention, off the hot path: small batches with pauses, once an hour."""
    await asyncio.sleep(PRUNE_FIRST)
    while True:
        try:
            await rt.prune(pause=PRUNE_PAUSE)
        except Exception as exc:  # a database hiccup: try again next time
            logs.event(log, "prune_error", logging.ERROR, error=repr(exc))
        await asyncio.sleep(PRUNE_EVERY)


async def watchdog(
    healthy: Callable[[], bool],
    notify: Callable[[str], None],
    interval: float,
    stop: asyncio.Event,
) -> None:
    """``WATCHDOG=1`` every ``interval`` seconds while healthy: systemd restarts a daemon
    whose scheduler stopped or whose database stopped answering."""
    while not stop.is_set():
        if await asyncio.to_thread(healthy):
            notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def apply_share(rt: Runtime, current: int = 0) -> int:
    """Each of N daemons alive takes 1/N of every provider's ``max_concurrency`` and
    ``requests_per_second``, so the limits hold for the cluster (a manual ``watcher once``
    is not counted: it is short and rare). Returns N."""
    instances = await asyncio.to_thread(rt.store.instances)
    n = max(1, sum(1 for i in instances if i.alive and i.command != "once"))
    if n != current:
        for client in rt.clients.values():
            client.set_share(n)
        logs.event(log, "limits_shared", instances=n)
    return n


async def share(rt: Runtime, current: int) -> None:
    """Recount the cluster every SHARE_EVERY seconds: an instance that joins or dies
    changes every instance's share within that time."""
    while True:
        await asyncio.sleep(SHARE_EVERY)
        try:
            current = await apply_share(rt, current)
        except Exception as exc:  # a database hiccup: the share stays as it was
            logs.event(log, "share_error", logging.WARNING, error=repr(exc))
