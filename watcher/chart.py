"""Price-history charts as PNG bytes: one renderer for the bot's /history and
``watcher history --png``.

Draws the store's frozen ``models.HistoryPoint`` rows (any object with ``at`` and ``price``,
optionally ``watch_id``, ``original_price`` and ``present``, will do) as step lines: a price
holds from one recorded change to the next. The list (original) price is a dashed, lighter
line beside the sale price; the lowest and highest prices are marked with their value and
date, and the price now is written at the line's end. A product with no price at all but a
rank (a KeyAPI category) gets its rank instead, #1 on top. Uses matplotlib's ``Figure`` API
on the Agg canvas (never pyplot: no global state, safe in a worker thread); matplotlib is
imported on first use, so importing this module stays cheap. Prices stay ``Decimal`` until
the moment they are plotted.

The PNG carries its text as metadata (``Title``, ``Description``, ``Currency``, ``Lowest``,
``Highest``; ``Best`` and ``Worst`` for a rank chart), so a test or a script can read what
the chart says without looking at it.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from .formatting import format_money
from .historyview import price_summary
from .util import as_utc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .models import HistoryPoint, ProductHistory

# 1200×675 (16:9): Telegram shows photos up to 1280 px on the long side without scaling,
# and 150 dpi keeps the text readable on a phone.
WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 150
TITLE_CHARS = 70

_PRICE = "#1f77b4"
_LIST = "#7f7f7f"
_LOW = "#2ca02c"
_HIGH = "#d62728"


def _legend_rank(label: str) -> int:
    return 0 if label.startswith("price") else 1 if label.startswith("list") else 2


@dataclass(frozen=True, slots=True)
class Extreme:
    """The lowest or highest price (or rank) on the chart, and when it was first reached."""

    value: Decimal
    at: datetime


def render_history_chart(record: ProductHistory) -> bytes:
    """The chart of a stored product history (``Store.product_record``)."""
    return render_price_chart(
        record.points, record.title, record.currency, until=record.polled_until
    )


async def render_history_chart_async(record: ProductHistory) -> bytes:
    """``render_history_chart`` in a worker thread: a chart takes ~0.1–1 s of CPU."""
    return await asyncio.to_thread(render_history_chart, record)


def render_price_chart(
    rows: Sequence[HistoryPoint],
    title: str,
    currency: str | None = None,
    *,
    until: datetime | None = None,
) -> bytes:
    """Draw the chart (``price_figure``) and return it as a PNG with its text as metadata."""
    fig = price_figure(rows, title, currency, until=until)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=chart_metadata(rows, title, currency))
    return buf.getvalue()


async def render_price_chart_async(
    rows: Sequence[HistoryPoint],
    title: str,
    currency: str | None = None,
    *,
    until: datetime | None = None,
) -> bytes:
    """``render_price_chart`` in a worker thread."""
    return await asyncio.to_thread(render_price_chart, rows, title, currency, until=until)


def price_figure(
    rows: Sequence[HistoryPoint],
    title: str,
    currency: str | None = None,
    *,
    until: datetime | None = None,
) -> Figure:
    """The chart as a matplotlib ``Figure`` (tests read its labels before it is saved).

    One sale-price line per watch that saw the product (usually one), its list price dashed
    beside it where known, ✕ where the product counted as gone; each line holds its last
    price until ``until`` (the last poll) or the latest row. Rows without a price leave a gap.
    A product no row has a price for but some a rank (a KeyAPI category) gets its rank
    instead, #1 on top.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    series = _series(rows)
    times = [as_utc(r.at) for r in rows]
    end = max(times, default=None)
    if end is not None and until is not None and as_utc(until) > end:
        end = as_utc(until)
    several = len(series) > 1
    # a product known only by its rank (a KeyAPI category) gets a rank chart, #1 on top
    field = "rank" if by_rank(rows) else "price"
    noun = "rank" if field == "rank" else "price"
    colors = [_PRICE, "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    gone_labelled = False
    for i, (watch_id, points) in enumerate(series.items()):
        color = colors[i % len(colors)]
        xs = [as_utc(r.at) for r in points]
        here = [_present(r) for r in points]
        ys = [p if ok else math.nan for p, ok in zip(_prices(points, field), here, strict=True)]
        lists = [
            p if ok and field == "price" else math.nan
            for p, ok in zip(_prices(points, "original_price"), here, strict=True)
        ]
        xs_line, ys_line, lists_line = list(xs), list(ys), list(lists)
        if end is not None and end > xs[-1] and here[-1]:
            xs_line.append(end)  # the last price holds until the last poll
            ys_line.append(ys_line[-1])
            lists_line.append(lists_line[-1])
        suffix = f" ({watch_id})" if several else ""
        if any(not math.isnan(y) for y in lists_line):
            ax.step(xs_line, lists_line, where="post", color=_LIST if not several else color,
                    linestyle="--", linewidth=1.3, alpha=0.8,
                    label=f"list price{suffix}")  # fmt: skip
        ax.step(xs_line, ys_line, where="post", color=color, linewidth=2.2,
                label=f"{noun}{suffix}", zorder=3)  # fmt: skip
        if not several and field == "price":  # the discount: the gap to the list price
            fx, fy = _steps(xs_line, ys_line)
            _, fl = _steps(xs_line, lists_line)
            ax.fill_between(fx, fy, fl, color=color, alpha=0.07, linewidth=0)
        ax.plot(xs, ys, linestyle="none", marker="o", markersize=3.2, color=color,
                zorder=4)  # fmt: skip
        gone = [(x, _last_before(ys, k)) for k, (x, ok) in enumerate(zip(xs, here, strict=True))
                if not ok]  # fmt: skip
        gone = [(x, y) for x, y in gone if not math.isnan(y)]
        if gone:
            ax.plot([x for x, _ in gone], [y for _, y in gone], linestyle="none", marker="x",
                    markersize=8, markeredgewidth=2, color=_HIGH, zorder=5,
                    label=None if gone_labelled else "gone (removed)")  # fmt: skip
            gone_labelled = True

    low, high = extremes(rows, field)
    listed = [_decimal(getattr(r, "original_price", None)) for r in rows if _present(r)]
    listed_known = [d for d in listed if d is not None] if field == "price" else []
    if low is None or high is None:
        ax.text(0.5, 0.5, "no known price", ha="center", va="center", transform=ax.transAxes,
                fontsize=12, color=_LIST)  # fmt: skip
        ax.set_yticks([])
    else:
        bottom = min([low.value, *listed_known])
        top = max([high.value, *listed_known])
        spread = float(top - bottom)
        pad = spread * 0.22 if spread else abs(float(top)) * 0.1 or 1.0
        if field == "rank":
            ax.set_ylim(float(top) + max(pad, 1), max(float(bottom) - max(pad, 1), 0.5))
            ax.yaxis.set_major_locator(_rank_locator())
            ax.yaxis.set_major_formatter(_rank_ticks())
        else:
            ax.set_ylim(float(bottom) - pad, float(top) + pad)
            ax.yaxis.set_major_formatter(_money_ticks())
        assert end is not None  # there are rows
        _mark_extremes(ax, low, high, currency if field == "price" else None,
                       [min(times), end], by_rank=field == "rank")  # fmt: skip
        last = max(rows, key=lambda r: as_utc(r.at))
        now = _decimal(getattr(last, field, None)) if _present(last) else None
        if not several and now is not None and now not in (low.value, high.value):
            value = f"#{now}" if field == "rank" else format_money(now, currency)
            ax.annotate(f"now {value}", (end, float(now)), xytext=(0, 6),
                        textcoords="offset points", ha="right", va="bottom", fontsize=8.5,
                        color=_PRICE, fontweight="bold", zorder=7)  # fmt: skip

    if times and min(times) == max(times) == end:  # one instant: a day around it, not years
        ax.set_xlim(times[0] - timedelta(hours=12), times[0] + timedelta(hours=12))
    elif times and end is not None:
        pad = (end - min(times)) * 0.03
        ax.set_xlim(min(times) - pad, end + pad)

    ax.set_title(shorten(title, TITLE_CHARS), fontsize=12, fontweight="bold", loc="left",
                 fontfamily=_title_fonts())  # fmt: skip
    if field == "rank":
        ax.set_ylabel("Rank (#1 is the top)")
    else:
        ax.set_ylabel(f"Price ({currency.upper()})" if currency else "Price")
    locator = _date_locator(min(times), end) if times and end else AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(
        ConciseDateFormatter(
            locator,
            tz=UTC,
            # "9 Nov" rather than a bare "09" whose month only the corner names
            formats=["%Y", "%b", "%-d %b", "%H:%M", "%H:%M", "%S.%f"],
            zero_formats=["", "%Y", "%-d %b", "%-d %b", "%H:%M", "%H:%M"],
            offset_formats=["", "%Y", "%Y", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d %H:%M"],
        )
    )
    ax.set_xlabel("UTC", fontsize=9, color="#555555")
    ax.grid(True, axis="y", alpha=0.3)
    ax.grid(True, axis="x", alpha=0.12)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # the prices first, then the list prices, then the removals
        order = sorted(range(len(labels)), key=lambda i: (_legend_rank(labels[i]), i))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="best",
                  fontsize=8, frameon=False)  # fmt: skip
    return fig


def by_rank(rows: Sequence[Any]) -> bool:
    """No row has a price but some have a rank: the chart (and its marks) follow the rank."""
    prices = any(_decimal(r.price) is not None for r in rows)
    return not prices and any(
        getattr(r, "rank", None) is not None and getattr(r, "present", True) for r in rows
    )


def extremes(rows: Sequence[Any], field: str = "price") -> tuple[Extreme | None, Extreme | None]:
    """The lowest and the highest known ``field`` (price, or rank) of products present, each
    first reached when."""
    low: Extreme | None = None
    high: Extreme | None = None
    for r in sorted(rows, key=lambda r: as_utc(r.at)):
        value = _decimal(getattr(r, field, None))
        if value is None or not _present(r):
            continue
        if low is None or value < low.value:
            low = Extreme(value, as_utc(r.at))
        if high is None or value > high.value:
            high = Extreme(value, as_utc(r.at))
    return low, high


def chart_metadata(rows: Sequence[Any], title: str, currency: str | None) -> dict[str, str]:
    """The PNG's text chunks: what the chart shows, in words."""
    meta = {"Title": title, "Software": "watcher"}
    if by_rank(rows):
        best, worst = extremes(rows, "rank")
        assert best is not None and worst is not None
        meta["Best"] = f"#{best.value} {best.at:%Y-%m-%dT%H:%M:%SZ}"
        meta["Worst"] = f"#{worst.value} {worst.at:%Y-%m-%dT%H:%M:%SZ}"
        meta["Description"] = (
            f"Rank history: best #{best.value} on {best.at:%Y-%m-%d}, "
            f"worst #{worst.value} on {worst.at:%Y-%m-%d} (UTC)"
        )
        return meta
    low, high = extremes(rows)
    if currency:
        meta["Currency"] = currency.upper()
    if low is not None and high is not None:
        meta["Lowest"] = f"{low.value} {low.at:%Y-%m-%dT%H:%M:%SZ}"
        meta["Highest"] = f"{high.value} {high.at:%Y-%m-%dT%H:%M:%SZ}"
        meta["Description"] = (
            f"Price history: lowest {format_money(low.value, currency)} on {low.at:%Y-%m-%d}, "
            f"highest {format_money(high.value, currency)} on {high.at:%Y-%m-%d} (UTC)"
        )
    else:
        meta["Description"] = "Price history: no known price"
    return meta


def history_summary(rows: Sequence[HistoryPoint], title: str, currency: str | None = None) -> str:
    """Plain-text lines to go with a chart: title, now / lowest / highest, the time span."""
    lines = [title[:200]]
    prices = price_summary(rows, currency)
    if prices:
        lines.append(prices)
    if rows:
        times = sorted(as_utc(r.at) for r in rows)
        lines.append(
            f"{len(rows)} changes, {times[0]:%Y-%m-%d %H:%M} – {times[-1]:%Y-%m-%d %H:%M} UTC"
        )
    return "\n".join(lines)


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with "…"."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-–—|&+/") + "…"


