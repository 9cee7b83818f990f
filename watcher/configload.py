"""The YAML layer of the config loader: positions, ``${VAR}`` substitution, typed values.

``watcher.config`` builds the sections from these pieces. Nothing here raises on bad
input: every problem is recorded as a ``ConfigIssue`` on the ``Reader`` and the value
becomes ``None``, so one pass over the file reports every issue at its line and column.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.errors import ConfigIssue
from watcher.kinds import Param
from watcher.util import DurationError, parse_duration, strip_handle

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_T + n for n in ("str", "int", "float", "bool", "null"))
MERGE = _T + "merge"
# Plain YAML values only; a custom tag (!foo, !!python/...) is an issue.
KNOWN_TAGS = frozenset(_T + n for n in ("str", "int", "float", "bool", "null", "timestamp"))
KNOWN_TAGS |= {_T + "seq", _T + "map", MERGE}

ID_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
ID_ALLOWED = "letters, digits, '_', '.' and '-'"

_VAR = re.compile(r"\$\{(?P<body>(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")
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


def options(word: str, choices: Iterable[str], hint: str = "", label: str = "allowed") -> str:
    """The tail of a message about an unknown name: "; did you mean 'x'? allowed: a, b"."""
    choices = list(choices)
    if not hint:
        close = difflib.get_close_matches(word, choices, n=1)
        hint = f"did you mean '{close[0]}'?" if close else ""
    return f"; {hint}{' ' if hint.strip() else ''}{label}: {', '.join(choices) or 'none'}"


_NOT_COMPOSED = object()


def _fast_compose(text: str) -> Any:
    """The root node by libyaml's composer, where PyYAML has it: the same nodes and marks
    as the pure-Python one in a fraction of its time and peak memory (a config of 10,000
    watches). Anything it objects to, including unprintable characters, is left to the
    pure-Python loader (``_NOT_COMPOSED``), whose messages the errors are written for."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is None or yaml.reader.Reader.NON_PRINTABLE.search(text):
        return _NOT_COMPOSED
    loader = fast(text)
    try:
        return loader.get_single_node()
    except (yaml.YAMLError, RecursionError):
        return _NOT_COMPOSED
    finally:
        loader.dispose()


