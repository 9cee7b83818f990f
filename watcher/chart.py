"""Price-history charts as PNG bytes, for the bot's /history and ``watcher history --png``.

Draws the store's frozen ``models.HistoryPoint`` rows (any object with ``at`` and ``price``,
optionally ``watch_id`` and ``present``, will do). Uses matplotlib's ``Figure`` API on the
Agg canvas (never pyplot: no global state, safe in a worker thread). matplotlib is imported
on first use, so importing this module stays cheap. Prices stay ``Decimal`` until the moment
they are plotted.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from .util import as_utc

if TYPE_CHECKING:
    from .models import HistoryPoint

WIDTH_PX = 800
HEIGHT_PX = 400
DPI = 100


def render_price_chart(rows: Sequence[HistoryPoint], title: str) -> bytes:
    """Draw price over time as a step line (a price holds until the next change).

    One line per watch when the product was seen by several. Rows without a price leave a
    gap; a removal (``present`` False) ends the line with a red ✕ at the last price.
    Returns an 800×400 PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    series = _series(rows)
    end = max((r.at for r in rows), default=None)
    plotted = False
    removed_labelled = False
    for watch_id, points in series.items():
        xs = [as_utc(r.at) for r in points]
        ys = [_price(r) for r in points]
        here = [_present(r) for r in points]
        ys_line = [y if present else math.nan for y, present in zip(ys, here, strict=True)]
        xs_line = list(xs)
        if end is not None and as_utc(end) > xs[-1] and here[-1]:
            xs_line.append(as_utc(end))  # the last price holds until the latest row
            ys_line.append(ys_line[-1])
        label = watch_id if len(series) > 1 else None
        (line,) = ax.step(xs_line, ys_line, where="post", linewidth=1.8, label=label)
        ax.plot(xs, ys_line[: len(xs)], linestyle="none", marker="o", markersize=3.5,
                color=line.get_color())  # fmt: skip
        last = _last_known(ys)
        gone = [
            (x, last if math.isnan(y) else y)
            for x, y, present in zip(xs, ys, here, strict=True)
            if not present
        ]
        if gone:
            ax.plot([x for x, _ in gone], [y for _, y in gone], linestyle="none", marker="x",
                    markersize=8, color="tab:red",
                    label=None if removed_labelled else "removed")  # fmt: skip
            removed_labelled = True
        plotted = plotted or any(not math.isnan(y) for y in ys)
    if not plotted:
        ax.text(0.5, 0.5, "no known price", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    times = [as_utc(r.at) for r in rows]
    if times and min(times) == max(times):  # one instant: show a day around it, not years
        ax.set_xlim(times[0] - timedelta(hours=12), times[0] + timedelta(hours=12))
    ax.set_title(_trim(title, 80), fontsize=11)
    ax.set_ylabel("price")
    ax.grid(True, alpha=0.3)
    locator = AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel("UTC")
    if len(series) > 1 or removed_labelled:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def history_summary(rows: Sequence[HistoryPoint], title: str, currency: str | None = None) -> str:
    """Plain-text lines to go with a chart: title, now / lowest / highest, the time span."""
    from .render import format_money

    prices = [Decimal(r.price) for r in rows if r.price is not None]
    lines = [title[:200]]
    if prices:
        now, low, high = (
            format_money(p, currency) for p in (prices[-1], min(prices), max(prices))
        )
        lines.append(f"now {now} · lowest {low} · highest {high}")
    if rows:
        first, last = as_utc(rows[0].at), as_utc(rows[-1].at)
        lines.append(f"{len(rows)} changes, {first:%Y-%m-%d %H:%M} – {last:%Y-%m-%d %H:%M} UTC")
    return "\n".join(lines)


async def render_price_chart_async(rows: Sequence[HistoryPoint], title: str) -> bytes:
    """``render_price_chart`` in a worker thread: a chart takes ~0.1–1 s of CPU."""
    return await asyncio.to_thread(render_price_chart, rows, title)


def _series(rows: Sequence[Any]) -> dict[str, list[Any]]:
    by_watch: dict[str, list[Any]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: as_utc(r.at)):
        by_watch[getattr(r, "watch_id", "") or ""].append(r)
    return dict(by_watch)


def _price(row: Any) -> float:
    """The row's price as a float for plotting only; NaN (a gap) when unknown."""
    value = row.price
    if value is None:
        return math.nan
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return math.nan


def _present(row: Any) -> bool:
    return bool(getattr(row, "present", True))


def _last_known(ys: list[float]) -> float:
    known = [y for y in ys if not math.isnan(y)]
    return known[-1] if known else 0.0


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
