"""What both upstreams' parsers share: value cleaning, page shapes, ranks. Pure: no I/O.

Each provider module (``socialfetch``, ``keyapi``) maps its own JSON onto ``Product`` with
these helpers. Shape mismatches that make a page unusable (no ``data``, products not a list,
pagination unreadable) raise ``MalformedPayload``. A *product* that cannot be trusted (not an
object, no id, an id with control characters, a field of the wrong JSON type such as an
object where a title belongs) raises ``Unusable``: ``product_rows`` skips and counts it,
never guessing (a guess could give it a new identity and fire false alerts), and fails a
page where most products are unusable. Odd *values* of the right type (a price "N/A" or
1e40, sold "12k", a rating of 7) become ``None`` so one bad value never costs a product.
Text is cleaned of control characters and lone surrogates (a NUL cannot be stored in
PostgreSQL). Nothing but ``MalformedPayload`` ever leaves a parser.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from watcher.errors import FetchError
from watcher.models import Product


class MalformedPayload(FetchError):
    """A 200 body that does not match the documented shape: a failed page, never retried."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message, retryable=False, request_id=request_id)


@dataclass(frozen=True, slots=True)
class ParsedPage:
    """One normalised upstream page plus what the client needs to page on and bill.

    ``next`` is the cursor (store, showcase) or next page number (search, KeyAPI);
    ``credits`` is what the body reported (``specs.charged_credits``); the client bills by
    its provider's ``credits``, which also covers bodies that report nothing.
    """

    products: tuple[Product, ...]
    has_more: bool
    next: str | int | None = None
    request_id: str | None = None
    credits: int | None = None
    not_found: bool = False
    skipped: tuple[str, ...] = ()  # why each unusable product was left out


# --------------------------------------------------------------------------- field helpers
#
# Field helpers are total: whatever JSON (or Python value) they get, they return a sane value
# or None and never raise. Bounds, chosen so an absurd upstream value cannot reach the
# snapshot, the diff or an alert:
#   price, original price   finite, 0 <= x < 10**9, at most 4 decimal places (trailing zeros
#                           beyond 4 places are dropped; "1E+2" becomes "100"; "-0" becomes "0")
#   rating                  finite, 0 <= x <= 5, rounded half-up to 2 places when finer
#   discount percent        an int 0..100 (parsed or computed, rounded half-up)
#   sold, reviews, page     whole numbers, 0 <= n < 10**12

_PERCENT_SIGN = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_BARE_NUMBER = re.compile(r"\s*-?\s*(\d+(?:\.\d+)?)\s*")
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
MAX_PRICE = Decimal(10**9)
PRICE_PLACES = 4
MAX_RATING = Decimal(5)
RATING_PLACES = 2
MAX_COUNT = 10**12
_MAX_COUNT_DIGITS = len(str(MAX_COUNT))
_NUMERIC_ERRORS = (ArithmeticError, ValueError)  # ValueError: int too long to print (3.11+)


class Unusable(Exception):
    """This product cannot be trusted: ``product_rows`` skips it (never leaves a parser)."""


# C0 and C1 controls and DEL (tab, newline and CR become spaces), and lone surrogates, which
# JSON can carry ("\ud800") but UTF-8 cannot.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_BREAKS = re.compile("[\t\n\r]")


_T = TypeVar("_T")


def _memo(fn: Callable[[Any], _T]) -> Callable[[Any], _T]:
    """Remember a scalar converter's answers for strings and ints (exact types: ``True``
    must not hit ``1``'s entry, nor ``Decimal("1.0")`` that of ``"1.00"``). A poll reads the
    same few hundred price, count and text values again and again."""
    cached = functools.lru_cache(maxsize=8192)(fn)

    @functools.wraps(fn)
    def call(value: Any) -> _T:
        kind = type(value)
        if kind is str or kind is int:
            return cached(value)
        return fn(value)

    return call


def _clean(text: str) -> str:
    return _CONTROLS.sub("", _BREAKS.sub(" ", text)) if not text.isprintable() else text


def sub_object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A nested optional object; null or missing is empty, any other type is unusable."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unusable(f"{key} is {describe(value)}, expected an object")
    return value


