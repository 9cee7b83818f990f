"""The value types a config key may have (``kinds.Param.type``): one converter each.

A converter turns one YAML node into a typed value or raises ``BadValue`` (the caller
reports the standard "expected ..., got ..." message at the node) or ``AlreadyReported``.
Nothing here records issues itself except through the ``Values`` it is given.
"""

from __future__ import annotations

import difflib
import math
import re
import zoneinfo
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.util import DurationError, parse_duration, strip_handle

if TYPE_CHECKING:
    from watcher.configvalues import Values

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_T + n for n in ("str", "int", "float", "bool", "null"))
MERGE = _T + "merge"
# Plain YAML values only; a custom tag (!foo, !!python/...) is an issue.
KNOWN_TAGS = frozenset(_T + n for n in ("str", "int", "float", "bool", "null", "timestamp"))
KNOWN_TAGS |= {_T + "seq", _T + "map", MERGE}

_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]):([0-5]\d)\Z")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering, 0 = sun

EXPECTED = {
    "str": "text",
    "handle": "text",
    "int": "a whole number",
    "positive_int": "a whole number >= 1",
    "positive_number": "a number > 0",
    "percent": "a whole number from 0 to 100",
    "decimal": 'a non-negative decimal amount like "30.00"',
    "duration": "a duration: a whole number and a unit s, m, h or d (2s, 15m, 1h, 1d)",
    "bool": "true or false",
    "str_list": "a list of text items, e.g. [a, b]",
    "int_list": "a list of whole numbers, e.g. [123456789, -1001234567890]",
    "str_map": "a mapping of text to text, e.g. {X-Team: pricing}",
    "map": "a mapping of key: value",
    "regex": "a regular expression",
    "region": "a Social Fetch region code",
    "cron": 'a 5-field crontab expression (minute hour day month weekday), e.g. "*/15 * * * *"',
    "hhmm_range": 'a time range "HH:MM-HH:MM", e.g. "23:00-07:00"',
    "timezone": 'an IANA time zone name, e.g. "Europe/Berlin"',
}

Entries = dict[str, tuple[Node, Node]]  # key text → (key node, value node)


