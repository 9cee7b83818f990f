"""load_config: every mistake is reported at its file:line:column, all of them at once."""

from __future__ import annotations

import dataclasses
import random
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from watcher.config import (
    ChannelConfig,
    MatchConfig,
    ProviderConfig,
    RuleConfig,
    WatchConfig,
    load_config,
)
from watcher.configtypes import PARAM_TYPES, crontab_weekdays
from watcher.errors import ConfigError, ConfigIssue
from watcher.kinds import (
    CHANNEL_COMMON,
    CHANNEL_TYPES,
    MATCH_PARAMS,
    PROVIDER_PARAMS,
    PROVIDERS,
    RULE_COMMON,
    WATCH_COMMON,
    WATCH_TYPES,
)
from watcher.rules import RULE_KINDS

EXAMPLE = Path(__file__).resolve().parents[1] / "rules.example.yaml"
SECRETS = {
    "SOCIALFETCH_API_KEY": "sf-dummy",
    "KEYAPI_API_KEY": "ka-dummy",
    "TELEGRAM_BOT_TOKEN": "123:dummy",
    "WEBHOOK_SECRET": "wh-dummy",
}

# Building blocks: two lines of providers and channels, two of watches, then rules at 5.
H = (
    "providers: {socialfetch: {api_key: k}, keyapi: {api_key: k}}\n"
    "channels: {deals: {type: console}}\n"
)
W = "watches:\n  - {id: w, type: store, url: u, every: 15m}\n"
R = W + "rules:\n"  # the first rule is on line 6
SF = "providers: {socialfetch: {api_key: k}}\n"  # one line; channels follow on line 2


