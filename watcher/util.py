"""Small helpers every layer shares: time in UTC, durations, Retry-After, redaction.

The bottom layer: imports only the standard library, so anything may import it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

USER_AGENT = "watcher/0.1"
MAX_RETRY_AFTER = 60.0  # seconds; a longer Retry-After would stall a poll or a delivery pass

_DURATION = re.compile(r"(\d+)([smhd])\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    """Aware UTC, as every timestamp column takes and returns (a naive value is UTC)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso_utc(at: datetime) -> str:
    """``2026-11-24T10:00:00Z``: the one spelling of a time in payloads (naive is UTC)."""
    return as_utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


class DurationError(ValueError):
    """A duration that cannot be read; its text says why, for a config error or a bot reply."""


def parse_duration(text: str) -> timedelta:
    """``45s``, ``15m``, ``2h``, ``30d`` → timedelta (the one grammar of config and bot)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise DurationError("e.g. 15m, not 15, 15 min or 1.5h")
    if int(m[1]) == 0:
        raise DurationError("must be longer than zero")
    try:
        return timedelta(**{_UNITS[m[2]]: int(m[1])})
    except OverflowError:
        raise DurationError("too long") from None


def retry_after_seconds(
    value: str | None, *, now: float | None = None, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), within 0..cap; else None."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


def redact(text: str, secrets: Iterable[str | None], mask: str = "<token>") -> str:
    """``text`` with every secret replaced, longest first (a short one would only garble it)."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, mask)
    return text


def strip_handle(handle: str) -> str:
    """A TikTok handle as the APIs take it: no surrounding space, no leading ``@``."""
    return handle.strip().removeprefix("@")
