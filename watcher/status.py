"""What an operator is shown about one watch (the bot's /status), below both the daemon that
fills it from its scheduler and the bot that formats it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """One watch: last poll, next poll (None without a scheduler), last error, products."""

    watch_id: str
    last_poll: datetime | None
    next_poll: datetime | None
    last_error: str | None
    products: int