def write(tmp_path: Path, text: str | bytes, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def issues(path: Path | str, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={} if env is None else env)
    return caught.value.issues


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    return load_config(write(tmp_path, text), env={} if env is None else env)


def case(name: str, text: str, at: str, fragment: str):
    return pytest.param(text, at, fragment, id=name)


ERRORS = [
    # -- YAML itself ----------------------------------------------------------------------
    case("yaml-syntax", H + "watches: [\n", "4:1", "invalid YAML: expected the node content"),
    case("yaml-tab", H + "watches:\n\t- id: w\n", "4:1", "indent with spaces, not tabs"),
    case(
        "yaml-duplicate-key",
        H + "watches:\n  - id: w\n    type: store\n    url: u\n    every: 15m\n    every: 1h\n",
        "8:5",
        "duplicate key 'every' (first at line 7)",
    ),
    case(
        "yaml-unknown-tag",
        H + "watches:\n  - {id: w, type: store, url: !secret u, every: 15m}\n",
        "4:31",
        "unsupported YAML tag '!secret'",
    ),
    case("yaml-empty", "", "1:1", "the config file is empty"),
    case("yaml-comments-only", "# nothing yet\n", "1:1", "the config file is empty"),
    case("yaml-top-level-list", "- id: w\n", "1:1", "expected a mapping with the sections"),
    case(
        "yaml-bad-merge",
        H + "watches:\n  - {<<: 5, id: w, type: store, url: u, every: 15m}\n",
        "4:10",
        "invalid merge key",
    ),
    case(
        "yaml-var-in-flow-mapping",
        "providers:\n  socialfetch: {api_key: ${K}}\n",
        "2:27",
        "quote values that use ${VAR} inside { } or [ ]",
    ),
    # -- ${VAR} ---------------------------------------------------------------------------
    case(
        "env-missing",
        H + "watches:\n  - {id: w, type: store, url: '${STORE_URL}', every: 15m}\n",
        "4:32",
        "environment variable 'STORE_URL' is not set ('url' in watch 'w')",
    ),
    case(
        "env-missing-inside-text",
        "providers:\n  socialfetch:\n    api_key: Bearer ${NOPE}\n" + W,
        "3:21",
        "environment variable 'NOPE' is not set",
    ),
    case(
        "env-malformed",
        "providers:\n  socialfetch:\n    api_key: ${1X}\n" + W,
        "3:14",
        "malformed variable reference",
    ),
    # -- sections and shapes --------------------------------------------------------------
    case(
        "unknown-section",
        H + W + "watchs: []\n",
        "5:1",
        "unknown top-level section 'watchs'; did you mean 'watches'? allowed: providers",
    ),
    case("watches-number", H + "watches: 5\n", "3:10", "expected a list of watches"),
    case("watches-null", H + "watches:\n", "3:9", "no watches defined"),
    case("watches-empty", H + "watches: []\n", "3:10", "no watches defined"),
    case("watches-absent", H, "1:1", "no watches defined"),
    case("watches-mapping", H + "watches:\n  w: {type: store}\n", "4:3", "got a mapping"),
    case(
        "channels-list",
        SF + "channels: [deals]\n" + W,
        "2:11",
        "section 'channels': expected a mapping of channel id",
    ),
    case(
        "watch-item-scalar",
        H + "watches:\n  - w\n",
        "4:5",
        "watch #1: expected a mapping like '- id: my-watch', got 'w'",
    ),
    case("rule-item-list", H + R + "  - [a]\n", "6:5", "rule #1: expected a mapping"),
    case(
        "provider-unknown",
        "providers:\n  socialfech: {api_key: k}\n  socialfetch: {api_key: k}\n" + W,
        "2:3",
        "unknown provider 'socialfech'; did you mean 'socialfetch'? allowed: socialfetch, keyapi",
    ),
    case(
        "provider-not-mapping",
        "providers:\n  socialfetch: k\n" + W,
        "2:16",
        "provider 'socialfetch': expected a mapping with api_key",
    ),
    # -- keys -----------------------------------------------------------------------------
    case(
        "unknown-key",
        H + "watches:\n  - id: x\n    type: store\n    url: u\n    evry: 15m\n    every: 15m\n",
        "7:5",
        "unknown key 'evry' in watch 'x' (type: store); did you mean 'every'? allowed: id, type",
    ),
    case(
        "key-of-another-type",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15m, query: q}\n",
        "4:46",
        "'query' belongs to watch type search",
    ),
    case(
        "missing-required",
        H + "watches:\n  - {id: w, type: store, every: 15m}\n",
        "4:5",
        "watch 'w' is missing required key 'url'",
    ),
    case(
        "missing-id",
        H + "watches:\n  - {type: store, url: u, every: 15m}\n",
        "4:5",
        "watch #1 is missing required key 'id'",
    ),
    case(
        "missing-type",
        H + "watches:\n  - {id: w, url: u, every: 15m}\n",
        "4:5",
        "missing required key 'type' (one of: store, showcase, search, top_products)",
    ),
    case(
        "unknown-watch-type",
        H + "watches:\n  - {id: w, type: stor, url: u, every: 15m}\n",
        "4:19",
        "unknown watch type 'stor'; did you mean 'store'?",
    ),
    case(
        "unknown-rule-kind",
        H + R + "  - {id: r, when: price_dorp, notify: [deals]}\n",
        "6:19",
        "unknown rule kind 'price_dorp'; did you mean 'price_drop'?",
    ),
    case(
        "unknown-channel-type",
        SF + "channels:\n  deals: {type: telegarm}\n" + W,
        "3:17",
        "unknown channel type 'telegarm'; did you mean 'telegram'?",
    ),
    case(
        "unknown-match-key",
        H + R + "  - {id: r, when: new_item, notify: [deals], match: {titel: x}}\n",
        "6:54",
        "unknown key 'titel' in 'match' of rule 'r'; did you mean 'title'?",
    ),
    case(
        "param-of-another-kind",
        H + R + "  - {id: r, when: new_item, notify: [deals], target: '3'}\n",
        "6:46",
        "'target' belongs to rule kind price_below",
    ),
    case(
        "required-but-null",
        H + "watches:\n  - {id: w, type: store, url: ~, every: 15m}\n",
        "4:31",
        "'url' in watch 'w' has no value",
    ),
    # -- value types ----------------------------------------------------------------------
    case(
        "int-text",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15m, max_pages: abc}\n",
        "4:57",
        "'max_pages' in watch 'w': expected a whole number >= 1, got 'abc'",
    ),
    case(
        "positive-int-zero",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15m, max_pages: 0}\n",
        "4:57",
        "expected a whole number >= 1, got '0'",
    ),
    case(
        "positive-int-fraction",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15m, missing_after: 2.5}\n",
        "4:61",
        "expected a whole number >= 1, got '2.5'",
    ),
    case(
        "positive-number-zero",
        "providers:\n  socialfetch: {api_key: k, requests_per_second: 0}\n" + W,
        "2:50",
        "expected a number > 0, got '0'",
    ),
    case(
        "positive-number-nan",
        "providers:\n  socialfetch: {api_key: k, requests_per_second: .nan}\n" + W,
        "2:50",
        "expected a number > 0, got '.nan'",
    ),
    case(
        "percent-over-100",
        H + R + "  - {id: r, when: discount_at_least, percent: 101, notify: [deals]}\n",
        "6:47",
        "expected a whole number from 0 to 100, got '101'",
    ),
    case(
        "decimal-text",
        H + R + "  - {id: r, when: price_below, target: cheap, notify: [deals]}\n",
        "6:40",
        "expected a non-negative decimal amount like \"30.00\", got 'cheap'",
    ),
    case(
        "decimal-negative",
        H + R + "  - {id: r, when: price_below, target: -1, notify: [deals]}\n",
        "6:40",
        "must not be negative",
    ),
    case(
        "decimal-nan",
        H + R + "  - {id: r, when: price_below, target: .nan, notify: [deals]}\n",
        "6:40",
        "must be a finite amount",
    ),
    case(
        "decimal-infinity-text",
        H + R + "  - {id: r, when: price_below, target: 'Infinity', notify: [deals]}\n",
        "6:40",
        "must be a finite amount",
    ),
    case(
        "duration-fraction",
        H + "watches:\n  - {id: w, type: store, url: u, every: 1.5h}\n",
        "4:41",
        "expected a duration: a whole number and a unit s, m, h or d",
    ),
    case(
        "duration-no-unit",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15}\n",
        "4:41",
        "got '15'",
    ),
    case(
        "duration-zero",
        H + "watches:\n  - {id: w, type: store, url: u, every: 0m}\n",
        "4:41",
        "must be longer than zero",
    ),
    case(
        "duration-words",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15 min}\n",
        "4:41",
        "got '15 min'",
    ),
    case(
        "bool",
        SF + "channels:\n  t: {type: telegram, token: x, allow_subscribe: maybe}\n" + W,
        "3:50",
        "'allow_subscribe' in channel 't': expected true or false, got 'maybe'",
    ),
    case(
        "str-list-bare-string",
        H + R + "  - {id: r, when: new_item, notify: deals}\n",
        "6:37",
        "write it in brackets, e.g. [x], even for one item",
    ),
    case(
        "int-list-text-item",
        SF + "channels:\n  t: {type: telegram, token: x, chat_ids: [12, me]}\n" + W,
        "3:48",
        "expected a list of whole numbers",
    ),
    case(
        "str-map-list-value",
        SF + "channels:\n  h: {type: webhook, url: 'http://h', headers: {X-A: [1]}}\n" + W,
        "3:54",
        "the value of 'X-A' must be text",
    ),
    case(
        "regex",
        H + R + "  - {id: r, when: new_item, notify: [deals], match: {title: '(oops'}}\n",
        "6:61",
        "invalid regular expression: missing ), unterminated subpattern",
    ),
    case(
        "region-lower-case",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15m, region: us}\n",
        "4:54",
        "did you mean 'US'?",
    ),
    case(
        "region-unknown",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15m, region: XX}\n",
        "4:54",
        "expected a Social Fetch region code (US, GB,",
    ),
    case(
        "cron-fields",
        H + "watches:\n  - {id: w, type: store, url: u, cron: '* * *'}\n",
        "4:40",
        "expected a 5-field crontab expression",
    ),
    case(
        "cron-out-of-range",
        H + "watches:\n  - {id: w, type: store, url: u, cron: '61 * * * *'}\n",
        "4:40",
        "higher than the maximum value (59)",
    ),
    case(
        "hhmm-range-hour",
        SF + "channels:\n  h: {type: webhook, url: 'http://h', quiet_hours: '25:00-07:00'}\n" + W,
        "3:52",
        'expected a time range "HH:MM-HH:MM"',
    ),
    case(
        "hhmm-range-single-time",
        SF + "channels:\n  h: {type: webhook, url: 'http://h', quiet_hours: 23:00}\n" + W,
        "3:52",
        "got '23:00'",
    ),
    case(
        "timezone",
        SF + "channels:\n  h: {type: webhook, url: 'http://h', timezone: Europe/Berln}\n" + W,
        "3:49",
        "did you mean 'Europe/Berlin'?",
    ),
    # -- checks across keys and sections --------------------------------------------------
    case(
        "every-and-cron",
        H + "watches:\n  - {id: w, type: store, url: u, every: 15m, cron: '0 * * * *'}\n",
        "4:46",
        "sets both 'every' and 'cron'; keep exactly one",
    ),
    case(
        "no-schedule",
        H + "watches:\n  - {id: w, type: store, url: u}\n",
        "4:5",
        "watch 'w' has no schedule; add 'every'",
    ),
    case(
        "top-products-needs-filter",
        H + "watches:\n  - {id: w, type: top_products, every: 6h}\n",
        "4:5",
        "needs at least one of: category_id, keyword",
    ),
    case(
        "duplicate-watch-id",
        H + W + "  - {id: w, type: store, url: v, every: 15m}\n",
        "5:10",
        "duplicate watch id 'w' (first at line 4)",
    ),
    case(
        "duplicate-rule-id",
        H + R + "  - {id: r, when: new_item, notify: [deals]}\n" * 2,
        "7:10",
        "duplicate rule id 'r' (first at line 6)",
    ),
    case(
        "rule-id-is-a-watch-id",
        H + R + "  - {id: w, when: new_item, notify: [deals]}\n",
        "6:10",
        "rule id 'w' is also the id of the watch at line 4",
    ),
    case(
        "notify-unknown-channel",
        H + R + "  - {id: r, when: new_item, notify: [deal]}\n",
        "6:38",
        "unknown channel 'deal'; did you mean 'deals'? defined channels: deals",
    ),
    case(
        "watches-unknown-watch",
        H + R + "  - {id: r, when: new_item, notify: [deals], watches: [w2]}\n",
        "6:56",
        "unknown watch 'w2'",
    ),
    case(
        "notify-empty",
        H + R + "  - {id: r, when: new_item, notify: []}\n",
        "6:37",
        "'notify' is empty; list at least one channel id",
    ),
    case(
        "notify-missing",
        H + R + "  - {id: r, when: new_item}\n",
        "6:5",
        "missing required key 'notify'",
    ),
    case(
        "rule-watches-empty",
        H + R + "  - {id: r, when: new_item, notify: [deals], watches: []}\n",
        "6:55",
        "'watches' is empty",
    ),
    case(
        "rank-jump-needs-a-parameter",
        H + R + "  - {id: r, when: rank_jump, notify: [deals]}\n",
        "6:5",
        "needs at least one of: min_positions, top",
    ),
    case(
        "price-drop-on-top-products",
        H
        + "watches:\n  - {id: top, type: top_products, keyword: k, every: 6h}\nrules:\n"
        + "  - {id: r, when: price_drop, notify: [deals], watches: [top]}\n",
        "6:58",
        "price_drop applies only to watches of type store, showcase, search",
    ),
    case(
        "provider-not-configured",
        "providers: {keyapi: {api_key: k}}\n" + W,
        "3:19",
        "needs the 'socialfetch' provider",
    ),
    case(
        "match-min-over-max",
        H
        + R
        + "  - {id: r, when: new_item, notify: [deals], match: {min_price: 9, max_price: 5}}\n",
        "6:65",
        "min_price 9 is greater than max_price 5",
    ),
    case(
        "watch-id-characters",
        H + "watches:\n  - {id: my watch, type: store, url: u, every: 15m}\n",
        "4:10",
        "invalid watch id 'my watch': use only letters, digits",
    ),
    case(
        "rule-id-characters",
        H + R + "  - {id: 'r/1', when: new_item, notify: [deals]}\n",
        "6:10",
        "invalid rule id 'r/1'",
    ),
    case(
        "channel-id-characters",
        SF + "channels:\n  'my chan': {type: console}\n" + W,
        "3:3",
        "invalid channel id 'my chan'",
    ),
    case(
        "telegram-base-url-trailing-slash",
        SF + "channels:\n  t: {type: telegram, token: x, base_url: 'https://x.org/bot/'}\n" + W,
        "3:43",
        "must not end with '/'",
    ),
    case(
        "webhook-url-scheme",
        SF + "channels:\n  h: {type: webhook, url: hooks.example.com}\n" + W,
        "3:27",
        "must be an http:// or https:// URL, got 'hooks.example.com'",
    ),
]


