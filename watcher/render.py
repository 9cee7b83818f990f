"""Alerts → plain text, Telegram HTML, webhook JSON.

Pure: no I/O. Money is formatted from ``Decimal`` without ever going through ``float``.
Rendering never raises for any ``Product``: an amount or percentage that cannot be formatted
(NaN, infinity, 1e30, a change too large to round) falls back to ``str`` or is left out.
What a message says about each rule kind (headline, value lines, the values that identify
the transition) comes from the kind's definition in ``watcher.rules``.
"""

from __future__ import annotations

import html
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from watcher.formatting import NUMBER_ERRORS, format_money, int_text, standard_lines
from watcher.models import Alert, AlertDraft, Product, product_dict
from watcher.rules import RULE_KINDS, Value, price_values
from watcher.util import iso_utc

_TEMPLATE_FIELDS = (
    "title", "price", "old_price", "discount", "rank", "old_rank", "url", "rule", "watch", "shop",
)  # fmt: skip
# The product and previous objects of the webhook body (spec section 6), in this order.
WEBHOOK_PRODUCT_FIELDS = (
    "id", "title", "url", "image_url", "currency", "price", "original_price",
    "discount_percent", "rank", "sold", "shop_id", "shop_name",
)  # fmt: skip
WEBHOOK_PREVIOUS_FIELDS = ("price", "discount_percent", "rank")


def transition_values(draft: AlertDraft) -> tuple[Value, Value]:
    """The (old, new) values that identify the transition a draft alerts about."""
    kind = RULE_KINDS.get(draft.kind)
    if kind is None:
        return price_values(draft.previous, draft.product)
    return kind.values(draft.previous, draft.product)


# --- JSON -------------------------------------------------------------------------------------


def previous_dict(p: Product | None) -> dict[str, Any] | None:
    """The ``previous`` object of the webhook body: price, discount_percent, rank."""
    return product_dict(p, WEBHOOK_PREVIOUS_FIELDS)


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
        "product": None if notice else product_dict(alert.product, WEBHOOK_PRODUCT_FIELDS),
        "previous": None if notice else previous_dict(alert.previous),
        "message": message,
    }


def digest_body(alerts: Sequence[Alert]) -> dict[str, Any]:
    """One webhook request for a burst: the single-alert bodies in an ``alerts`` array."""
    return {"alerts": [webhook_body(a) for a in alerts], "count": len(alerts), "kind": "digest"}


# --- human text -------------------------------------------------------------------------------


def render_text(alert: Alert, template: str | None = None) -> str:
    """The short plain-text message; a notice's is its ``message``.

    ``template`` (a rule's ``template``) is ``str.format`` text over title, price, old_price,
    discount, rank, old_rank, url, rule, watch and shop; a template that cannot be rendered
    falls back to the default text.
    """
    return _message(alert, template, _PLAIN)


def render_html(alert: Alert, template: str | None = None) -> str:
    """The same message for Telegram's HTML parse mode: every dynamic value escaped."""
    return _message(alert, template, _HTML)


def render_product_text(alerts: Sequence[Alert]) -> str:
    """One plain-text message for several alerts of one product in one poll (``by_product``).

    The headline lists each rule's reason ("Price drop · Lowest price: <title>"), then the
    old → new lines once (each distinct line of the alerts, in order) and the link. An alert
    whose stored ``message`` is its rule's ``template`` (``custom_message``) keeps that text,
    on a line of its own before the others. One alert renders as ``render_text`` does.
    """
    return _product_message(alerts, _PLAIN)


def render_product_html(alerts: Sequence[Alert]) -> str:
    """``render_product_text`` for Telegram's HTML parse mode: every dynamic value escaped."""
    return _product_message(alerts, _HTML)


def render_digest_text(alerts: Iterable[Alert]) -> str:
    """One plain-text message listing a burst of alerts, best deals first; the alerts of one
    product in one poll are one entry listing each reason."""
    return _digest(alerts, _PLAIN)


def render_digest_html(alerts: Iterable[Alert]) -> str:
    """The digest for Telegram's HTML parse mode: one block per product, best deals first."""
    return _digest(alerts, _HTML)


def by_product(alerts: Iterable[Alert]) -> list[tuple[Alert, ...]]:
    """The alerts grouped by ``product_key``, each group in order, groups in order of their
    first alert: what a person reads as one event."""
    groups: dict[object, list[Alert]] = {}
    for a in alerts:
        groups.setdefault(product_key(a) or object(), []).append(a)
    return [tuple(g) for g in groups.values()]


