"""Numbers as message text: money, percentages, ranks, counts and the old → new lines.

Pure, and it never raises for any value a ``Product`` may hold: an amount or percentage
that cannot be formatted (NaN, infinity, 1e30, a change too large to round) falls back to
``str`` or is left out. Money never goes through ``float``. Shared by ``render`` and the
rule kinds (each kind's value lines live with the kind).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import lru_cache

from watcher.models import Product

NUMBER_ERRORS = (ArithmeticError, ValueError, TypeError)
LOCALE = "en"  # symbols and their placement (CLDR, through babel)
_CODE = re.compile(r"[A-Z]{3}")
_CENT = Decimal("0.01")
_MAX_PLAIN_DIGITS = 24  # integer digits shown with thousands separators; more is ``str``
_MAX_PLAIN_PLACES = 12  # decimal places shown in full; more is ``str``


def format_money(amount: Decimal | None, currency: str | None) -> str:
    """``$19.99``, ``€5.00``, ``¥1,250``, ``IDR 150,000``, ``MYR 1,250.00``; "?" for an
    unknown amount. No float.

    Per currency (babel's CLDR data, English): its symbol where English has one, else its
    code, and its own number of decimals (none for JPY, IDR, VND); decimals the amount has
    beyond those are shown, never rounded away. Never raises: NaN, infinities and amounts
    too large or too fine to show in full (1e30) are shown as ``str(amount)``, with the
    currency as usual; a currency that is no ISO code is written after the amount as given.
    """
    if amount is None:
        return "?"
    code = (currency or "").strip().upper()
    if not _CODE.fullmatch(code):
        text = _plain_or_str(amount)
        return f"{text} {code}" if code else text
    try:
        _check_plain(amount)
        text = _currency(amount, code)
    except Exception:  # NUMBER_ERRORS, or anything babel has against a code: fall back
        text = ""
    if text:
        return text
    text = str(amount)
    sign = "-" if text.startswith("-") else ""
    return f"{sign}{_prefix(code)}{text.lstrip('-')}"


@lru_cache(maxsize=1)
def _babel() -> tuple[Callable[..., str], Callable[..., str]]:
    """babel's formatters, imported on first use (``watcher check`` never needs them)."""
    from babel.numbers import format_currency, get_currency_symbol

    return format_currency, get_currency_symbol


@lru_cache(maxsize=256)
def _prefix(code: str) -> str:
    """What stands before the number: ``$``, ``€``, or a code and a space (``MYR ``)."""
    symbol = _babel()[1](code, locale=LOCALE)
    return f"{symbol} " if symbol[-1:].isalpha() else symbol


def _currency(amount: Decimal, code: str) -> str:
    """babel's text with the space English puts after a letter symbol (``MYR 99.90``:
    babel writes ``MYR99.90``) and plain spaces, so the text reads the same in a log."""
    if amount.is_zero():
        amount = abs(amount)  # -0.00 is $0.00
    with localcontext(prec=_MAX_PLAIN_DIGITS + _MAX_PLAIN_PLACES + 2):  # babel, in full
        text = _babel()[0](amount, code, locale=LOCALE, decimal_quantization=False)
    text = text.replace("\xa0", " ")
    prefix = _prefix(code)
    bare = prefix.rstrip()
    sign = "-" if text.startswith("-") else ""
    body = text.removeprefix(sign)
    if prefix != bare and body.startswith(bare) and not body.startswith(prefix):
        return f"{sign}{prefix}{body[len(bare) :]}"
    return text


def _check_plain(amount: Decimal) -> None:
    """Raises ValueError for what cannot be shown as a plain number in full."""
    if not amount.is_finite():
        raise ValueError("not a finite amount")
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if amount.adjusted() >= _MAX_PLAIN_DIGITS or exponent < -_MAX_PLAIN_PLACES:
        raise ValueError("too long to show in full")


def _plain_or_str(amount: Decimal) -> str:
    """``1,250.00`` (an amount without a currency), or ``str(amount)``."""
    try:
        _check_plain(amount)
        exponent = amount.as_tuple().exponent
        assert isinstance(exponent, int)
        if exponent >= -2:
            amount = amount.quantize(_CENT)
        return f"{amount:,f}"
    except NUMBER_ERRORS:
        return str(amount)


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