@pytest.mark.parametrize(("text", "at", "fragment"), ERRORS)
def test_error_is_located_and_explained(tmp_path, text, at, fragment):
    path = write(tmp_path, text)
    found = issues(path)
    assert [f"{i.line}:{i.column}" for i in found] == [at], found
    assert fragment in found[0].message
    assert str(found[0]).startswith(f"{path}:{at}: ")


def test_three_different_errors_are_all_reported_in_line_order(tmp_path):
    text = (
        H
        + "watches:\n"
        + "  - {id: w, type: store, url: u, every: 1.5h}\n"  # line 4
        + "rules:\n"
        + "  - {id: r, when: new_item, notify: [nope]}\n"  # line 6
        + "  - {id: s, when: price_below, notify: [deals]}\n"  # line 7
    )
    found = issues(write(tmp_path, text))
    assert [(i.line, i.column) for i in found] == [(4, 41), (6, 38), (7, 5)]
    assert "1.5h" in found[0].message
    assert "unknown channel 'nope'" in found[1].message
    assert "missing required key 'target'" in found[2].message


def test_messages_use_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "watches: 5\n")
    assert str(issues(Path("rules.yaml"))[0]).startswith("rules.yaml:1:10: ")
    assert issues("rules.yaml")[0].file == "rules.yaml"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(None, "config file not found", id="missing-file"),
        pytest.param(b"watches:\n  - id: \xff\n", "not UTF-8", id="not-utf8"),
        pytest.param(b"watches: \x00\n", "invalid character", id="nul-byte"),
    ],
)
def test_unreadable_file_is_a_config_error(tmp_path, content, fragment):
    path = tmp_path / "rules.yaml"
    if content is not None:
        path.write_bytes(content)
    (issue,) = issues(path)
    assert fragment in issue.message
    assert issue.line >= 1 and issue.column >= 1


