"""What an operator is shown about the cluster (``watcher status``, the bot's /status): the
value types, below the report that fills them from the store and both fronts that show
them, and the command line's table and JSON (pure: the clock is the report's ``at``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from .models import InstanceInfo
from .util import as_utc, iso_utc

ERROR_SHOWN = 100  # characters of a watch's last error in the table (JSON has all of it)


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """One watch: last poll, next poll (None when nothing will poll it), last error,
    products; ``polling`` when a poll of it is running right now."""

    watch_id: str
    last_poll: datetime | None
    next_poll: datetime | None
    last_error: str | None
    products: int
    polling: bool = False


@dataclass(frozen=True, slots=True)
class StatusReport:
    """The whole cluster at ``at``: every configured watch, the credits of ``day`` (UTC) per
    provider, the outbox by delivery status, every registered instance; ``cluster`` when
    the database is PostgreSQL (polls shared through its job queue), else one host."""

    at: datetime
    database: str
    cluster: bool
    watches: tuple[WatchStatus, ...]
    day: date
    credits: Mapping[str, int]
    deliveries: Mapping[str, int]
    instances: tuple[InstanceInfo, ...] = field(default=())
    budgets: Mapping[str, int | None] = field(default_factory=dict)  # daily, None: unlimited

    @property
    def alive(self) -> tuple[InstanceInfo, ...]:
        return tuple(i for i in self.instances if i.alive)


def relative(at: datetime, now: datetime) -> str:
    """``in 42s``, ``3m ago``, ``now``: the distance from ``now`` in its largest unit."""
    seconds = round((as_utc(at) - as_utc(now)).total_seconds())
    if seconds == 0:
        return "now"
    n = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if n >= size:
            amount = f"{n // size}{unit}"
            break
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def when(at: datetime | None, now: datetime) -> str:
    """``2026-11-24T10:00:00Z (3m ago)``; "-" for none."""
    return "-" if at is None else f"{iso_utc(at)} ({relative(at, now)})"


def next_poll_text(w: WatchStatus, now: datetime) -> str:
    if w.polling:
        return "now (polling)"
    if w.next_poll is not None and w.next_poll <= now:
        return f"{iso_utc(w.next_poll)} (due)"
    return when(w.next_poll, now)


def mode_text(report: StatusReport) -> str:
    n = len(report.alive)
    alive = f"{n} instance{'s' if n != 1 else ''} alive"
    return f"cluster on PostgreSQL, {alive}" if report.cluster else f"single host, {alive}"


def instance_state(i: InstanceInfo) -> str:
    return ("alive" if i.alive else "gone") + (", serves the bot" if i.serves_bot else "")


def report_table(report: StatusReport) -> str:
    """The report as ``watcher status`` prints it: a few aligned tables."""
    now = report.at
    lines = [f"watcher status at {iso_utc(now)}: {report.database} ({mode_text(report)})", ""]
    lines += _table(
        ("WATCH", "LAST POLL", "NEXT POLL", "PRODUCTS", "LAST ERROR"),
        [
            (
                w.watch_id,
                when(w.last_poll, now),
                next_poll_text(w, now),
                str(w.products),
                _cut(w.last_error) if w.last_error else "-",
            )
            for w in report.watches
        ],
        empty="watches: none configured",
    )
    spent = (
        ", ".join(
            f"{n} {c}" + (f" of {b}" if (b := report.budgets.get(n)) is not None else "")
            for n, c in report.credits.items()
        )
        or "no providers"
    )
    lines += ["", f"credits today ({report.day.isoformat()} UTC): {spent}"]
    d = report.deliveries
    lines.append(
        f"deliveries: {d.get('pending', 0)} pending, {d.get('dead', 0)} dead, "
        f"{d.get('sent', 0)} sent"
    )
    lines.append("")
    lines += _table(
        (
            "INSTANCE",
            "HOST",
            "PID",
            "COMMAND",
            "STARTED",
            "CONFIG LOADED",
            "LAST HEARTBEAT",
            "STATE",
        ),
        [
            (
                i.id[:12],
                i.host,
                str(i.pid),
                i.command or "-",
                iso_utc(i.started_at),
                when(i.config_loaded_at, now),
                when(i.heartbeat_at, now),
                instance_state(i),
            )
            for i in report.instances
        ],
        empty="instances: none registered (no watcher is running)",
    )
    return "\n".join(lines)


def report_json(report: StatusReport) -> dict[str, Any]:
    """The report as ``watcher status --json`` prints it: times ISO-8601 UTC or null."""

    def t(at: datetime | None) -> str | None:
        return None if at is None else iso_utc(at)

    return {
        "at": t(report.at),
        "database": report.database,
        "cluster": report.cluster,
        "watches": [
            {
                "id": w.watch_id,
                "last_poll": t(w.last_poll),
                "next_poll": t(w.next_poll),
                "polling": w.polling,
                "products": w.products,
                "last_error": w.last_error,
            }
            for w in report.watches
        ],
        "credits": {
            "day": report.day.isoformat(),
            "spent": dict(report.credits),
            "budget": {n: report.budgets.get(n) for n in report.credits},
        },
        "deliveries": {
            "pending": report.deliveries.get("pending", 0),
            "dead": report.deliveries.get("dead", 0),
            "sent": report.deliveries.get("sent", 0),
        },
        "instances": [
            {
                "id": i.id,
                "host": i.host,
                "pid": i.pid,
                "command": i.command,
                "started_at": t(i.started_at),
                "config_loaded_at": t(i.config_loaded_at),
                "heartbeat_at": t(i.heartbeat_at),
                "alive": i.alive,
                "serves_bot": i.serves_bot,
            }
            for i in report.instances
        ],
    }


def _cut(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= ERROR_SHOWN else one_line[: ERROR_SHOWN - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str) -> list[str]:
    if not rows:
        return [empty]
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