class BadValue(Exception):
    """A value of the wrong shape; ``Values.value`` turns it into the standard message."""

    def __init__(self, reason: str = "", node: Node | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node = node


class AlreadyReported(Exception):
    """The converter already recorded a more specific issue."""


def _scalar(r: Values, node: Node, where: str) -> tuple[str, str]:
    """(text, tag), or raise: AlreadyReported if substitution failed, BadValue if not a scalar."""
    scalar = r.scalar(node, where)
    if scalar is None:
        raise AlreadyReported if isinstance(node, ScalarNode) else BadValue
    return scalar


def _text(r: Values, node: Node, where: str) -> str:
    text, tag = _scalar(r, node, where)
    if tag == NULL:
        raise BadValue
    return text


def _number(r: Values, node: Node, where: str, tags: tuple[str, ...]) -> Any:
    text, tag = _scalar(r, node, where)
    tag = r.resolved(text, tag)
    if tag not in tags:
        raise BadValue
    return r.construct(text, tag)


def _int(r: Values, node: Node, where: str) -> int:
    return _number(r, node, where, (INT,))


def _positive_int(r: Values, node: Node, where: str) -> int:
    value = _int(r, node, where)
    if value < 1:
        raise BadValue
    return value


def _percent(r: Values, node: Node, where: str) -> int:
    value = _int(r, node, where)
    if not 0 <= value <= 100:
        raise BadValue
    return value


def _positive_number(r: Values, node: Node, where: str) -> float:
    value = float(_number(r, node, where, (INT, FLOAT)))
    if not math.isfinite(value) or value <= 0:
        raise BadValue
    return value


def _decimal(r: Values, node: Node, where: str) -> Decimal:
    text, tag = _scalar(r, node, where)
    tag = r.resolved(text, tag)
    if tag not in (INT, FLOAT, STR):
        raise BadValue
    try:
        value = Decimal(text.strip())  # as written: "30.00" stays 30.00, never via float
    except InvalidOperation:
        if tag not in (INT, FLOAT):
            raise BadValue from None
        value = Decimal(str(r.construct(text, tag)))  # YAML-only spellings: 0x10, .inf
    if not value.is_finite():
        raise BadValue("must be a finite amount")
    if value < 0:
        raise BadValue("must not be negative")
    return value


def _duration(r: Values, node: Node, where: str) -> timedelta:
    try:
        return parse_duration(_text(r, node, where))
    except DurationError as exc:
        raise BadValue(str(exc)) from None


def _bool(r: Values, node: Node, where: str) -> bool:
    return _number(r, node, where, (BOOL,))


def _str(r: Values, node: Node, where: str) -> str:
    return _text(r, node, where)  # a number stays as written: category_id: 601583


def _handle(r: Values, node: Node, where: str) -> str:
    return strip_handle(_text(r, node, where))


def _items(r: Values, node: Node, where: str) -> list[Node]:
    if not isinstance(node, SequenceNode):
        hint = "write it in brackets, e.g. [x], even for one item"
        raise BadValue(hint if isinstance(node, ScalarNode) else "")
    return list(node.value)


def _str_list(r: Values, node: Node, where: str) -> tuple[str, ...]:
    out = []
    for item in _items(r, node, where):
        if r.is_null(item, where) or not isinstance(item, ScalarNode):
            raise BadValue("each item must be non-empty text", item)
        out.append(_text(r, item, where))
    return tuple(out)


def _int_list(r: Values, node: Node, where: str) -> tuple[int, ...]:
    out = []
    for item in _items(r, node, where):
        try:
            out.append(_int(r, item, where))
        except BadValue:
            raise BadValue("each item must be a whole number", item) from None
    return tuple(out)


def _map(r: Values, node: Node, where: str) -> Entries:
    if not isinstance(node, MappingNode):
        raise BadValue
    return r.mapping(node, where)


def _str_map(r: Values, node: Node, where: str) -> dict[str, str]:
    out = {}
    for key, (_, value) in _map(r, node, where).items():
        if not isinstance(value, ScalarNode) or r.is_null(value, where):
            raise BadValue(f"the value of '{key}' must be text", value)
        out[key] = _text(r, value, f"'{key}' of {where}")
    return out


def _regex(r: Values, node: Node, where: str) -> str:
    text = _text(r, node, where)
    try:
        re.compile(text)
    except re.error as e:
        raise BadValue(f"invalid regular expression: {e}") from None
    return text


def _region(r: Values, node: Node, where: str) -> str:
    text = _text(r, node, where).strip()
    if text in r.regions:
        return text
    close = [c for c in r.regions if c == text.upper()] or difflib.get_close_matches(
        text.upper(), r.regions, n=1
    )
    raise BadValue(f"unknown region; did you mean '{close[0]}'?" if close else "unknown region")


def _timezone(r: Values, node: Node, where: str) -> str:
    text = _text(r, node, where).strip()
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(text, sorted(zoneinfo.available_timezones()), n=1)
        raise BadValue(f"unknown; did you mean '{close[0]}'?" if close else "unknown") from None
    return text


def _hhmm_range(r: Values, node: Node, where: str) -> tuple[str, str]:
    m = _HHMM.match(_text(r, node, where).strip())
    if not m:
        raise BadValue("hours 00-23, minutes 00-59")
    start, end = f"{m[1]}:{m[2]}", f"{m[3]}:{m[4]}"
    if start == end:
        raise BadValue("start and end are equal: an empty window")
    return start, end


def crontab_weekdays(field: str) -> str | None:
    """A crontab day-of-week field (0 or 7 = Sunday) spelled with day names.

    APScheduler 3's ``from_crontab`` counts weekdays from Monday = 0, so ``1-5`` would
    silently mean Tuesday to Saturday; names mean the same to both. None if invalid.
    """
    if not any(c.isdigit() for c in field):
        return field

    def day(token: str) -> int:
        if token.isdigit() and int(token) <= 7:
            return int(token)
        return _WEEKDAYS.index(token)  # ValueError when unknown

    days: set[int] = set()
    try:
        for part in field.lower().split(","):
            span, _, step = part.partition("/")
            every = int(step) if step else 1
            if span == "*":
                low, high = 0, 6
            else:
                a, dash, b = span.partition("-")
                low = day(a)
                high = day(b) if dash else (7 if step else low)
            if every < 1 or low > high:
                return None
            days.update(d % 7 for d in range(low, high + 1, every))
    except ValueError:
        return None
    if len(days) == 7:
        return "*"
    return ",".join(_WEEKDAYS[d] for d in sorted(days, key=lambda d: (d - 1) % 7))


def _cron(r: Values, node: Node, where: str) -> str:
    parts = _text(r, node, where).split()
    if len(parts) != 5:
        raise BadValue(f"{len(parts)} field{'s' if len(parts) != 1 else ''}")
    weekdays = crontab_weekdays(parts[4])
    if weekdays is None:
        raise BadValue(f"invalid weekday field '{parts[4]}'; use 0-7 or sun..sat")
    expr = " ".join([*parts[:4], weekdays])
    try:
        from apscheduler.triggers.cron import CronTrigger  # only for configs with a cron

        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as e:
        raise BadValue(str(e)) from None
    return expr


CONVERTERS: dict[str, Callable[[Values, Node, str], Any]] = {
    "str": _str,
    "handle": _handle,
    "int": _int,
    "positive_int": _positive_int,
    "positive_number": _positive_number,
    "percent": _percent,
    "decimal": _decimal,
    "duration": _duration,
    "bool": _bool,
    "str_list": _str_list,
    "int_list": _int_list,
    "str_map": _str_map,
    "map": _map,
    "regex": _regex,
    "region": _region,
    "cron": _cron,
    "hhmm_range": _hhmm_range,
    "timezone": _timezone,
}
PARAM_TYPES = frozenset(CONVERTERS)