def test_a_directory_is_a_config_error(tmp_path):
    (issue,) = issues(tmp_path)
    assert (issue.line, issue.column) == (1, 1)
    assert "cannot read the config file" in issue.message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("5\n", id="scalar-document"),
        pytest.param("watches: [null, 5, [], {}]\n", id="odd-watch-items"),
        pytest.param("providers: 5\nchannels: 5\nwatches: {}\nrules: 5\n", id="sections-scalars"),
        pytest.param("providers:\nchannels:\nwatches:\nrules:\n", id="null-sections"),
        pytest.param("? [a]\n: 1\nwatches: []\n", id="complex-key"),
        pytest.param("a: &a [*a]\nwatches: &w [*w]\n", id="recursive-alias"),
        pytest.param("[" * 600 + "]" * 600, id="nested-too-deeply"),
        pytest.param(
            H
            + "watches:\n  - {id: 1, type: 2, url: 3, every: 4}\nrules:\n  - {id: [], when: {}}\n",
            id="numbers-and-collections-as-names",
        ),
        pytest.param(
            H + R + "  - {id: r, when: rank_jump, notify: [!x a], top: !y 1, match: 5}\n",
            id="unknown-tags-inside-values",
        ),
    ],
)
def test_any_shape_of_bad_input_raises_only_config_error(tmp_path, text):
    found = issues(write(tmp_path, text))
    assert found
    assert found == sorted(found, key=lambda i: (i.line, i.column))


