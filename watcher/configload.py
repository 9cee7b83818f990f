"""The YAML layer of the config loader: reading and composing the file with positions,
tags, duplicate keys and merges checked, and the structure (mappings, lists, keys).

``watcher.config`` builds the sections from these pieces; the typed values are
``configvalues`` (substitution, issues) and ``configtypes`` (one converter per type).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.configtypes import KNOWN_TAGS, MERGE, Entries
from watcher.configvalues import Values
from watcher.kinds import Param

ID_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
ID_ALLOWED = "letters, digits, '_', '.' and '-'"


def options(word: str, choices: Iterable[str], hint: str = "", label: str = "allowed") -> str:
    """The tail of a message about an unknown name: "; did you mean 'x'? allowed: a, b"."""
    choices = list(choices)
    if not hint:
        close = difflib.get_close_matches(word, choices, n=1)
        hint = f"did you mean '{close[0]}'?" if close else ""
    return f"; {hint}{' ' if hint.strip() else ''}{label}: {', '.join(choices) or 'none'}"


NOT_COMPOSED = object()


def fast_compose(text: str) -> Any:
    """The root node by libyaml's composer, where PyYAML has it: the same nodes and marks
    as the pure-Python one in a fraction of its time and peak memory (a config of 10,000
    watches). Anything it objects to, including unprintable characters, is left to the
    pure-Python loader (``NOT_COMPOSED``), whose messages the errors are written for."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is None or yaml.reader.Reader.NON_PRINTABLE.search(text):
        return NOT_COMPOSED
    loader = fast(text)
    try:
        return loader.get_single_node()
    except (yaml.YAMLError, RecursionError):
        return NOT_COMPOSED
    finally:
        loader.dispose()


class Reader(Values):
    """Parses one config file into nodes and reads its structure, collecting issues."""

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
            root = fast_compose(text)
            if root is NOT_COMPOSED:
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
