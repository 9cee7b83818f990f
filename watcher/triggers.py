"""When a watch polls: its interval grid or its crontab, as an APScheduler trigger.

Pure: ``get_next_fire_time(previous, now)`` takes the clock as an argument, so the daemon's
scheduler and a status report that only reads the database compute the same next poll.
Interval watches sit on a fixed grid (``phase + k * every``) whose phase comes from a hash of
the watch id, so a fleet spreads evenly over its interval and never drifts; cron watches use
their crontab in UTC (APScheduler's cron is imported only for a watch that has one).
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

from apscheduler.triggers.base import BaseTrigger

from .configschema import WatchConfig


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


def trigger_for(watch: WatchConfig) -> BaseTrigger:
    """The watch's cron (UTC) when it has one, else its interval grid."""
    if watch.cron:
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger.from_crontab(watch.cron, timezone=UTC)
    assert watch.every is not None
    every = watch.every.total_seconds()
    return GridTrigger(every, phase_of(watch.id, every))
