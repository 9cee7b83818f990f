"""What a poll reports back, and notices turned into alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .. import identity
from ..health import Notice
from ..models import Alert


@dataclass
class PollOutcome:
    watch_id: str
    status: str  # baseline|ok|partial|incomplete|failed|skipped|not_found|empty|conflict
    products: int = 0
    pages: int = 0
    alerts: list[Alert] = field(default_factory=list)
    errors: tuple[str, ...] = ()
    credits_written: bool = field(default=False, repr=False)  # the poll's write carried them

    def summary(self) -> str:
        bits = [f"{self.watch_id}: {self.status}", f"{self.products} products"]
        if self.pages:
            bits.append(f"{self.pages} pages")
        if self.alerts:
            bits.append(f"{len(self.alerts)} alerts")
        return ", ".join(bits)


def notice(kind: str, watch_id: str | None, message: str, key: object, now: datetime) -> Alert:
    return Alert(
        alert_id=identity.alert_id(None, watch_id, None, kind, None, str(key), 0),
        kind=kind,
        watch_id=watch_id,
        detected_at=now,
        message=message,
        batch=f"notice:{watch_id}:{key}",
    )


def notice_alerts(notices: tuple[Notice, ...], now: datetime) -> list[Alert]:
    """The health machine's notices as the alerts the outbox stores (ids from their keys)."""
    return [notice(n.kind, n.watch_id, n.message, n.key, now) for n in notices]