def _mark_extremes(
    ax: Any,
    low: Extreme,
    high: Extreme,
    currency: str | None,
    times: list[datetime],
    *,
    by_rank: bool = False,
) -> None:
    """Mark the lowest and highest points with their value and date, inside the axes
    (``times``: the time span the chart shows). On a rank chart (#1 on top) the lowest
    number is the best rank."""
    span = (max(times) - min(times)) if times else timedelta(0)
    if by_rank:
        marks = [(low, "best", _LOW, 1)]
        if high.value != low.value:
            marks.append((high, "worst", _HIGH, -1))
    else:
        marks = [(low, "lowest", _LOW, -1)]
        if high.value != low.value:
            marks.append((high, "highest", _HIGH, 1))
    for point, word, color, direction in marks:
        x, y = point.at, float(point.value)
        ax.plot([x], [y], marker="v" if direction < 0 else "^", markersize=9, color=color,
                linestyle="none", zorder=6)  # fmt: skip
        where = _fraction(point.at, times)
        ha = "left" if where < 0.2 else "right" if where > 0.8 else "center"
        dx = {"left": -6, "right": 6, "center": 0}[ha]
        value = f"#{point.value}" if by_rank else format_money(point.value, currency)
        when = _when(point.at, span)
        text = f"{word} {value}\n{when}"
        if high.value == low.value:
            text = f"{value} throughout\nsince {when}"
        ax.annotate(text, (x, y), xytext=(dx, 14 * direction), textcoords="offset points",
                    ha=ha, va="bottom" if direction > 0 else "top", fontsize=8.5,
                    color=color, fontweight="bold", zorder=7,
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "none",
                          "alpha": 0.8})  # fmt: skip


