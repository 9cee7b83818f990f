"""``watcher history`` as a table: the product's title, its rows and what changed in each.

Pure: the store's ``ProductHistory`` in, text out. Each row is compared with the previous
row of the same watch ("price $44.99 → $34.99 (-22%)", "back in stock", "rank #9 → #3",
"first seen"); a blank rank is marked and explained in a footnote, in the words of the
row's watch type when the config is at hand (a store's product is "out of stock" where a
search result "left the results").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from .formatting import count_text, format_money, pct, signed_percent
from .kinds import WATCH_TYPES
from .models import HistoryPoint, ProductHistory
from .util import as_utc

BLANK_RANK = "—"
GAP = "  "


@dataclass(frozen=True, slots=True)
class _Words:
    """How one kind of watch says a product is gone, is back, or has no rank."""

    gone: str
    back: str
    unlisted: str  # the change of a row without a rank while the product still counts present
    missing: str  # the footnote of a blank rank while the product is still counted present
    absent: str  # the footnote of a blank rank while it counts as gone


_STOCK = _Words(
    gone="out of stock",
    back="back in stock",
    unlisted="not listed",
    missing="not listed in that poll (out of stock after missing_after such polls), "
    "or new in a poll with a failed page: only complete polls rank",
    absent="out of stock then: only listed products have a position",
)
_RESULTS = _Words(
    gone="left the results",
    back="back in the results",
    unlisted="not in the results",
    missing="not in that poll's results, or new in a poll with a failed page: "
    "only complete polls rank",
    absent="not in the results then: only listed products have a position",
)
_UNKNOWN = _Words(
    gone="gone",
    back="back",
    unlisted="not seen",
    missing="not among the products that poll read, or new in a poll with a failed page: "
    "only complete polls rank",
    absent="gone then (out of stock or out of the results): no position",
)


def _words(watch_type: str | None) -> _Words:
    kind = WATCH_TYPES.get(watch_type or "")
    if kind is None:
        return _UNKNOWN
    return _STOCK if kind.tracks_stock else _RESULTS


def what_changed(
    previous: HistoryPoint | None,
    row: HistoryPoint,
    watch_type: str | None = None,
    currency: str | None = None,
) -> str:
    """What ``row`` changed since ``previous`` (the same watch's row before it), in words."""
    words = _words(watch_type)
    if previous is None:
        return "first seen"
    if not row.present:
        return words.gone if previous.present else "still gone"
    parts: list[str] = []
    if not previous.present:
        parts.append(words.back)
    parts += _money_change("price", previous.price, row.price, currency)
    parts += _money_change("list price", previous.original_price, row.original_price, currency)
    if previous.discount_percent != row.discount_percent:
        parts.append(
            f"discount {_pct_or_none(previous.discount_percent)} → "
            f"{_pct_or_none(row.discount_percent)}"
        )
    if previous.rank != row.rank:
        if previous.rank is None:
            parts.append(f"ranked #{row.rank}")
        elif row.rank is None:
            parts.append(words.unlisted)
        else:
            parts.append(f"rank #{previous.rank} → #{row.rank}")
    if previous.sold != row.sold:
        if previous.sold is not None and row.sold is not None:
            delta = row.sold - previous.sold
            parts.append(f"sold {'+' if delta > 0 else '-'}{count_text(abs(delta))}")
        elif row.sold is not None:
            parts.append(f"sold {count_text(row.sold)}")
    return ", ".join(parts) or "no change"


def history_table(record: ProductHistory, watch_types: Mapping[str, str] | None = None) -> str:
    """The text ``watcher history`` prints: a header (title, id, currency, now / lowest /
    highest), one line per recorded change with what changed, and the footnotes.

    ``watch_types``: watch id → type, from the config when there is one; without it the
    words stay generic ("gone" rather than "out of stock").
    """
    types = watch_types or {}
    rows = sorted(record.points, key=lambda r: as_utc(r.at))
    currency = record.currency
    lines = [record.title, _subtitle(record, rows, types)]
    summary = price_summary(rows, currency)
    if summary:
        lines.append(summary)
    lines.append("")

    stamp = _stamp_format(rows)
    table: list[list[str]] = []
    notes: dict[str, int] = {}  # footnote text → its number
    previous: dict[str, HistoryPoint] = {}
    for r in rows:
        kind = types.get(r.watch_id)
        words = _words(kind)
        rank = "" if r.rank is None else f"#{r.rank}"
        if r.rank is None:
            note = words.missing if r.present else words.absent
            number = notes.setdefault(note, len(notes) + 1)
            rank = f"{BLANK_RANK}{_superscript(number)}"
        before = previous.get(r.watch_id)
        change = what_changed(before, r, kind, currency)
        table.append(
            [
                as_utc(r.at).strftime(stamp),
                r.watch_id,
                "" if r.price is None else format_money(r.price, currency),
                "" if r.discount_percent is None else pct(r.discount_percent),
                rank,
                "" if r.sold is None else count_text(r.sold),
                change,
            ]
        )
        previous[r.watch_id] = r
    header = ["when (UTC)", "watch", "price", "disc", "rank", "sold", "what changed"]
    right = {"price", "disc", "rank", "sold"}
    # a KeyAPI ranking row has no price, discount or sales: no empty columns for them
    keep = [i for i, name in enumerate(header) if name not in right or any(c[i] for c in table)]
    header = [header[i] for i in keep]
    table = [[cells[i] for i in keep] for cells in table]
    right = {i for i, name in enumerate(header) if name in right}
    widths = [max(len(c[i]) for c in [header, *table]) for i in range(len(header))]
    for cells in [header, *table]:
        text = GAP.join(
            (c.rjust(w) if i in right else c.ljust(w))
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        lines.append(text.rstrip())
    if notes:
        lines.append("")
        lines += [f"{BLANK_RANK}{_superscript(n)} rank blank: {note}" for note, n in notes.items()]
    return "\n".join(lines)


def _subtitle(
    record: ProductHistory, rows: Sequence[HistoryPoint], types: Mapping[str, str]
) -> str:
    watches = sorted({r.watch_id for r in rows})
    seen = ", ".join(f"{w} ({types[w]})" if w in types else w for w in watches)
    parts = [f"product {record.product_id}"]
    if record.currency:
        parts.append(record.currency.upper())
    parts.append(f"seen by {seen}" if seen else "never seen")
    return " · ".join(parts)


def price_summary(rows: Sequence[HistoryPoint], currency: str | None) -> str:
    """``now $29.99 (list $54.99) · lowest $29.99 · highest $44.99``; the ranks instead for a
    product without a price (a KeyAPI category), "" with neither.

    "now gone" when the latest row counts the product as gone; lowest and highest are over
    the rows where it was present.
    """
    rows = sorted(rows, key=lambda r: as_utc(r.at))
    prices = [r.price for r in rows if r.price is not None and r.present]
    if not prices:
        return _rank_summary(rows)
    last = rows[-1]
    if not last.present:
        text = "now gone"
    else:
        text = f"now {format_money(prices[-1], currency)}"
        listed = last.original_price
        if listed is not None and last.price is not None and listed > last.price:
            text += f" (list {format_money(listed, currency)})"
    text += f" · lowest {format_money(min(prices), currency)}"
    text += f" · highest {format_money(max(prices), currency)}"
    return text


def _rank_summary(rows: Sequence[HistoryPoint]) -> str:
    """``now #3 · best #3 · worst #17`` for a product known only by its rank (KeyAPI)."""
    ranks = [r.rank for r in rows if r.rank is not None and r.present]
    if not ranks:
        return ""
    last = rows[-1]
    now = "gone" if not last.present else "unranked" if last.rank is None else f"#{last.rank}"
    return f"now {now} · best #{min(ranks)} · worst #{max(ranks)}"


def _money_change(
    label: str, before: Decimal | None, now: Decimal | None, currency: str | None
) -> list[str]:
    if before == now:
        return []
    if before is None:
        return [f"{label} {format_money(now, currency)}"]
    if now is None:
        return [f"{label} unknown"]
    text = f"{label} {format_money(before, currency)} → {format_money(now, currency)}"
    if before.is_finite() and now.is_finite() and not before.is_zero():
        change = signed_percent((now - before) * 100 / before)
        text += f" ({change})" if change else ""
    return [text]


def _pct_or_none(value: int | None) -> str:
    return "none" if value is None else pct(value)


def _stamp_format(rows: Sequence[HistoryPoint]) -> str:
    """Minutes, or seconds when two rows fall in the same minute (the demo polls each second)."""
    minutes = [as_utc(r.at).replace(second=0, microsecond=0) for r in rows]
    return "%Y-%m-%d %H:%M:%S" if len(set(minutes)) < len(minutes) else "%Y-%m-%d %H:%M"


_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _superscript(n: int) -> str:
    return str(n).translate(_SUPERSCRIPT)