def product_key(alert: Alert) -> tuple[str, str, str] | None:
    """(poll, watch, product) of a rule alert about a product; None for a notice, an alert
    without a product or one of no known poll (empty ``batch``): those stand alone."""
    if alert.product is None or alert.is_notice or not alert.batch:
        return None
    return (alert.batch, alert.watch_id or "", alert.product.id)


def custom_message(alert: Alert) -> str | None:
    """The alert's stored text when its rule's ``template`` made it, else None.

    The pipeline stores ``message`` rendered with the rule's template (a channel does not
    know the rules): a text that differs from the default one is the template's.
    """
    if alert.product is None or not alert.message or alert.message == render_text(alert):
        return None
    return alert.message


@dataclass(frozen=True, slots=True)
class _Markup:
    """How one output format escapes text, makes it bold and links a product."""

    escape: Callable[[str], str]
    bold: str  # a format string around the text
    link: Callable[[Product], str | None]


_PLAIN = _Markup(lambda text: text, "{}", lambda p: p.url or None)
_HTML = _Markup(html.escape, "<b>{}</b>", lambda p: _link(p))


def _message(alert: Alert, template: str | None, m: _Markup) -> str:
    if alert.product is None:
        return m.escape(alert.message)
    if template:
        text = _apply_template(template, _template_fields(alert))
        if text is not None:
            return m.escape(text)
    return "\n".join(_block((alert,), "", m))


def _product_message(alerts: Sequence[Alert], m: _Markup) -> str:
    own = [(a, custom_message(a)) for a in alerts]
    lines = [m.escape(text) for _, text in own if text is not None]
    lines += [m.escape(a.message) for a, _ in own if a.product is None]  # a notice
    rest = [a for a, text in own if text is None and a.product is not None]
    if rest:
        lines += _block(rest, "", m)
    return "\n".join(lines)


def _digest(alerts: Iterable[Alert], m: _Markup) -> str:
    groups = _sort_groups(by_product(alerts))
    count = sum(len(g) for g in groups)
    head = f"{count} alerts"
    if len(groups) < count:  # some entries list several reasons of one product
        products = sum(1 for g in groups if g[0].product is not None)
        head += f" on {_count(products, 'product')}"
        if products < len(groups):
            head += f" and {_count(len(groups) - products, 'notice')}"
    blocks = [m.bold.format(head)]
    for n, group in enumerate(groups, 1):
        if group[0].product is None:
            blocks.append(f"{n}. {m.escape(group[0].message)}")
        else:
            blocks.append("\n".join(_block(group, f"{n}. ", m)))
    return "\n\n".join(blocks)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _block(alerts: Sequence[Alert], prefix: str, m: _Markup) -> list[str]:
    """Headline, value lines and link of the alerts about one product in one poll: each
    reason in the headline, each distinct value line once (one alert: just its own)."""
    p = alerts[0].product
    assert p is not None
    title = m.bold.format(m.escape(_title(p)))
    reasons = " · ".join(dict.fromkeys(_headline(a) for a in alerts))
    lines = [f"{prefix}{m.escape(reasons)}: {title}"]
    values = dict.fromkeys(line for a in alerts for line in _value_lines(a))
    lines += [m.escape(line) for line in values]
    link = m.link(p)
    if link:
        lines.append(link)
    return lines


def sort_best_first(alerts: Iterable[Alert]) -> list[Alert]:
    """Bigger price drop first, then bigger discount; notices last; otherwise stable."""
    return sorted(alerts, key=_best_first_key)


def _sort_groups(groups: Iterable[tuple[Alert, ...]]) -> list[tuple[Alert, ...]]:
    """``sort_best_first`` over groups of one product: a group ranks by its best alert."""
    return sorted(groups, key=lambda g: min(_best_first_key(a) for a in g))


def _best_first_key(a: Alert) -> tuple[int, Decimal, int]:
    if a.product is None:
        return (1, Decimal(0), 0)
    return (0, -_drop_fraction(a), -(a.product.discount_percent or 0))


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
    kind = RULE_KINDS.get(alert.kind)
    return kind.headline if kind else alert.kind.replace("_", " ").capitalize()


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
    kind = RULE_KINDS.get(alert.kind)
    return kind.lines(p, old) if kind else standard_lines(p, old)


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
    except NUMBER_ERRORS:
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
    return int_text(value) if isinstance(value, int) else str(value)


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