# Fonts a title in Chinese, Japanese, Korean or Thai falls back to, when the host has them
# (Debian: fonts-noto-cjk, fonts-noto-core); matplotlib's own DejaVu Sans has none of them.
_FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK KR", "Noto Sans Thai")


def _title_fonts() -> list[str]:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in _FALLBACK_FONTS if name in installed)]


def _date_locator(start: datetime, end: datetime) -> Any:
    """Mondays for a history of weeks (a month's day-of-month ticks crowd at its end:
    "29 Nov" beside "1 Dec"), matplotlib's choice otherwise."""
    from matplotlib.dates import MO, AutoDateLocator, WeekdayLocator

    days = (end - start) / timedelta(days=1)
    if 10 <= days <= 120:
        return WeekdayLocator(byweekday=MO, interval=max(1, math.ceil(days / 7 / 8)), tz=UTC)
    return AutoDateLocator(tz=UTC)


def _fraction(at: datetime, times: list[datetime]) -> float:
    if not times or max(times) == min(times):
        return 0.5
    return (at - min(times)) / (max(times) - min(times))


def _when(at: datetime, span: timedelta) -> str:
    """The date (and time, for a short history) of a marked point."""
    if span < timedelta(minutes=5):
        return f"{at:%H:%M:%S} UTC"
    if span < timedelta(days=2):
        return f"{at:%-d %b %H:%M} UTC"
    if span < timedelta(days=300):
        return f"{at:%-d %b}"
    return f"{at:%-d %b %Y}"


