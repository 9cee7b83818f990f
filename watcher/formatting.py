"""Numbers as message text: money, percentages, ranks, counts and the old → new lines.

Pure, and it never raises for any value a ``Product`` may hold: an amount or percentage
that cannot be formatted (NaN, infinity, 1e30, a change too large to round) falls back to
``str`` or is left out. Money never goes through ``float``. Shared by ``render`` and the
rule kinds (each kind's value lines live with the kind).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from watcher.models import Product

NUMBER_ERRORS = (ArithmeticError, ValueError, TypeError)
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
_CENT = Decimal("0.01")
_MAX_PLAIN_DIGITS = 24  # integer digits shown with thousands separators; more is ``str``
_MAX_PLAIN_PLACES = 12  # decimal places shown in full; more is ``str``


def format_money(amount: Decimal | None, currency: str | None) -> str:
    """``$19.99``, ``€5.00``, ``1,250.00 MYR``; "?" for an unknown amount. No float.

    Never raises: NaN, infinities and amounts too large or too fine to show in full (1e30)
    are shown as ``str(amount)``, with the currency as usual.
    """
    if amount is None:
        return "?"
    try:
        text = _plain_money(amount)
    except NUMBER_ERRORS:
        text = str(amount)
    code = (currency or "").upper()
    if code in _SYMBOLS:
        sign = "-" if text.startswith("-") else ""
        return f"{sign}{_SYMBOLS[code]}{text.lstrip('-')}"
    return f"{text} {code}" if code else text


def _plain_money(amount: Decimal) -> str:
    """``1,250.00``; raises ValueError or ArithmeticError for what cannot be shown so."""
    if not amount.is_finite():
        raise ValueError("not a finite amount")
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if amount.adjusted() >= _MAX_PLAIN_DIGITS or exponent < -_MAX_PLAIN_PLACES:
        raise ValueError("too long to show in full")
    if exponent >= -2:
        amount = amount.quantize(_CENT)
    return f"{amount:,f}"


def price_or_unknown(p: Product) -> str:
    """The product's price as money, or "price unknown"."""
    return format_money(p.price, p.currency) if p.price is not None else "price unknown"


def price_line(p: Product, old: Product | None) -> str:
    """``$19.99 → $14.96 (-25%) · 40% off``, or the price now when it did not change."""
    now = _price_now(p)
    before = old.price if old else None
    if before is None or p.price is None or _same(before, p.price):
        return now
    change = _change(before, p.price)
    text = f"{format_money(before, p.currency)} → {format_money(p.price, p.currency)}"
    text += f" ({change})" if change else ""
    if p.discount_percent:
        text += f" · {int_text(p.discount_percent)}% off"
    return text


def _price_now(p: Product) -> str:
    text = price_or_unknown(p)
    if p.discount_percent:
        text += f" · {int_text(p.discount_percent)}% off"
    return text


def price_lines(p: Product, old: Product | None) -> list[str]:
    """The price line, or nothing when no price is known (KeyAPI ranking rows have none:
    say nothing rather than "unknown")."""
    line = price_line(p, old)
    return [line] if line != "price unknown" else []


def standard_lines(p: Product, old: Product | None, first: list[str] | None = None) -> list[str]:
    """``first`` (default: the price line, when a price is known), then the rank line when
    the rank moved: the value lines of a kind that shows nothing special."""
    first = price_lines(p, old) if first is None else first
    old_rank = old.rank if old else None
    if old_rank and p.rank and old_rank != p.rank:
        return [*first, rank_line(p, old)]
    return first


def rank_line(p: Product, old: Product | None) -> str:
    """``#9 → #3``; "unranked" for no rank."""
    return f"{rank_text(old.rank if old else None)} → {rank_text(p.rank)}"


def _same(a: Decimal, b: Decimal) -> bool:
    try:
        return a == b
    except NUMBER_ERRORS:  # a signaling NaN refuses even ``==``
        return False


def _change(before: Decimal, now: Decimal) -> str:
    """``-25%`` from ``before`` to ``now``; "" when there is no meaningful percentage."""
    try:
        if not (before.is_finite() and now.is_finite()) or before.is_zero():
            return ""
        return signed_percent((now - before) * 100 / before)
    except NUMBER_ERRORS:  # overflow of a huge change
        return ""


def signed_percent(value: Decimal) -> str:
    """``+12%``, ``-0.3%``; a value too large to round is shown as ``str(value)%``."""
    try:
        if not value.is_finite():
            return ""
        places = Decimal("1") if abs(value) >= 1 else Decimal("0.1")
        rounded = value.quantize(places, rounding=ROUND_HALF_UP)
    except NUMBER_ERRORS:
        rounded = value
    sign = "+" if rounded > 0 else ""
    return f"{sign}{rounded}%"


def int_text(value: int) -> str:
    """``str(value)``, or "?" for an int with more digits than Python will print."""
    try:
        return str(value)
    except ValueError:
        return "?"


def count_text(value: int | None) -> str:
    """``1,283,012``; "?" for unknown or for more digits than Python will print."""
    if value is None:
        return "?"
    try:
        return f"{value:,}"
    except ValueError:
        return "?"


def pct(value: int | None) -> str:
    """``40%``; "?" for unknown."""
    return "?" if value is None else f"{int_text(value)}%"


def rank_text(value: int | None) -> str:
    return "unranked" if value is None else f"#{int_text(value)}"