class Reader:
    """Parses one config file and turns its nodes into typed values, collecting issues."""

    def __init__(self, file: str, env: Mapping[str, str], regions: tuple[str, ...]) -> None:
        self.file = file
        self.env = env
        self.regions = regions
        self.issues: list[ConfigIssue] = []
        self._text = ""
        # values taken from the environment, by variable name: they may be secrets, and no
        # message shows them (``issue`` writes ${NAME} instead)
        self._from_env: dict[str, str] = {}
        self._loader = yaml.SafeLoader("")  # for the resolver and scalar constructors
        self._scalars: dict[int, tuple[str, str] | None] = {}

    # -- issues ---------------------------------------------------------------------------

    def issue(self, where: Node | int | None, message: str) -> None:
        """Record a problem at a node, at a character index of the text, or at 1:1."""
        if isinstance(where, Node):
            where = where.start_mark.index
        line, column = self._position(where or 0)
        self.issues.append(ConfigIssue(self.file, line, column, message))

    def _redact(self, message: str) -> str:
        """Every value that came from the environment written as ${NAME}, longest first
        (values of one or two characters would only garble the message)."""
        values = sorted(
            ((v, n) for n, v in self._from_env.items() if len(v) >= 3), key=lambda p: -len(p[0])
        )
        for value, name in values:
            message = message.replace(value, f"${{{name}}}")
        return message

    def _position(self, index: int) -> tuple[int, int]:
        index = min(index, len(self._text))
        start = self._text.rfind("\n", 0, index) + 1
        return self._text.count("\n", 0, index) + 1, index - start + 1

    def sorted_issues(self) -> list[ConfigIssue]:
        """Every issue once (aliases can repeat one), by line, then column."""
        unique = dict.fromkeys(
            dataclasses.replace(i, message=self._redact(i.message)) for i in self.issues
        )
        return sorted(unique, key=lambda i: (i.line, i.column))

    # -- parsing --------------------------------------------------------------------------

    def load(self) -> Node | None:
        """Read and parse the file; None (with an issue) when there is nothing to build on."""
        try:
            with open(self.file, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self.issue(None, "config file not found; pass an existing YAML file")
            return None
        except OSError as e:
            self.issue(None, f"cannot read the config file: {e.strerror or e}")
            return None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            self._text = data[: e.start].decode("utf-8", "replace")
            self.issue(len(self._text), "the config file is not UTF-8 text; save it as UTF-8")
            return None
        return self.parse(text)

    def parse(self, text: str) -> Node | None:
        """Compose YAML keeping node positions; check tags, duplicate keys and merges."""
        self._text = text
        loader = None
        try:
            root = _fast_compose(text)
            if root is _NOT_COMPOSED:
                loader = yaml.SafeLoader(text)  # checks for unprintable characters here
                root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            problem = e.problem or e.context or "invalid YAML"
            index = mark.index if mark else 0
            line = text[text.rfind("\n", 0, index) + 1 :].partition("\n")[0]
            if "\\t" in problem:
                hint = "indent with spaces, not tabs"
            elif "${" in line:
                hint = "quote values that use ${VAR} inside { } or [ ]"
            else:
                hint = "check the indentation and quoting"
            self.issue(index, f"invalid YAML: {problem}; {hint}")
            return None
        except yaml.reader.ReaderError as e:
            self.issue(e.position, f"invalid character in the config file: {e.reason}")
            return None
        except yaml.YAMLError as e:
            self.issue(None, f"invalid YAML: {e}")
            return None
        except RecursionError:
            self.issue(None, "invalid YAML: nested too deeply; use at most a few levels")
            return None
        finally:
            if loader is not None:
                loader.dispose()
        if root is None:
            self.issue(None, "the config file is empty; it needs at least a 'watches' list")
            return None
        nodes = self._walk(root)
        for node in nodes:
            self._check_node(node)
        for node in nodes:
            if isinstance(node, MappingNode):
                try:
                    self._loader.flatten_mapping(node)  # apply '<<: *anchor' merge keys
                except yaml.constructor.ConstructorError as e:
                    mark = e.problem_mark
                    self.issue(mark.index if mark else node, f"invalid merge key: {e.problem}")
        return root

    @staticmethod
    def _walk(root: Node) -> list[Node]:
        """Every node once, iteratively (aliases may share or even nest nodes)."""
        seen: set[int] = set()
        out: list[Node] = []
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            out.append(node)
            if isinstance(node, MappingNode):
                stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
            elif isinstance(node, SequenceNode):
                stack.extend(reversed(node.value))
        return out

    def _check_node(self, node: Node) -> None:
        if node.tag not in KNOWN_TAGS:
            self.issue(
                node,
                f"unsupported YAML tag '{node.tag}'; use plain values "
                "(text, numbers, true/false, lists, mappings)",
            )
        if not isinstance(node, MappingNode):
            return
        first: dict[str, Node] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == MERGE:
                continue
            if key.value in first:
                line = first[key.value].start_mark.line + 1
                self.issue(
                    key,
                    f"duplicate key '{key.value}' (first at line {line}); "
                    "each key may appear once in a mapping",
                )
            else:
                first[key.value] = key

    # -- structure ------------------------------------------------------------------------

    def mapping(self, node: Node, what: str, expected: str = "a mapping of key: value") -> Entries:
        """The entries of a mapping node (last one wins after merges); {} with an issue if not."""
        if not isinstance(node, MappingNode):
            if node.tag in KNOWN_TAGS:
                self.issue(node, f"{what}: expected {expected}, got {self.describe(node)}")
            return {}
        out: Entries = {}
        for key, value in node.value:
            if key.tag == MERGE:
                continue  # a merge that failed to flatten; already reported
            if not isinstance(key, ScalarNode):
                self.issue(key, f"{what}: keys must be plain text, got {self.describe(key)}")
                continue
            out[key.value] = (key, value)
        return out

    def sequence(self, node: Node, what: str, expected: str) -> list[Node] | None:
        """The items of a list node; None with an issue if it is not a list."""
        if isinstance(node, SequenceNode):
            return list(node.value)
        if node.tag in KNOWN_TAGS:
            self.issue(node, f"{what}: expected {expected}, got {self.describe(node)}")
        return None

    def check_keys(
        self,
        entries: Entries,
        params: Mapping[str, Param],
        what: str,
        hint: Callable[[str], str] | None = None,
    ) -> None:
        """Report keys the schema does not know, suggesting the closest one."""
        for key, (key_node, _) in entries.items():
            if key in params:
                continue
            extra = hint(key) if hint else ""
            self.issue(key_node, f"unknown key '{key}' in {what}{options(key, params, extra)}")

    def is_null(self, node: Node, where: str) -> bool:
        """A value that means 'not set': ``~``, ``null``, nothing, or an empty string."""
        if not isinstance(node, ScalarNode):
            return False
        scalar = self.scalar(node, where)
        return scalar is not None and (scalar[1] == NULL or scalar[0].strip() == "")

    def fields(
        self,
        entries: Entries,
        params: Mapping[str, Param],
        what: str,
        owner: Node,
        skip: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Convert every declared key present; report missing required ones.

        Returns only the keys that are set and valid, so a dataclass default applies to
        the others. Unknown keys are the caller's business (see ``check_keys``).
        """
        skip = set(skip)
        values: dict[str, Any] = {}
        for key, param in params.items():
            if key in skip:
                continue
            if key not in entries:
                if param.required:
                    doc = f" ({param.doc})" if param.doc else ""
                    self.issue(
                        owner,
                        f"{what} is missing required key '{key}'{doc}; "
                        f"expected {self.expected(param.type)}",
                    )
                continue
            value = self.value(entries[key][1], param, f"'{key}' in {what}")
            if value is not None:
                values[key] = value
        return values

    # -- scalars --------------------------------------------------------------------------

    def scalar(self, node: Node, where: str) -> tuple[str, str] | None:
        """(text, tag) of a scalar after ``${VAR}`` substitution; None if not usable."""
        if not isinstance(node, ScalarNode) or node.tag not in KNOWN_TAGS:
            return None
        if id(node) not in self._scalars:
            text: str | None = node.value
            if node.tag == STR and "${" in node.value:
                text = self._substitute(node, where)
            self._scalars[id(node)] = None if text is None else (text, node.tag)
        return self._scalars[id(node)]

    def _substitute(self, node: ScalarNode, where: str) -> str | None:
        raw: str = node.value
        out: list[str] = []
        pos, ok = 0, True
        for m in _VAR.finditer(raw):
            out.append(raw[pos : m.start()])
            pos = m.end()
            name, default = m["name"], m["default"]
            at = self._find(node, "${" + (name or ""))
            if m["body"] is None or (default is not None and "${" in default):
                self.issue(
                    at,
                    f"malformed variable reference in {where}; write ${{NAME}} or "
                    "${NAME:-default} (NAME: letters, digits and '_'; no nesting)",
                )
                ok = False
                continue
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self.issue(
                        at,
                        f"environment variable '{name}' is not set ({where}); "
                        f"set it, or write ${{{name}:-default}} to give a default",
                    )
                    ok = False
                    continue
                value = default
            else:
                self._from_env[name] = value
            out.append(value)
        out.append(raw[pos:])
        return "".join(out) if ok else None

    def _find(self, node: Node, needle: str) -> int:
        """Index of ``needle`` in the node's source text (or the node's start)."""
        start, end = node.start_mark.index, node.end_mark.index
        found = self._text.find(needle, start, max(end, start + len(needle)))
        return found if found >= 0 else start

    def describe(self, node: Node) -> str:
        """How a value reads in a message: the text as written, or what kind of node."""
        if isinstance(node, SequenceNode):
            return "a list"
        if isinstance(node, MappingNode):
            return "a mapping"
        text = node.value  # as written: a substituted value may be a secret
        if node.tag == NULL or text == "":
            return "no value"
        shown = text if len(text) <= 60 else text[:57] + "..."
        return f"'{shown}' once substituted" if "${" in text else f"'{shown}'"

    def resolved(self, text: str, tag: str) -> str:
        """The tag a quoted or substituted string would have had if written plainly."""
        if tag != STR:
            return tag
        return self._loader.resolve(ScalarNode, text.strip(), (True, False))

    def construct(self, text: str, tag: str) -> Any:
        """An int, float or bool from its YAML spelling (0x10, 1_000, yes, .inf)."""
        node = ScalarNode(tag, text.strip())
        return {
            INT: self._loader.construct_yaml_int,
            FLOAT: self._loader.construct_yaml_float,
            BOOL: self._loader.construct_yaml_bool,
        }[tag](node)

    def expected(self, type_: str) -> str:
        """What a value of a Param type must look like, for messages."""
        if type_ == "region":
            return f"{EXPECTED[type_]} ({', '.join(self.regions)})"
        return EXPECTED.get(type_, type_)

    def value(self, node: Node, param: Param, where: str) -> Any:
        """Convert one value to its Param type; None if unset (null) or invalid."""
        if isinstance(node, ScalarNode):
            if self.scalar(node, where) is None:
                return None  # unknown tag or missing variable: already reported
            if self.is_null(node, where):
                if param.required:
                    self.issue(node, f"{where} has no value; expected {self.expected(param.type)}")
                return None
        convert = _CONVERTERS.get(param.type)
        if convert is None:
            self.issue(node, f"{where}: unsupported parameter type '{param.type}' in kinds.py")
            return None
        try:
            return convert(self, node, where)
        except _Bad as bad:
            if node.tag in KNOWN_TAGS:
                reason = f" ({bad.reason})" if bad.reason else ""
                self.issue(
                    bad.node or node,
                    f"{where}: expected {self.expected(param.type)}, "
                    f"got {self.describe(bad.node or node)}{reason}",
                )
            return None
        except _Reported:
            return None


class _Bad(Exception):
    """A value of the wrong shape; ``Reader.value`` turns it into the standard message."""

    def __init__(self, reason: str = "", node: Node | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node = node


class _Reported(Exception):
    """The converter already recorded a more specific issue."""


def _scalar(r: Reader, node: Node, where: str) -> tuple[str, str]:
    """(text, tag), or raise: _Reported if substitution failed, _Bad if not a scalar."""
    scalar = r.scalar(node, where)
    if scalar is None:
        raise _Reported if isinstance(node, ScalarNode) else _Bad
    return scalar


def _text(r: Reader, node: Node, where: str) -> str:
    text, tag = _scalar(r, node, where)
    if tag == NULL:
        raise _Bad
    return text


def _number(r: Reader, node: Node, where: str, tags: tuple[str, ...]) -> Any:
    text, tag = _scalar(r, node, where)
    tag = r.resolved(text, tag)
    if tag not in tags:
        raise _Bad
    return r.construct(text, tag)


def _int(r: Reader, node: Node, where: str) -> int:
    return _number(r, node, where, (INT,))


def _positive_int(r: Reader, node: Node, where: str) -> int:
    value = _int(r, node, where)
    if value < 1:
        raise _Bad
    return value


def _percent(r: Reader, node: Node, where: str) -> int:
    value = _int(r, node, where)
    if not 0 <= value <= 100:
        raise _Bad
    return value


def _positive_number(r: Reader, node: Node, where: str) -> float:
    value = float(_number(r, node, where, (INT, FLOAT)))
    if not math.isfinite(value) or value <= 0:
        raise _Bad
    return value


def _decimal(r: Reader, node: Node, where: str) -> Decimal:
    text, tag = _scalar(r, node, where)
    tag = r.resolved(text, tag)
    if tag not in (INT, FLOAT, STR):
        raise _Bad
    try:
        value = Decimal(text.strip())  # as written: "30.00" stays 30.00, never via float
    except InvalidOperation:
        if tag not in (INT, FLOAT):
            raise _Bad from None
        value = Decimal(str(r.construct(text, tag)))  # YAML-only spellings: 0x10, .inf
    if not value.is_finite():
        raise _Bad("must be a finite amount")
    if value < 0:
        raise _Bad("must not be negative")
    return value


def _duration(r: Reader, node: Node, where: str) -> timedelta:
    try:
        return parse_duration(_text(r, node, where))
    except DurationError as exc:
        raise _Bad(str(exc)) from None


def _bool(r: Reader, node: Node, where: str) -> bool:
    return _number(r, node, where, (BOOL,))


def _str(r: Reader, node: Node, where: str) -> str:
    return _text(r, node, where)  # a number stays as written: category_id: 601583


def _handle(r: Reader, node: Node, where: str) -> str:
    return strip_handle(_text(r, node, where))


def _items(r: Reader, node: Node, where: str) -> list[Node]:
    if not isinstance(node, SequenceNode):
        hint = "write it in brackets, e.g. [x], even for one item"
        raise _Bad(hint if isinstance(node, ScalarNode) else "")
    return list(node.value)


def _str_list(r: Reader, node: Node, where: str) -> tuple[str, ...]:
    out = []
    for item in _items(r, node, where):
        if r.is_null(item, where) or not isinstance(item, ScalarNode):
            raise _Bad("each item must be non-empty text", item)
        out.append(_text(r, item, where))
    return tuple(out)


def _int_list(r: Reader, node: Node, where: str) -> tuple[int, ...]:
    out = []
    for item in _items(r, node, where):
        try:
            out.append(_int(r, item, where))
        except _Bad:
            raise _Bad("each item must be a whole number", item) from None
    return tuple(out)


def _map(r: Reader, node: Node, where: str) -> Entries:
    if not isinstance(node, MappingNode):
        raise _Bad
    return r.mapping(node, where)


def _str_map(r: Reader, node: Node, where: str) -> dict[str, str]:
    out = {}
    for key, (_, value) in _map(r, node, where).items():
        if not isinstance(value, ScalarNode) or r.is_null(value, where):
            raise _Bad(f"the value of '{key}' must be text", value)
        out[key] = _text(r, value, f"'{key}' of {where}")
    return out


def _regex(r: Reader, node: Node, where: str) -> str:
    text = _text(r, node, where)
    try:
        re.compile(text)
    except re.error as e:
        raise _Bad(f"invalid regular expression: {e}") from None
    return text


def _region(r: Reader, node: Node, where: str) -> str:
    text = _text(r, node, where).strip()
    if text in r.regions:
        return text
    close = [c for c in r.regions if c == text.upper()] or difflib.get_close_matches(
        text.upper(), r.regions, n=1
    )
    raise _Bad(f"unknown region; did you mean '{close[0]}'?" if close else "unknown region")


def _timezone(r: Reader, node: Node, where: str) -> str:
    text = _text(r, node, where).strip()
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(text, sorted(zoneinfo.available_timezones()), n=1)
        raise _Bad(f"unknown; did you mean '{close[0]}'?" if close else "unknown") from None
    return text


def _hhmm_range(r: Reader, node: Node, where: str) -> tuple[str, str]:
    m = _HHMM.match(_text(r, node, where).strip())
    if not m:
        raise _Bad("hours 00-23, minutes 00-59")
    start, end = f"{m[1]}:{m[2]}", f"{m[3]}:{m[4]}"
    if start == end:
        raise _Bad("start and end are equal: an empty window")
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


def _cron(r: Reader, node: Node, where: str) -> str:
    parts = _text(r, node, where).split()
    if len(parts) != 5:
        raise _Bad(f"{len(parts)} field{'s' if len(parts) != 1 else ''}")
    weekdays = crontab_weekdays(parts[4])
    if weekdays is None:
        raise _Bad(f"invalid weekday field '{parts[4]}'; use 0-7 or sun..sat")
    expr = " ".join([*parts[:4], weekdays])
    try:
        from apscheduler.triggers.cron import CronTrigger  # only for configs with a cron

        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as e:
        raise _Bad(str(e)) from None
    return expr


_CONVERTERS: dict[str, Callable[[Reader, Node, str], Any]] = {
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
PARAM_TYPES = frozenset(_CONVERTERS)
