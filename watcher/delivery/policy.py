"""What a failed send leads to: another attempt at a time, or a dead delivery. Pure.

A receiver's Retry-After is honoured (up to an hour); otherwise attempts back off
exponentially with jitter, so the default 8 attempts ride out one to two hours of downtime.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

# Attempt n waits about BACKOFF_BASE * BACKOFF_FACTOR**n, jittered: 2 s, 8 s, 32 s, 2 min,
# 8.5 min, 34 min, 1 h: the default 8 attempts ride out one to two hours of downtime, while
# `watcher once` still gets three tries inside its 30 s.
BACKOFF_BASE = 2.0
BACKOFF_FACTOR = 4
BACKOFF_CAP = 3600.0
RETRY_AFTER_CAP = 3600.0  # a receiver's Retry-After is honoured, up to an hour


def backoff_delay(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter in [0.5, 1.0] of the step, so retries spread out."""
    return _backoff(attempts, rand())


def _backoff(attempts: int, jitter: float) -> float:
    step = min(BACKOFF_CAP, BACKOFF_BASE * BACKOFF_FACTOR ** min(attempts, 20))
    return step * (0.5 + jitter / 2)


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again at ``at`` (``delay`` seconds after the failure)."""

    at: datetime
    delay: float
    attempts: int  # counting the one that failed


@dataclass(frozen=True, slots=True)
class Dead:
    """Give up: the error is final, or the channel's ``max_attempts`` are spent."""

    attempts: int


def after_failure(
    attempts: int,
    *,
    retryable: bool,
    retry_after: float | None,
    max_attempts: int,
    now: datetime,
    jitter: float,
) -> Retry | Dead:
    """The fate of a delivery whose send failed.

    ``attempts`` were made before this one; ``jitter`` in [0, 1] spreads the backoff (the
    caller draws it, so this stays a function of its arguments).
    """
    made = attempts + 1
    if not retryable or made >= max_attempts:
        return Dead(made)
    delay = _backoff(attempts, jitter)
    if retry_after is not None:
        delay = min(max(retry_after, 0.0), RETRY_AFTER_CAP)
    return Retry(now + timedelta(seconds=delay), delay, made)
