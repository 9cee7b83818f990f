"""Meta-tests over the registries: every rule kind and watch type is documented, tested and
shown in rules.example.yaml. A new kind that skips one of these fails here, by name."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.config import load_config
from watcher.errors import ConfigError
from watcher.kinds import WATCH_TYPES
from watcher.models import Alert, AlertDraft, Product
from watcher.render import render_html, render_text, transition_values
from watcher.rules import RULE_KINDS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests/data/core"
EXAMPLE = yaml.safe_load((ROOT / "rules.example.yaml").read_text(encoding="utf-8"))
RULE_ROWS: list[dict[str, Any]] = yaml.safe_load((DATA / "rules.yaml").read_text())
SCENARIOS: list[dict[str, Any]] = yaml.safe_load((DATA / "scenarios.yaml").read_text())


def _one_line(doc: str) -> bool:
    return bool(doc.strip()) and "\n" not in doc.strip()


# --- rule kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RULE_KINDS))
def test_rule_kind_is_documented(name: str) -> None:
    kind = RULE_KINDS[name]
    assert _one_line(kind.doc), f"{name}: needs a one-line doc"
    assert kind.headline, f"{name}: needs a headline"
    for key, param in kind.params.items():
        assert _one_line(param.doc), f"{name}.{key}: needs a one-line doc"


@pytest.mark.parametrize("name", sorted(RULE_KINDS))
def test_rule_kind_has_table_rows_that_fire_and_that_do_not(name: str) -> None:
    rows = [r for r in RULE_ROWS if r["rule"]["when"] == name]
    assert any(r["fires"] is not False for r in rows), f"{name}: no rules.yaml row that fires"
    assert any(r["fires"] is False for r in rows), f"{name}: no rules.yaml row that stays silent"
    used = {k for r in rows for k in r["rule"]}
    missing = set(RULE_KINDS[name].params) - used
    assert not missing, f"{name}: rules.yaml never sets {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(RULE_KINDS))
def test_rule_kind_has_an_example(name: str) -> None:
    examples = [r for r in EXAMPLE["rules"] if r["when"] == name]
    assert examples, f"{name}: no example in rules.example.yaml"
    missing = set(RULE_KINDS[name].params) - {k for r in examples for k in r}
    assert not missing, f"{name}: rules.example.yaml never sets {sorted(missing)}"


OLD = Product("p", title="T", currency="USD", price=Decimal("20"), discount_percent=10,
              sold=100, rank=9)  # fmt: skip
NEW = Product("p", title="T", currency="USD", price=Decimal("15"), discount_percent=40,
              sold=250, rank=3, url="https://x.test/p")  # fmt: skip


@pytest.mark.parametrize("name", sorted(RULE_KINDS))
def test_rule_kind_renders_with_its_headline_and_identifying_values(name: str) -> None:
    alert = Alert("a" * 32, name, "w", datetime(2026, 1, 1, tzinfo=UTC), "r", NEW, OLD)
    headline = RULE_KINDS[name].headline
    assert render_text(alert).startswith(f"{headline}: T\n")
    assert render_html(alert).startswith(f"{headline}: <b>T</b>")
    for previous in (OLD, None):
        values = transition_values(AlertDraft("r", name, "w", NEW, previous))
        json.dumps(values)  # part of the alert id: plain JSON values


# --- watch types ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WATCH_TYPES))
def test_watch_type_is_documented(name: str) -> None:
    wtype = WATCH_TYPES[name]
    assert _one_line(wtype.doc), f"{name}: needs a one-line doc"
    for key, param in wtype.params.items():
        assert _one_line(param.doc), f"{name}.{key}: needs a one-line doc"


@pytest.mark.parametrize("name", sorted(WATCH_TYPES))
def test_watch_type_has_an_example(name: str) -> None:
    examples = [w for w in EXAMPLE["watches"] if w["type"] == name]
    assert examples, f"{name}: no example in rules.example.yaml"
    missing = set(WATCH_TYPES[name].defining) - {k for w in examples for k in w}
    assert not missing, f"{name}: rules.example.yaml never sets {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(WATCH_TYPES))
def test_watch_type_has_rule_table_rows(name: str) -> None:
    """Rules behave per watch type (stock, prices): each type has rows of its own."""
    rows = [r.get("watch", "store") for r in RULE_ROWS + SCENARIOS]
    assert name in rows, f"{name}: no row with watch: {name} in rules.yaml or scenarios.yaml"


# --- the loader derives from the definitions ----------------------------------------------------

_CONFIG = (
    "providers: {socialfetch: {api_key: k}}\n"
    "channels: {out: {type: console}}\n"
    "watches:\n  - {id: w, type: store, url: u, every: 15m}\n"
    "rules:\n  - {id: r, when: %s, notify: [out]}\n"
)


@pytest.mark.parametrize("name", sorted(RULE_KINDS))
def test_loader_applies_the_kinds_required_and_one_of_keys(tmp_path: Path, name: str) -> None:
    kind = RULE_KINDS[name]
    path = tmp_path / "rules.yaml"
    path.write_text(_CONFIG % name)
    required = [k for k, p in kind.params.items() if p.required]
    if not required and not kind.one_of:
        assert load_config(path, env={}).rules["r"].params == kind.settings({})
        return
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    messages = [i.message for i in caught.value.issues]
    for key in required:
        assert any(f"missing required key '{key}'" in m for m in messages), messages
    if kind.one_of:
        assert any(f"needs at least one of: {', '.join(kind.one_of)}" in m for m in messages)