def test_mutated_example_raises_only_config_error(tmp_path):
    """Random edits of the example file never produce anything but a ConfigError."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    tokens = ["5", "[]", "{}", "~", "- x", ": ", "\t", "&a ", "*a", "<<: *a", "!t ", "${X}", "'"]
    rnd = random.Random(20261124)
    for _ in range(100):
        text = list(lines)
        for _ in range(rnd.randint(1, 3)):
            j = rnd.randrange(len(text))
            roll = rnd.random()
            if roll < 0.3:
                del text[j]
            elif roll < 0.7:
                k = rnd.randrange(len(text[j]) + 1)
                text[j] = text[j][:k] + rnd.choice(tokens) + text[j][k:]
            else:
                text.insert(j, rnd.choice(lines))
        path = write(tmp_path, "".join(text))
        try:
            load_config(path, env=SECRETS)
        except ConfigError as e:
            assert e.issues
            assert all(i.line >= 1 and i.column >= 1 for i in e.issues)


# -- the example file ---------------------------------------------------------------------


def test_example_loads_with_the_four_secrets():
    config = load_config(EXAMPLE, env=SECRETS)
    assert config.path == str(EXAMPLE)
    assert config.providers["socialfetch"].api_key == "sf-dummy"
    assert config.providers["keyapi"].api_key == "ka-dummy"
    assert config.channels["deals"].token == "123:dummy"
    assert config.channels["hooks"].secret == "wh-dummy"
    assert {w.type for w in config.watches.values()} == set(WATCH_TYPES)
    assert {r.when for r in config.rules.values()} == set(RULE_KINDS)
    assert {c.type for c in config.channels.values()} == set(CHANNEL_TYPES)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_example_names_a_missing_secret(missing):
    env = {k: v for k, v in SECRETS.items() if k != missing}
    (issue,) = issues(EXAMPLE, env)
    assert f"environment variable '{missing}' is not set" in issue.message
    line = EXAMPLE.read_text(encoding="utf-8").splitlines()[issue.line - 1]
    assert line[issue.column - 1 :].startswith("${" + missing + "}")


def test_example_uses_only_the_four_secret_variables():
    text = EXAMPLE.read_text(encoding="utf-8")
    body = "\n".join(line.split("#")[0] for line in text.splitlines())
    used = {part.split("}")[0].split(":-")[0] for part in body.split("${")[1:]}
    assert used == set(SECRETS)


def _example_items() -> dict:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def test_example_shows_every_kind():
    data = _example_items()
    assert {w["type"] for w in data["watches"]} == set(WATCH_TYPES)
    assert {r["when"] for r in data["rules"]} == set(RULE_KINDS)
    assert {c["type"] for c in data["channels"].values()} == set(CHANNEL_TYPES)
    assert set(data["providers"]) == set(PROVIDERS)
    assert any("cron" in w for w in data["watches"])


def test_example_shows_every_param():
    """Each key of kinds.py appears where it applies: per type, per kind, or once if shared."""
    data = _example_items()
    missing = []
    shared_watch = set.intersection(*(set(t.params) for t in WATCH_TYPES.values()))
    all_watch_keys = {k for w in data["watches"] for k in w}
    missing += [f"watch {k}" for k in set(WATCH_COMMON) | shared_watch if k not in all_watch_keys]
    for name, wtype in WATCH_TYPES.items():
        keys = {k for w in data["watches"] if w["type"] == name for k in w}
        missing += [f"{name}.{k}" for k in set(wtype.params) - shared_watch if k not in keys]
    all_rule_keys = {k for r in data["rules"] for k in r}
    missing += [f"rule {k}" for k in RULE_COMMON if k not in all_rule_keys]
    for name, kind in RULE_KINDS.items():
        keys = {k for r in data["rules"] if r["when"] == name for k in r}
        missing += [f"{name}.{k}" for k in kind.params if k not in keys]
    match_keys = {k for r in data["rules"] for k in r.get("match", {})}
    missing += [f"match.{k}" for k in MATCH_PARAMS if k not in match_keys]
    for name, ctype in CHANNEL_TYPES.items():
        keys = {k for c in data["channels"].values() if c["type"] == name for k in c}
        missing += [f"{name}.{k}" for k in {*CHANNEL_COMMON, *ctype.params} if k not in keys]
    missing += [f"top-level {k}" for k in ("retention", "history_retention") if k not in data]
    for name in PROVIDERS:
        missing += [f"{name}.{k}" for k in PROVIDER_PARAMS if k not in data["providers"][name]]
    assert not missing


def test_every_example_option_is_commented_at_its_first_use():
    seen: set[str] = set()
    for number, line in enumerate(EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        match = re.match(r"\s*(?:- )?([A-Za-z_]+):", line)
        if match and match[1] not in seen:
            seen.add(match[1])
            assert "#" in line, f"rules.example.yaml:{number}: '{match[1]}' has no comment"


# -- kinds.py and the config types agree ----------------------------------------------------


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_param_type_has_a_converter():
    tables = [WATCH_COMMON, RULE_COMMON, MATCH_PARAMS, CHANNEL_COMMON, PROVIDER_PARAMS]
    tables += [t.params for t in WATCH_TYPES.values()]
    tables += [k.params for k in RULE_KINDS.values()]
    tables += [c.params for c in CHANNEL_TYPES.values()]
    assert {p.type for table in tables for p in table.values()} <= PARAM_TYPES


def test_every_param_has_a_dataclass_field():
    for wtype in WATCH_TYPES.values():
        assert set(WATCH_COMMON) | set(wtype.params) <= _fields(WatchConfig)
    assert set(RULE_COMMON) <= _fields(RuleConfig)  # a kind's own keys go to .params


def test_every_rule_kind_param_reaches_the_rule():
    """What the example writes for a kind arrives in ``RuleConfig.params``, typed."""
    config = load_config(EXAMPLE, env=SECRETS)
    written = {r["id"]: r for r in _example_items()["rules"]}
    for rule in config.rules.values():
        kind = RULE_KINDS[rule.when]
        assert set(rule.params) == set(kind.params)
        for key in kind.params:
            if key in written[rule.id]:
                assert rule.params[key] is not None, f"{rule.id}.{key}"
    for ctype in CHANNEL_TYPES.values():
        assert set(CHANNEL_COMMON) | set(ctype.params) <= _fields(ChannelConfig)
    assert set(PROVIDER_PARAMS) <= _fields(ProviderConfig)
    assert set(MATCH_PARAMS) <= _fields(MatchConfig)


# -- values ----------------------------------------------------------------------------------

STORE = SF + "watches:\n  - id: w\n    type: store\n    url: u\n"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, 4, id="unset-uses-default"),
        pytest.param({"N": ""}, 4, id="empty-uses-default"),
        pytest.param({"N": "9"}, 9, id="set-wins"),
    ],
)
def test_env_default_syntax(tmp_path, env, expected):
    text = "providers:\n  socialfetch:\n    api_key: k\n    max_concurrency: ${N:-4}\n" + W
    config = load(tmp_path, text, env)
    assert config.providers["socialfetch"].max_concurrency == expected


def test_substituted_values_are_typed_as_if_written(tmp_path):
    text = (
        "providers:\n  socialfetch:\n    api_key: Bearer ${KEY}\n"
        "    max_concurrency: ${N}\n    requests_per_second: ${RPS}\n"
        "channels:\n  t:\n    type: telegram\n    token: ${T}\n    allow_subscribe: ${SUB}\n"
        "    chat_ids: ['${CHAT}']\n"
        "watches:\n  - id: w\n    type: store\n    url: u\n    every: ${EVERY:-15m}\n"
    )
    env = {"KEY": "s3", "N": "8", "RPS": "0.5", "T": "42", "SUB": "false", "CHAT": "-100"}
    config = load(tmp_path, text, env)
    provider = config.providers["socialfetch"]
    assert (provider.api_key, provider.max_concurrency, provider.requests_per_second) == (
        "Bearer s3",
        8,
        0.5,
    )
    channel = config.channels["t"]
    assert (channel.token, channel.allow_subscribe, channel.chat_ids) == ("42", False, (-100,))
    assert config.watches["w"].every == timedelta(minutes=15)


def test_substituted_value_of_the_wrong_type_is_located_without_showing_it(tmp_path):
    text = "providers:\n  socialfetch:\n    api_key: k\n    max_concurrency: ${N}\n" + W
    (issue,) = issues(write(tmp_path, text), {"N": "s3cret"})
    assert (issue.line, issue.column) == (4, 22)
    assert "expected a whole number >= 1, got '${N}' once substituted" in issue.message
    assert "s3cret" not in issue.message


def test_an_empty_optional_secret_means_unset(tmp_path):
    text = SF + "channels:\n  h: {type: webhook, url: 'http://h', secret: '${S:-}'}\n" + W
    assert load(tmp_path, text).channels["h"].secret is None


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        pytest.param('"30.00"', Decimal("30.00"), id="string"),
        pytest.param("30", Decimal("30"), id="int"),
        pytest.param("30.10", Decimal("30.10"), id="float-as-written"),
        pytest.param("0.1", Decimal("0.1"), id="no-binary-float"),
        pytest.param("'${P}'", Decimal("19.99"), id="substituted"),
    ],
)
def test_decimals_keep_what_was_written(tmp_path, written, expected):
    text = SF + "channels: {c: {type: console}}\n" + W
    text += f"rules:\n  - {{id: r, when: price_below, target: {written}, notify: [c]}}\n"
    target = load(tmp_path, text, {"P": "19.99"}).rules["r"].params["target"]
    assert target == expected
    assert str(target) == str(expected)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2s", timedelta(seconds=2)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
    ],
)
def test_durations(tmp_path, written, expected):
    assert load(tmp_path, STORE + f"    every: {written}\n").watches["w"].every == expected


def test_defaults_and_conversions(tmp_path):
    text = (
        "providers:\n  socialfetch: {api_key: k, base_url: 'http://127.0.0.1:8080/'}\n"
        "  keyapi: {api_key: k}\n"
        "channels:\n"
        "  t: {type: telegram, token: x, chat_ids: [1, -2], quiet_hours: '23:00-07:00'}\n"
        "  h: {type: webhook, url: 'http://h', headers: {X-N: 5}, timeout: 3s}\n"
        "watches:\n"
        "  - {id: w, type: showcase, handle: '@someone', every: 1h}\n"
        "  - {id: k, type: top_products, category_id: 601583, every: 6h}\n"
        "rules:\n"
        "  - {id: r, when: new_item, notify: [t, h], match: {product_ids: [17, a]}}\n"
        "  - {id: low, when: lowest_price, notify: [t]}\n"
    )
    config = load(tmp_path, text)
    assert config.providers["socialfetch"].base_url == "http://127.0.0.1:8080"
    assert config.providers["keyapi"].base_url == "https://api.keyapi.ai"
    assert config.providers["keyapi"].max_concurrency == 4
    assert config.providers["keyapi"].requests_per_second == 5.0
    telegram = config.channels["t"]
    assert telegram.chat_ids == (1, -2)
    assert telegram.quiet_hours == ("23:00", "07:00")
    assert (telegram.base_url, telegram.max_attempts, telegram.group_over) == (None, 8, 5)
    assert (telegram.timezone, telegram.allow_subscribe) == ("UTC", True)
    webhook = config.channels["h"]
    assert webhook.headers == {"X-N": "5"}
    assert webhook.timeout == timedelta(seconds=3)
    showcase = config.watches["w"]
    assert (showcase.handle, showcase.line, showcase.max_pages) == ("someone", 8, 5)
    assert showcase.provider == "socialfetch" and showcase.tracks_stock
    top = config.watches["k"]
    assert (top.category_id, top.line, top.provider, top.tracks_stock) == (
        "601583",
        9,
        "keyapi",
        False,
    )
    rule = config.rules["r"]
    assert rule.watches is None and rule.applies_to("k")
    assert rule.notify == ("t", "h")
    assert rule.match.product_ids == ("17", "a")
    assert rule.cooldown == timedelta(hours=6)
    assert rule.params == {}  # new_item has no parameters
    assert config.rules["low"].params == {"window": timedelta(days=30)}


def test_numbers_as_ids_are_text(tmp_path):
    text = SF + "channels:\n  5: {type: console}\n"
    text += "watches:\n  - {id: 7, type: store, url: u, every: 1m}\n"
    text += "rules:\n  - {id: 8, when: new_item, notify: [5], watches: [7]}\n"
    config = load(tmp_path, text)
    assert set(config.channels) == {"5"} and set(config.watches) == {"7"}
    assert config.rules["8"].watches == ("7",)


def test_anchors_and_merge_keys(tmp_path):
    text = SF + (
        "watches:\n"
        "  - &base {id: a, type: search, query: q, every: 30m, max_pages: 2}\n"
        "  - <<: *base\n"
        "    id: b\n"
        "    query: r\n"
    )
    watches = load(tmp_path, text).watches
    assert (watches["b"].query, watches["b"].max_pages, watches["b"].every) == (
        "r",
        2,
        timedelta(minutes=30),
    )


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("*/2", "tue,thu,sat,sun"),
        ("5-7", "fri,sat,sun"),
        ("0-6", "*"),
        ("1,3", "mon,wed"),
        ("mon-fri", "mon-fri"),
        ("*", "*"),
        ("8", None),
        ("5-1", None),
        ("1/0", None),
    ],
)
def test_crontab_weekdays_keep_their_crontab_meaning(field, expected):
    assert crontab_weekdays(field) == expected


def test_cron_weekday_numbers_are_stored_as_names(tmp_path):
    config = load(tmp_path, STORE + "    cron: '0 9 * * 1-5'\n")
    assert config.watches["w"].cron == "0 9 * * mon,tue,wed,thu,fri"
    assert config.watches["w"].every is None


def test_config_is_frozen(tmp_path):
    config = load(tmp_path, STORE + "    every: 1m\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.watches["w"].max_pages = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('{"X-Token": "${TOKEN}"}', "contains a control character"),
        ('{"X-A": "line\\r\\nInjected: 1"}', "contains a control character"),
        ('{"Bad Name": "v"}', "is not a valid HTTP header name"),
        ('{"X-Watcher-Signature": "forged"}', "is set by watcher"),
    ],
)
def test_webhook_headers_that_cannot_be_sent_are_config_errors(tmp_path, header, message):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "providers:\n  socialfetch: {api_key: k}\n"
        f"channels:\n  out: {{type: webhook, url: 'https://h.example/x', headers: {header}}}\n"
        "watches:\n  - {id: s, type: search, query: q, every: 1h}\n"
        "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"TOKEN": "abc\nX-Evil: 1"})
    (issue,) = caught.value.issues
    assert str(issue).startswith(f"{path}:4:") and message in str(issue), str(issue)
    assert "X-Evil" not in str(issue)  # the resolved value may be a secret: never shown


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("requests_per_second: 0.0000000001", "'requests_per_second' in provider 'socialfetch'"),
        ("max_concurrency: 100000000", "'max_concurrency' in provider 'socialfetch'"),
        ("max_response_mib: 4096", "'max_response_mib' in provider 'socialfetch'"),
    ],
)
def test_provider_limits_that_could_not_work_are_config_errors(tmp_path, option, message):
    """A rate of one request per 300 years passed `check` and hung `watcher once` on its
    first retry; now `check` says so, with the position."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"providers:\n  socialfetch: {{api_key: k, {option}}}\n"
        "channels:\n  out: {type: console}\n"
        "watches:\n  - {id: s, type: search, query: q, every: 1h}\n"
        "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (issue,) = caught.value.issues
    assert str(issue).startswith(f"{path}:2:") and message in str(issue)
    assert "must be between" in str(issue)