def _rank_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True, min_n_ticks=2)


def _rank_ticks() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: f"#{value:.0f}" if value >= 1 else "")


def _money_ticks() -> Any:
    """Price ticks as "30" when every tick is whole, else "32.50" (decided for all ticks at
    once, so one axis never mixes the two)."""
    from matplotlib.ticker import Formatter

    class MoneyTicks(Formatter):
        def format_ticks(self, values: Any) -> list[str]:
            whole = all(float(v).is_integer() for v in values)
            return [f"{v:,.0f}" if whole else f"{v:,.2f}" for v in values]

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:,.2f}"

    return MoneyTicks()


def _series(rows: Sequence[Any]) -> dict[str, list[Any]]:
    by_watch: dict[str, list[Any]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: as_utc(r.at)):
        by_watch[getattr(r, "watch_id", "") or ""].append(r)
    return dict(by_watch)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _prices(rows: Sequence[Any], field: str) -> list[float]:
    """The rows' ``field`` as floats for plotting only; NaN (a gap) when unknown."""
    out = []
    for r in rows:
        d = _decimal(getattr(r, field, None))
        out.append(math.nan if d is None else float(d))
    return out


def _steps(xs: list[datetime], ys: list[float]) -> tuple[list[datetime], list[float]]:
    """A step line ("post": each value holds until the next x) as plain points, so that
    ``fill_between`` fills up to the next x even when the next value is a gap."""
    out_x: list[datetime] = []
    out_y: list[float] = []
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        out_x.append(x)
        out_y.append(y)
        if k + 1 < len(xs):
            out_x.append(xs[k + 1])
            out_y.append(y)
    return out_x, out_y


def _present(row: Any) -> bool:
    return bool(getattr(row, "present", True))


def _last_before(ys: list[float], k: int) -> float:
    """The last known price at or before index ``k`` (where a ✕ for a removal sits)."""
    for y in reversed(ys[:k]):
        if not math.isnan(y):
            return y
    return math.nan