@_memo
def to_text(value: Any) -> str | None:
    """A non-blank string, cleaned of control characters, else None (lenient: envelopes)."""
    if not isinstance(value, str):
        return None
    text = _clean(value)
    return text if text.strip() else None


def text_field(obj: Mapping[str, Any], key: str) -> str | None:
    """A product's text field: null, missing or blank is None; not a string is unusable."""
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise Unusable(f"{key} is {describe(value)}, expected a string")
    return to_text(value)


def ident(value: Any) -> str | None:
    """An identifier: a non-blank string or an integer (never a bool); else None.

    A string id with a control character or a surrogate is no id: cleaning it could make two
    products one.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than Python will print: not an id
            return None
    if not isinstance(value, str) or not value.strip() or _CONTROLS.search(value):
        return None
    return value


def id_field(obj: Mapping[str, Any], key: str) -> str | None:
    """An optional identifier field (shop, seller, category): present but bad is unusable."""
    value = obj.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    found = ident(value)
    if found is None:
        raise Unusable(f"{key} is {show(value)}, expected a string or integer id")
    return found


def numeric_field(obj: Mapping[str, Any], key: str) -> Any:
    """A numeric field's raw value: an object, a list or a boolean makes the product unusable
    (a string is fine: upstream writes "12k" and "N/A", which become None)."""
    value = obj.get(key)
    if isinstance(value, dict | list | bool):
        raise Unusable(f"{key} is {describe(value)}, expected a number or a string")
    return value


def _number(value: Any) -> Decimal | None:
    """Any finite Decimal (sign kept) from a decimal string or a JSON number; else None.

    Numbers go through ``str`` so a float 4.5 becomes Decimal("4.5"), not its binary value.
    """
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, int | float | Decimal):
            text = str(value)
        elif isinstance(value, str):
            text = value.strip()
        else:
            return None
        number = Decimal(text)
    except _NUMERIC_ERRORS:
        return None
    return number if number.is_finite() else None


def _decimal(value: Any) -> Decimal | None:
    """A finite, non-negative Decimal ("-0" becomes "0"); else None. Unbounded."""
    number = _number(value)
    if number is None:
        return None
    if number.is_zero():
        return number.copy_abs()
    return None if number.is_signed() else number


def _bounded(value: Any, limit: Decimal, places: int) -> Decimal | None:
    """``_decimal`` within ``0..limit`` with at most ``places`` decimal places, exponent-free."""
    number = _decimal(value)
    if number is None or number > limit:
        return None
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    try:
        if exponent > 0:  # "1E+2" → "100": bounded, so this is at most 10 digits
            return number.quantize(_ONE)
        if exponent < -places:
            exact = number.quantize(Decimal(1).scaleb(-places))
            return exact if exact == number else None
    except ArithmeticError:  # pragma: no cover - bounded values always fit the context
        return None
    return number


@_memo
def to_price(value: Any) -> Decimal | None:
    """A price: see the bounds above; absurd prices ("1e30", 9.99999, NaN) become None."""
    price = _bounded(value, MAX_PRICE, PRICE_PLACES)
    return None if price is None or price == MAX_PRICE else price


@_memo
def to_rating(value: Any) -> Decimal | None:
    """A 0..5 rating, rounded half-up to 2 places when upstream sends a longer fraction."""
    number = _decimal(value)
    if number is None or number > MAX_RATING:
        return None
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    try:
        if exponent < -RATING_PLACES:
            number = number.quantize(Decimal(1).scaleb(-RATING_PLACES), rounding=ROUND_HALF_UP)
        return _bounded(number, MAX_RATING, RATING_PLACES)
    except ArithmeticError:  # pragma: no cover - bounded values always fit the context
        return None


@_memo
def to_count(value: Any) -> int | None:
    """A whole number 0 <= n < 10**12 (int, integral number, or digit string); else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value < MAX_COUNT else None
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > _MAX_COUNT_DIGITS:
            return None
        return to_count(int(text))
    number = _decimal(value)
    if number is None or number >= MAX_COUNT or number != number.to_integral_value():
        return None
    return int(number)


def _round(value: Decimal) -> int:
    return int(value.quantize(_ONE, rounding=ROUND_HALF_UP))