def test_a_loader_failure_is_still_a_config_error_with_a_position(tmp_path, monkeypatch):
    """`watcher check` exits 0 or 2, nothing else: even a bug in the loader rejects the file."""
    import watcher.config as config_module

    def broken(*_args):
        raise MemoryError

    monkeypatch.setattr(config_module, "_build", broken)
    path = tmp_path / "rules.yaml"
    path.write_text("watches: []\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (issue,) = caught.value.issues
    assert str(issue).startswith(f"{path}:1:1: cannot check this file (MemoryError)")


def test_libyaml_composes_the_same_nodes_and_positions_as_pyyaml():
    import yaml

    from watcher.configload import fast_compose

    text = (Path(__file__).parents[1] / "rules.example.yaml").read_text() + "\nx: 'wörld'\n"

    def flat(node):
        yield type(node).__name__, node.tag, node.start_mark.index, node.end_mark.index
        if isinstance(node, yaml.ScalarNode):
            yield node.value, node.style or None  # plain: libyaml says '', PyYAML None
        else:
            for item in node.value:
                for part in item if isinstance(item, tuple) else (item,):
                    yield from flat(part)

    assert list(flat(fast_compose(text))) == list(flat(yaml.compose(text, yaml.SafeLoader)))


# -- watcher check's warnings: a config that runs, but likely not as meant ------------------

WARNED = """\
providers:
  socialfetch: {api_key: sfk_written_here}
channels:
  tg: {type: telegram, token: "${TG_TOKEN}", chat_ids: [1]}
  hook: {type: webhook, url: "http://127.0.0.1:9/h", secret: hmac-written-here,
         headers: {Authorization: "Bearer written-here", X-Trace: "1"}}
watches:
  - {id: shop, type: store, url: "https://www.tiktok.com/shop/store/goli/7495794203056835079",
     every: 1h}
  - {id: profile, type: store, url: "https://www.tiktok.com/@goli", every: 1h}
  - {id: product, type: store, url: "https://www.tiktok.com/shop/pdp/1729527313880355335",
     every: 1h}
rules: []
"""
WARNING = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): warning: (?P<text>.+)$")


