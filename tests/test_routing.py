"""Routing (spec sections 6 and 7): which (channel, target) pairs receive an alert, as each
channel type's definition decides."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.config import load_config
from watcher.kinds import CHANNEL_TYPES
from watcher.models import Alert, Product
from watcher.routing import route

CONFIG = """\
providers: {socialfetch: {api_key: k}}
channels:
  deals: {type: telegram, token: "1:x", chat_ids: [11, 12], admins: [7]}
  quiet: {type: telegram, token: "2:y"}
  hook: {type: webhook, url: "https://h.example/x"}
  out: {type: console}
watches:
  - {id: w, type: store, url: "https://shop.example/s", every: 15m}
rules:
  - {id: r, when: new_item, notify: [hook, deals]}
  - {id: q, when: new_item, notify: [quiet, out]}
"""
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "watcher.yaml"
    path.write_text(CONFIG)
    return load_config(path, env={})


def alert(rule_id: str | None) -> Alert:
    product = Product(id="p") if rule_id else None
    kind = "new_item" if rule_id else "watch_failing"
    return Alert("a1", kind, "w", NOW, rule_id=rule_id, product=product)


def subscribed(channel: str, rule_id: str | None, watch_id: str | None) -> list[int]:
    return {"deals": [12, 13], "quiet": [21]}.get(channel, []) if rule_id and watch_id else []


def test_a_rule_alert_goes_to_its_channels_chat_ids_and_subscribers(config):
    assert route(config, alert("r"), subscribed) == [
        ("hook", ""),
        ("deals", "11"),
        ("deals", "12"),  # listed and subscribed: once
        ("deals", "13"),
    ]
    assert route(config, alert("q"), subscribed) == [("quiet", "21"), ("out", "")]


def test_without_a_subscriber_lookup_only_listed_chats(config):
    assert route(config, alert("r")) == [("hook", ""), ("deals", "11"), ("deals", "12")]
    assert route(config, alert("q")) == [("out", "")]


def test_an_alert_whose_rule_a_reload_removed_goes_to_its_channels_that_remain(config):
    from dataclasses import replace

    gone = replace(alert("removed"), channels=("hook", "left", "out"))  # "left": removed too
    assert route(config, gone, subscribed) == [("hook", ""), ("out", "")]


def test_a_notice_goes_to_every_channel_telegram_to_its_admins(config):
    assert route(config, alert(None), subscribed) == [("deals", "7"), ("hook", ""), ("out", "")]


def test_every_channel_type_is_defined_in_full():
    """A type's definition carries its doc, its params, its factory and its routing."""
    assert set(CHANNEL_TYPES) == {"telegram", "webhook", "apprise", "console"}
    for ctype in CHANNEL_TYPES.values():
        assert ctype.doc and ctype.params and ctype.factory is not None, ctype.name
        assert all(p.doc or p.required for p in ctype.params.values()), ctype.name
    assert [t.name for t in CHANNEL_TYPES.values() if t.has_bot] == ["telegram"]


def test_loading_the_config_imports_no_channel_client(tmp_path):
    """`watcher check` stays fast: python-telegram-bot and aiohttp load when a channel is built."""
    import subprocess
    import sys

    path = tmp_path / "watcher.yaml"
    path.write_text(CONFIG)
    code = (
        "import sys; from watcher.config import load_config; "
        f"load_config({str(path)!r}, env={{}}); "
        "print(sorted(m for m in ('telegram', 'aiohttp', 'httpx', 'apprise') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