@_memo
def _parse_percent(value: Any) -> int | None:
    """ "42%", "-40%", "42" or 42 → 42 (rounded half-up); anything outside 0..100 → None."""
    if isinstance(value, bool) or value is None:
        return None
    number: Decimal | None
    if isinstance(value, int | float | Decimal):
        number = _number(value)
    elif isinstance(value, str):
        match = _PERCENT_SIGN.search(value) or _BARE_NUMBER.fullmatch(value)
        number = _number(match.group(1)) if match else None
    else:
        return None
    if number is None:
        return None
    number = number.copy_abs()
    if number > _HUNDRED + _ONE:  # also keeps a 30-digit number away from ``quantize``
        return None
    try:
        percent = _round(number)
    except ArithmeticError:  # pragma: no cover - bounded values always fit the context
        return None
    return percent if 0 <= percent <= 100 else None


def _computed_discount(price: Decimal | None, original: Decimal | None) -> int | None:
    """Discount from price and original: 0 when equal, None when it would not be a discount.

    ``(original - price) * 100 / original`` keeps exact halves exact (10 → 8.75 is 12.5 → 13).
    """
    if price is None or original is None or original <= 0 or price <= 0 or price > original:
        return None
    try:
        return _round((original - price) * _HUNDRED / original)
    except ArithmeticError:  # pragma: no cover - prices are bounded before they get here
        return None


def discount(text: Any, price: Decimal | None, original: Decimal | None) -> int | None:
    parsed = _parse_percent(text)
    return parsed if parsed is not None else _computed_discount(price, original)


def show(value: Any, limit: int = 40) -> str:
    """``repr`` for an error message: short, and safe for ints too long to print."""
    try:
        text = repr(value)
    except ValueError:
        return f"a {type(value).__name__} too long to show"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- shape helpers


def envelope_request_id(raw: Any) -> str | None:
    """Best-effort request id from either provider's envelope, for error messages."""
    if not isinstance(raw, dict):
        return None
    meta = raw.get("meta")
    if isinstance(meta, dict) and to_text(meta.get("requestId")):
        return meta["requestId"]
    return to_text(raw.get("requestId"))


def require_object(value: Any, what: str, rid: str | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{what} is {describe(value)}, expected an object", request_id=rid)
    return value


def require_list(obj: Mapping[str, Any], key: str, what: str, rid: str | None) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise MalformedPayload(f"{what} is {describe(value)}, expected a list", request_id=rid)
    return value


def require_bool(obj: Mapping[str, Any], key: str, what: str, rid: str | None) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise MalformedPayload(f"{what} is {describe(value)}, expected a boolean", request_id=rid)
    return value


def describe(value: Any) -> str:
    if value is None:
        return "missing or null"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def product_rows(
    rows: list[Any], what: str, rid: str | None, build: Callable[[dict[str, Any], str], Product]
) -> tuple[tuple[Product, ...], tuple[str, ...]]:
    """Each usable row as a ``Product``, and why the others were skipped.

    A page where most rows are unusable is a failed page: that is a changed or broken
    upstream, not a few odd products.
    """
    products: list[Product] = []
    skipped: list[str] = []
    for index, row in enumerate(rows):
        path = f"{what}[{index}]"
        try:
            if not isinstance(row, dict):
                raise Unusable(f"is {describe(row)}, expected an object")
            products.append(build(row, path))
        except Unusable as why:
            skipped.append(f"{path} {why}")
    if skipped and len(skipped) * 2 > len(rows):
        raise MalformedPayload(
            f"{len(skipped)} of {len(rows)} products unusable, first: {skipped[0]}",
            request_id=rid,
        )
    return tuple(products), tuple(skipped)


def require_id(row: Mapping[str, Any]) -> str:
    product_id = ident(row.get("id"))
    if product_id is None:
        raise Unusable(f"has no string or integer id (id is {show(row.get('id'))})")
    return product_id


def assign_ranks(pages: Iterable[tuple[Product, ...]]) -> tuple[Product, ...]:
    """Concatenate pages in upstream order, keep the first of repeated ids, rank from 1.

    Upstream pages can shift between requests, so the same product may appear twice.
    """
    seen: set[str] = set()
    ranked: list[Product] = []
    for page in pages:
        for product in page:
            if product.id in seen:
                continue
            seen.add(product.id)
            ranked.append(replace(product, rank=len(ranked) + 1))
    return tuple(ranked)