def at(needle: str, text: str = WARNED) -> tuple[int, int]:
    """(line, column) of the first ``needle`` in ``text``, both from 1."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def check(path: Path, **env: str):
    import os
    import subprocess

    from .support import WATCHER

    return subprocess.run(
        [WATCHER, "check", "-c", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def warnings_of(r, path: Path) -> dict[tuple[int, int], str]:
    out = {}
    for line in r.stderr.splitlines():
        m = WARNING.match(line)
        assert m and m["file"] == str(path), line
        out[(int(m["line"]), int(m["col"]))] = m["text"]
    return out


def test_check_warns_of_what_will_not_work_and_still_exits_0(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(WARNED)
    path.chmod(0o644)
    r = check(path, TG_TOKEN="123:secret-from-env")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"ok: {path}: 3 watches, 0 rules, 2 channels, 6 warnings\n"
    found = warnings_of(r, path)
    key, secret, header = at("sfk_written_here"), at("hmac-written-here"), at('"Bearer')
    profile, product, rules = (
        at('"https://www.tiktok.com/@'),
        at('"https://www.tiktok.com/shop/pdp'),
        at("rules:"),
    )
    assert sorted(found) == [key, secret, header, profile, product, rules], r.stderr
    assert "'api_key' of provider 'socialfetch' is written in the file" in found[key]
    assert "(mode 0644)" in found[key] and "${SOCIALFETCH_API_KEY}" in found[key]
    assert "'secret' of channel 'hook'" in found[secret]
    assert "header 'Authorization' of channel 'hook'" in found[header]
    assert "watch 'profile'" in found[profile] and "showcase" in found[profile]
    assert "watch 'product'" in found[product] and "one product's page" in found[product]
    assert found[rules].startswith("no rules defined")
    # the token from ${TG_TOKEN}, the X-Trace header and the store URL are fine; no
    # warning shows a secret
    for value in ("sfk_written_here", "hmac-written-here", "Bearer written-here", "secret-from"):
        assert value not in r.stdout + r.stderr

    path.chmod(0o600)  # only its owner can read it: the literal secrets are no one else's
    r = check(path, TG_TOKEN="123:secret-from-env")
    assert r.returncode == 0, r.stderr
    assert sorted(warnings_of(r, path)) == [profile, product, rules], r.stderr


def test_check_warns_of_a_config_without_rules_or_channels(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "providers:\n  socialfetch: {api_key: '${K}'}\n"
        "watches:\n  - {id: s, type: search, query: q, every: 1h}\n"
    )
    r = check(path, K="k")
    assert r.returncode == 0, r.stderr
    found = [WARNING.match(line) for line in r.stderr.splitlines()]
    assert all(m and m["file"] == str(path) for m in found), r.stderr
    assert [m["text"] for m in found if m] == [
        "no rules defined: watches are polled and stored, but no alert fires "
        "(see rules.example.yaml)",
        "no channels defined: alerts have nowhere to go (see rules.example.yaml)",
    ]


def test_the_example_config_has_no_warning(tmp_path):
    env = {k: "dummy-value" for k in ("SOCIALFETCH_API_KEY", "KEYAPI_API_KEY")}
    env |= {"TELEGRAM_BOT_TOKEN": "123456:dummy", "WEBHOOK_SECRET": "dummy"}
    r = check(EXAMPLE, **env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and ", warning" not in r.stdout, r.stderr


def test_check_warns_of_an_apprise_url_with_a_literal_token(tmp_path):
    path = tmp_path / "rules.yaml"
    text = (
        "providers:\n  socialfetch: {api_key: '${K}'}\n"
        "watches:\n  - {id: s, type: search, query: q, every: 1h}\n"
        "channels:\n"
        "  phone:\n"
        "    type: apprise\n"
        "    urls:\n"
        "      - ntfy://ntfy.sh\n"  # no credential: fine
        "      - discord://1234/written-token\n"
        "      - '${DISCORD_URL}'\n"
        "rules:\n  - {id: r, when: new_item, notify: [phone]}\n"
    )
    path.write_text(text)
    path.chmod(0o644)
    r = check(path, K="k", DISCORD_URL="discord://1/from-env")
    assert r.returncode == 0, r.stderr
    found = warnings_of(r, path)
    assert sorted(found) == [at("discord://1234", text)], r.stderr
    assert "url 2 of channel 'phone' is written in the file" in found[at("discord://1234", text)]
    assert "written-token" not in r.stdout + r.stderr
    path.chmod(0o600)
    assert warnings_of(check(path, K="k", DISCORD_URL="discord://1/x"), path) == {}
