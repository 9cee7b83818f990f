"""Layers only look down: every ``watcher`` import, read from the source with ``ast``.

A module may import modules of its own layer or of the layers below it, never above, and
never another module's private (``_name``) names. The table is docs/ARCHITECTURE.md's module
table as data: a new module that is not in it fails here until it is placed. Imports under
``if TYPE_CHECKING:`` and inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "watcher"

# lowest first; "x" is module watcher.x (and its submodules when it is a package); the
# longest listed prefix decides, so a package's modules may sit in different layers
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("util", "logs", "errors", "models", "status", "formatting", "identity", "param")),
    # what each upstream is: paths, auth, paging, payloads, prices, credits (pure)
    (
        "providers",
        (
            "sources",
            "sources.specs",
            "sources.socialfetch",
            "sources.keyapi",
            "sources.normalise",
            "sources.responses",
        ),
    ),
    ("definitions", ("kinds",)),
    ("schema", ("configschema",)),  # the typed config the core reads (plain dataclasses)
    ("core", ("diff", "health", "rules", "render", "delivery", "triggers", "historyview")),
    ("channels", ("channels",)),  # a channel type's definition and its sender
    ("config", ("config", "configload", "configvalues", "configtypes", "configcheck")),
    ("edges", ("sources.client", "sources.transport", "chart", "metrics")),
    ("store", ("store",)),
    ("flow", ("routing", "pipeline", "dispatch", "report")),
    ("process", ("runtime",)),
    ("bot", ("bot",)),
    ("daemon", ("daemon", "daemon.leader")),  # daemon.leader: which instance runs the bot
    ("entry", ("simulator", "cli", "progress", "__main__")),
]


def layer_of(module: str) -> int:
    """The layer of ``watcher.a.b``: its longest listed prefix."""
    parts = module.split(".")[1:]
    if not parts:  # watcher/__init__.py: the version, nothing else
        return 0
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        for i, (_, names) in enumerate(LAYERS):
            if name in names:
                return i
    raise AssertionError(f"{module} is in no layer: place it in LAYERS and ARCHITECTURE.md")


def sources() -> dict[str, str]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:  # Alembic revisions, run by Alembic alone
            continue
        out[".".join(path.relative_to(ROOT.parent).with_suffix("").parts)] = path.read_text()
    return out


def imports(modules: Mapping[str, str]) -> Iterator[tuple[str, int, str, tuple[str, ...]]]:
    """(importer, line, imported module, names taken from it) for every ``watcher`` import.

    Keys of ``modules`` are dotted names, a package's ``__init__`` as ``pkg.__init__``.
    """
    known = {m.removesuffix(".__init__") for m in modules}
    for key, text in modules.items():
        module = key.removesuffix(".__init__")
        package = module if key.endswith(".__init__") else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "watcher":
                        yield module, node.lineno, a.name, ()
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "watcher":
                    continue
                names = tuple(a.name for a in node.names)
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
                if node.module is None or (subs and len(subs) == len(names)):
                    for n in names:  # ``from . import a, b``: submodules (or the package's)
                        yield module, node.lineno, f"{target}.{n}", ()
                else:
                    yield module, node.lineno, target, names


def violations(modules: Mapping[str, str]) -> list[str]:
    wrong = []
    for module, line, target, names in imports(modules):
        if target in ("watcher", module):
            continue
        if layer_of(target) > layer_of(module):
            wrong.append(
                f"{module}:{line} ({LAYERS[layer_of(module)][0]}) imports {target} "
                f"({LAYERS[layer_of(target)][0]})"
            )
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private:
            wrong.append(f"{module}:{line} takes private {', '.join(private)} of {target}")
    return wrong


def test_every_module_is_placed_in_a_layer():
    for key in sources():
        layer_of(key.removesuffix(".__init__"))


def test_imports_only_look_down():
    wrong = violations(sources())
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("from watcher.cli import main", "imports watcher.cli"),
        ("def f():\n    from .daemon import Daemon", "imports watcher.daemon"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import watcher.store", "store"),
        ("from .util import _DURATION", "takes private _DURATION"),
        ("from . import diff, pipeline", "imports watcher.pipeline"),
    ],
)
def test_the_checker_sees_an_upward_or_private_import(text, found):
    wrong = violations({"watcher.render": text})
    assert any(found in w for w in wrong), wrong


def test_the_checker_allows_looking_down():
    text = "from . import models\nfrom .util import utcnow\nfrom watcher.diff import diff"
    assert violations({"watcher.render": text}) == []


def test_architecture_md_shows_the_same_layers():
    doc = (ROOT.parent / "docs" / "ARCHITECTURE.md").read_text()
    rows = {
        line.split("|")[1].strip(): line.split("|")[2]
        for line in doc.splitlines()
        if line.startswith("| ") and line.count("|") >= 4
    }
    for layer, names in LAYERS:
        assert layer in rows, f"docs/ARCHITECTURE.md has no row for layer {layer}"
        for name in names:
            spelled = name.replace(".", "/")
            assert f"`{spelled}`" in rows[layer] or f"`{spelled}/" in rows[layer], (
                f"docs/ARCHITECTURE.md's {layer} row does not list {spelled}"
            )
