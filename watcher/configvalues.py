"""Typed values with positions: issues at file:line:column, ``${VAR}`` substitution, and
the conversion of one node to its ``Param`` type (the converters are ``configtypes``).

Nothing here raises on bad input: every problem is recorded as a ``ConfigIssue`` and the
value becomes ``None``, so one pass over the file reports every issue at its line and column.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.configtypes import (
    BOOL,
    CONVERTERS,
    EXPECTED,
    FLOAT,
    INT,
    KNOWN_TAGS,
    MERGE,
    NULL,
    STR,
    AlreadyReported,
    BadValue,
    Entries,
)
from watcher.errors import ConfigIssue
from watcher.kinds import Param

_VAR = re.compile(r"\$\{(?P<body>(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")


class Values:
    """The issues of one config text and the typed values of its nodes."""

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

    def is_null(self, node: Node, where: str) -> bool:
        """A value that means 'not set': ``~``, ``null``, nothing, or an empty string."""
        if not isinstance(node, ScalarNode):
            return False
        scalar = self.scalar(node, where)
        return scalar is not None and (scalar[1] == NULL or scalar[0].strip() == "")

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
        convert = CONVERTERS.get(param.type)
        if convert is None:
            self.issue(node, f"{where}: unsupported parameter type '{param.type}' in kinds.py")
            return None
        try:
            return convert(self, node, where)
        except BadValue as bad:
            if node.tag in KNOWN_TAGS:
                reason = f" ({bad.reason})" if bad.reason else ""
                self.issue(
                    bad.node or node,
                    f"{where}: expected {self.expected(param.type)}, "
                    f"got {self.describe(bad.node or node)}{reason}",
                )
            return None
        except AlreadyReported:
            return None
