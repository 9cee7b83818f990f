"""Alerts → plain text, Telegram HTML, webhook JSON; and the deterministic ``alert_id``.

Pure: no I/O. Money is formatted from ``Decimal`` without ever going through ``float``.
Rendering never raises for any ``Product``: an amount or percentage that cannot be formatted
(NaN, infinity, 1e30, a change too large to round) falls back to ``str`` or is left out.
"""

from __future__ import annotations

import hashlib
import html
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from watcher.models import Alert, AlertDraft, Product
from watcher.util import iso_utc

Value = str | int | None

_PRICE_KINDS = frozenset({"price_drop", "price_below", "lowest_price"})
_HEADLINES = {
    "price_drop": "Price drop",
    "price_below": "Price below target",
    "discount_at_least": "Discount",
    "new_item": "New item",
    "rank_jump": "Rank jump",
    "out_of_stock": "Out of stock",
    "back_in_stock": "Back in stock",
    "lowest_price": "Lowest price",
}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
_TEMPLATE_FIELDS = (
    "title", "price", "old_price", "discount", "rank", "old_rank", "url", "rule", "watch", "shop",
)  # fmt: skip
_CENT = Decimal("0.01")
_MAX_PLAIN_DIGITS = 24  # integer digits shown with thousands separators; more is ``str``
_MAX_PLAIN_PLACES = 12  # decimal places shown in full; more is ``str``
_NUMBER_ERRORS = (ArithmeticError, ValueError, TypeError)


# --- identity ---------------------------------------------------------------------------------


def alert_id(
    rule_id: str | None,
    watch_id: str | None,
    product_id: str | None,
    kind: str,
    old: object,
    new: object,
    seq: int,
) -> str:
    """A stable id for one transition: the same poll re-processed gives the same id.

    ``seq`` is the sequence number of the snapshot the poll replaced, so the same 20 → 15
    drop weeks later is a different alert.
    """
    payload = {
        "rule": rule_id,
        "watch": watch_id,
        "product": product_id,
        "kind": kind,
        "old": _canonical(old),
        "new": _canonical(new),
        "seq": seq,
    }
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def transition_values(draft: AlertDraft) -> tuple[Value, Value]:
    """The (old, new) values that identify the transition a draft alerts about."""
    old, new = draft.previous, draft.product
    if draft.kind in _PRICE_KINDS:
        return _dec(old.price if old else None), _dec(new.price)
    if draft.kind == "discount_at_least":
        return (old.discount_percent if old else None), new.discount_percent
    if draft.kind == "rank_jump":
        return (old.rank if old else None), new.rank
    if draft.kind == "out_of_stock":
        return "present", "absent"
    if draft.kind in ("back_in_stock", "new_item"):
        return ("absent" if old else None), "present"
    return _dec(old.price if old else None), _dec(new.price)


def _canonical(value: object) -> object:
    if isinstance(value, Decimal):
        return _dec(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _dec(value: Decimal | None) -> str | None:
    """Canonical decimal text: ``Decimal("20.00")`` and ``Decimal("20")`` both give "20"."""
    if value is None:
        return None
    try:
        text = f"{value.normalize():f}"
    except _NUMBER_ERRORS:
        return str(value)
    return "0" if text in ("-0", "0") else text


# --- JSON -------------------------------------------------------------------------------------


def product_dict(p: Product | None) -> dict[str, Any] | None:
    """The product object of the webhook body (spec section 6); decimals as strings."""
    if p is None:
        return None
    return {
        "id": p.id,
        "title": p.title,
        "url": p.url,
        "image_url": p.image_url,
        "currency": p.currency,
        "price": _str(p.price),
        "original_price": _str(p.original_price),
        "discount_percent": p.discount_percent,
        "rank": p.rank,
        "sold": p.sold,
        "shop_id": p.shop_id,
        "shop_name": p.shop_name,
    }


def previous_dict(p: Product | None) -> dict[str, Any] | None:
    """The ``previous`` object of the webhook body: price, discount_percent, rank."""
    if p is None:
        return None
    return {"price": _str(p.price), "discount_percent": p.discount_percent, "rank": p.rank}


def webhook_body(alert: Alert, template: str | None = None) -> dict[str, Any]:
    """Exactly the single-alert webhook body of spec section 6.

    ``message`` is ``render_text(alert, template)``; without a template, the text already
    stored on the alert (the pipeline renders it, rule template included) when there is one.
    """
    notice = alert.is_notice
    message = render_text(alert, template) if template or not alert.message else alert.message
    return {
        "alert_id": alert.alert_id,
        "rule": None if notice else alert.rule_id,
        "kind": alert.kind,
        "watch": alert.watch_id,
        "detected_at": iso_utc(alert.detected_at),
        "product": None if notice else product_dict(alert.product),
        "previous": None if notice else previous_dict(alert.previous),
        "message": message,
    }


def digest_body(alerts: Sequence[Alert]) -> dict[str, Any]:
    """One webhook request for a burst: the single-alert bodies in an ``alerts`` array."""
    return {"alerts": [webhook_body(a) for a in alerts], "count": len(alerts), "kind": "digest"}


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


# --- human text -------------------------------------------------------------------------------


def format_money(amount: Decimal | None, currency: str | None) -> str:
    """``$19.99``, ``€5.00``, ``1,250.00 MYR``; "?" for an unknown amount. No float.

    Never raises: NaN, infinities and amounts too large or too fine to show in full (1e30)
    are shown as ``str(amount)``, with the currency as usual.
    """
    if amount is None:
        return "?"
    try:
        text = _plain_money(amount)
    except _NUMBER_ERRORS:
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


def render_text(alert: Alert, template: str | None = None) -> str:
    """The short plain-text message; a notice's is its ``message``.

    ``template`` (a rule's ``template``) is ``str.format`` text over title, price, old_price,
    discount, rank, old_rank, url, rule, watch and shop; a template that cannot be rendered
    falls back to the default text.
    """
    if alert.product is None:
        return alert.message
    if template:
        text = _apply_template(template, _template_fields(alert))
        if text is not None:
            return text
    p = alert.product
    lines = [f"{_headline(alert)}: {_title(p)}", *_value_lines(alert)]
    if p.url:
        lines.append(p.url)
    return "\n".join(lines)


def render_html(alert: Alert, template: str | None = None) -> str:
    """The same message for Telegram's HTML parse mode: every dynamic value escaped."""
    if alert.product is None:
        return html.escape(alert.message)
    if template:
        text = _apply_template(template, _template_fields(alert))
        if text is not None:
            return html.escape(text)
    p = alert.product
    lines = [f"{html.escape(_headline(alert))}: <b>{html.escape(_title(p))}</b>"]
    lines += [html.escape(line) for line in _value_lines(alert)]
    link = _link(p)
    if link:
        lines.append(link)
    return "\n".join(lines)


def render_digest_text(alerts: Iterable[Alert]) -> str:
    """One plain-text message listing a burst of alerts, best deals first."""
    ordered = sort_best_first(alerts)
    blocks = [f"{len(ordered)} alerts"]
    for n, a in enumerate(ordered, 1):
        if a.product is None:
            blocks.append(f"{n}. {a.message}")
            continue
        lines = [f"{n}. {_headline(a)}: {_title(a.product)}", *_value_lines(a)]
        if a.product.url:
            lines.append(a.product.url)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_digest_html(alerts: Iterable[Alert]) -> str:
    """The digest for Telegram's HTML parse mode: one block per alert, best deals first."""
    ordered = sort_best_first(alerts)
    blocks = [f"<b>{len(ordered)} alerts</b>"]
    for n, a in enumerate(ordered, 1):
        if a.product is None:
            blocks.append(f"{n}. {html.escape(a.message)}")
            continue
        title = f"<b>{html.escape(_title(a.product))}</b>"
        lines = [f"{n}. {html.escape(_headline(a))}: {title}"]
        lines += [html.escape(line) for line in _value_lines(a)]
        link = _link(a.product)
        if link:
            lines.append(link)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def sort_best_first(alerts: Iterable[Alert]) -> list[Alert]:
    """Bigger price drop first, then bigger discount; notices last; otherwise stable."""

    def key(a: Alert) -> tuple[int, Decimal, int]:
        if a.product is None:
            return (1, Decimal(0), 0)
        return (0, -_drop_fraction(a), -(a.product.discount_percent or 0))

    return sorted(alerts, key=key)


def split_message(text: str, limit: int = 4096) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters.

    Splits between blank-line blocks when it can, else between lines; a line longer than the
    limit is cut at a space, or hard, but never inside an HTML tag or entity when avoidable.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    if len(text) <= limit:
        return [text] if text else []
    chunks: list[str] = []
    current = ""
    for block in text.split("\n\n"):
        pieces = [block] if len(block) <= limit else _split_lines(block, limit)
        for i, piece in enumerate(pieces):
            sep = "\n\n" if i == 0 else "\n"
            if current and len(current) + len(sep) + len(piece) <= limit:
                current += sep + piece
            else:
                if current:
                    chunks.append(current)
                current = piece
    if current:
        chunks.append(current)
    return chunks


def _split_lines(block: str, limit: int) -> list[str]:
    out: list[str] = []
    current = ""
    for line in block.split("\n"):
        parts = [line] if len(line) <= limit else _hard_split(line, limit)
        for part in parts:
            if current and len(current) + 1 + len(part) <= limit:
                current += "\n" + part
            else:
                if current:
                    out.append(current)
                current = part
    if current:
        out.append(current)
    return out


def _hard_split(line: str, limit: int) -> list[str]:
    out: list[str] = []
    while len(line) > limit:
        cut = _cut_point(line, limit)
        out.append(line[:cut])
        line = line[cut:].lstrip(" ")
    if line:
        out.append(line)
    return out


def _cut_point(line: str, limit: int) -> int:
    """Where to cut: at most ``limit``, outside a tag or entity, at a space if one is near."""
    cut = limit
    head = line[:cut]
    tag = head.rfind("<")
    if tag > head.rfind(">"):
        cut = tag
    else:
        amp = head.rfind("&")
        if amp > head.rfind(";") and cut - amp <= 10:
            cut = amp
    space = line.rfind(" ", 0, cut + 1)
    if space > cut // 2 and not _inside_tag(line, space):
        cut = space
    return cut if cut > 0 else limit


def _inside_tag(line: str, pos: int) -> bool:
    return line.rfind("<", 0, pos) > line.rfind(">", 0, pos)


def _headline(alert: Alert) -> str:
    return _HEADLINES.get(alert.kind) or alert.kind.replace("_", " ").capitalize()


def _title(p: Product) -> str:
    return p.title or f"Product {p.id}"


def _link(p: Product) -> str | None:
    if not p.url or not p.url.startswith(("https://", "http://")):
        return None
    return f'<a href="{html.escape(p.url, quote=True)}">Open product</a>'


def _value_lines(alert: Alert) -> list[str]:
    """The old → new lines for the alert's kind (plain text, not escaped)."""
    p, old = alert.product, alert.previous
    assert p is not None
    lines: list[str] = []
    if alert.kind == "out_of_stock":
        lines.append(f"No longer listed (last price {format_money(p.price, p.currency)})")
    elif alert.kind == "discount_at_least":
        was = old.discount_percent if old else None
        price = format_money(p.price, p.currency) if p.price is not None else "price unknown"
        lines.append(f"{_pct(was)} → {_pct(p.discount_percent)} off · {price}")
    elif (line := _price_line(p, old)) != "price unknown":
        # KeyAPI ranking rows have no price at all: say nothing rather than "unknown".
        lines.append(line)
    old_rank = old.rank if old else None
    if alert.kind == "rank_jump" or (old_rank and p.rank and old_rank != p.rank):
        lines.append(f"{_rank(old_rank)} → {_rank(p.rank)}")
    return lines


def _price_line(p: Product, old: Product | None) -> str:
    now = _price_now(p)
    before = old.price if old else None
    if before is None or p.price is None or _same(before, p.price):
        return now
    change = _change(before, p.price)
    text = f"{format_money(before, p.currency)} → {format_money(p.price, p.currency)}"
    text += f" ({change})" if change else ""
    if p.discount_percent:
        text += f" · {_int(p.discount_percent)}% off"
    return text


def _price_now(p: Product) -> str:
    text = format_money(p.price, p.currency) if p.price is not None else "price unknown"
    if p.discount_percent:
        text += f" · {_int(p.discount_percent)}% off"
    return text


def _same(a: Decimal, b: Decimal) -> bool:
    try:
        return a == b
    except _NUMBER_ERRORS:  # a signaling NaN refuses even ``==``
        return False


def _change(before: Decimal, now: Decimal) -> str:
    """``-25%`` from ``before`` to ``now``; "" when there is no meaningful percentage."""
    try:
        if not (before.is_finite() and now.is_finite()) or before.is_zero():
            return ""
        return _signed_percent((now - before) * 100 / before)
    except _NUMBER_ERRORS:  # overflow of a huge change
        return ""


def _signed_percent(value: Decimal) -> str:
    """``+12%``, ``-0.3%``; a value too large to round is shown as ``str(value)%``."""
    try:
        if not value.is_finite():
            return ""
        places = Decimal("1") if abs(value) >= 1 else Decimal("0.1")
        rounded = value.quantize(places, rounding=ROUND_HALF_UP)
    except _NUMBER_ERRORS:
        rounded = value
    sign = "+" if rounded > 0 else ""
    return f"{sign}{rounded}%"


def _int(value: int) -> str:
    """``str(value)``, or "?" for an int with more digits than Python will print."""
    try:
        return str(value)
    except ValueError:
        return "?"


def _pct(value: int | None) -> str:
    return "?" if value is None else f"{_int(value)}%"


def _rank(value: int | None) -> str:
    return "unranked" if value is None else f"#{_int(value)}"


def _drop_fraction(alert: Alert) -> Decimal:
    """How much of the old price the drop is (0.25 for -25%); 0 when it is not a clean drop."""
    p, old = alert.product, alert.previous
    if p is None or old is None or p.price is None or old.price is None:
        return Decimal(0)
    try:
        if not (p.price.is_finite() and old.price.is_finite()) or old.price.is_zero():
            return Decimal(0)
        if p.price >= old.price:
            return Decimal(0)
        fraction = (old.price - p.price) / old.price
    except _NUMBER_ERRORS:
        return Decimal(0)
    return fraction if fraction.is_finite() else Decimal(0)


# --- templates --------------------------------------------------------------------------------


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _template_fields(alert: Alert) -> dict[str, str]:
    p, old = alert.product, alert.previous
    assert p is not None
    values: dict[str, Any] = {
        "title": _title(p),
        "price": format_money(p.price, p.currency) if p.price is not None else "",
        "old_price": format_money(old.price, p.currency) if old and old.price is not None else "",
        "discount": p.discount_percent,
        "rank": p.rank,
        "old_rank": old.rank if old else None,
        "url": p.url,
        "rule": alert.rule_id,
        "watch": alert.watch_id,
        "shop": p.shop_name,
    }
    return {k: _field_text(values[k]) for k in _TEMPLATE_FIELDS}


def _field_text(value: object) -> str:
    if value is None:
        return ""
    return _int(value) if isinstance(value, int) else str(value)


def _apply_template(template: str, fields: Mapping[str, str]) -> str | None:
    """``template.format_map(fields)``, or None when it is malformed or reaches past a field."""
    try:
        for _, name, spec, _ in string.Formatter().parse(template):
            if name is not None and not name.isidentifier():
                return None  # positional, attribute or index access: not a template field
            if spec and "{" in spec:
                return None
        return template.format_map(_Missing(fields))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
