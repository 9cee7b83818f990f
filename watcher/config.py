"""YAML config → validated, frozen config objects, with file:line:column errors.

``load_config(path, env=None)`` returns a ``Config`` or raises ``ConfigError`` carrying
*every* issue found (spec section 2). The keys and value types of every watch type, rule
kind and channel type come from ``watcher.kinds``; this module adds the checks that span
keys and sections (schedules, references, id namespaces). The YAML and value-type layer is
``watcher.configload``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.configload import ID_ALLOWED, ID_RE, Entries, Reader, options
from watcher.errors import ConfigError
from watcher.kinds import (
    CHANNEL_COMMON,
    CHANNEL_TYPES,
    DEFINING_KEYS,
    MATCH_PARAMS,
    PROVIDER_PARAMS,
    PROVIDERS,
    RULE_COMMON,
    WATCH_COMMON,
    WATCH_TYPES,
    Param,
)
from watcher.rules import RULE_KINDS

SOCIALFETCH_REGIONS = (
    "US", "GB", "DE", "FR", "IT", "ID", "MY", "MX",
    "PH", "SG", "ES", "TH", "VN", "BR", "JP", "IE",
)  # fmt: skip

DEFAULT_BASE_URLS = {
    "socialfetch": "https://api.socialfetch.dev",
    "keyapi": "https://api.keyapi.ai",
}

# watch type → provider name (declared in kinds.py)
WATCH_PROVIDERS = {name: t.provider for name, t in WATCH_TYPES.items()}


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str  # "socialfetch" | "keyapi"
    api_key: str
    base_url: str
    max_concurrency: int = 4
    requests_per_second: float = 5.0
    daily_credit_budget: int | None = None
    max_response_mib: int = 16


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    id: str
    type: str  # "telegram" | "webhook" | "console"
    # webhook
    url: str | None = None
    secret: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: timedelta = timedelta(seconds=10)
    follow_redirects: bool = False
    # telegram
    token: str | None = None
    base_url: str | None = None
    chat_ids: tuple[int, ...] = ()
    admins: tuple[int, ...] = ()
    allow_subscribe: bool = True
    # every kind
    max_attempts: int = 8
    group_over: int = 5
    quiet_hours: tuple[str, str] | None = None  # ("23:00", "07:00"), validated HH:MM
    timezone: str = "UTC"  # validated IANA name


@dataclass(frozen=True, slots=True)
class WatchConfig:
    id: str
    type: str  # "store" | "showcase" | "search" | "top_products"
    # exactly the identifying parameters of the type:
    url: str | None = None  # store
    handle: str | None = None  # showcase
    query: str | None = None  # search
    category_id: str | None = None  # top_products
    keyword: str | None = None  # top_products
    time_scope: str | None = None  # top_products
    region: str | None = None
    every: timedelta | None = None  # exactly one of every / cron
    # crontab text; a numeric weekday field is rewritten to day names (mon-fri), which
    # APScheduler 3's CronTrigger.from_crontab reads as crontab does (it counts 0 = Monday)
    cron: str | None = None
    max_pages: int = 5
    missing_after: int = 2
    notify_failures_after: int = 3
    line: int = 0  # where it was defined, for messages

    @property
    def provider(self) -> str:
        return WATCH_PROVIDERS[self.type]

    @property
    def tracks_stock(self) -> bool:
        """Stock (out_of_stock / back_in_stock) applies to stores and showcases only."""
        return WATCH_TYPES[self.type].tracks_stock

    def definition(self) -> dict[str, Any]:
        """The fields whose change starts a new baseline (spec section 4): the type and
        every key that defines some watch type (``kinds.WatchType.defining``)."""
        return {"type": self.type, **{k: getattr(self, k) for k in DEFINING_KEYS}}


@dataclass(frozen=True, slots=True)
class MatchConfig:
    title: str | None = None  # regex source, compiled by rules (validated by the loader)
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    min_rating: Decimal | None = None
    product_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleConfig:
    id: str
    when: str  # a kind registered in watcher.rules
    notify: tuple[str, ...]
    watches: tuple[str, ...] | None = None  # None: every watch
    match: MatchConfig = field(default_factory=MatchConfig)
    cooldown: timedelta = timedelta(hours=6)
    template: str | None = None
    # the kind's parameters, every one of them (``RuleKind.params``, defaults filled in)
    params: Mapping[str, Any] = field(default_factory=dict)

    def applies_to(self, watch_id: str) -> bool:
        return self.watches is None or watch_id in self.watches


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    providers: dict[str, ProviderConfig]
    channels: dict[str, ChannelConfig]
    watches: dict[str, WatchConfig]
    rules: dict[str, RuleConfig]
    # sent or dead deliveries and their alerts older than this are pruned
    retention: timedelta = timedelta(days=90)
    history_retention: timedelta | None = None  # None: change history is kept for charts


# -- loading ------------------------------------------------------------------------------

_SECTIONS = {
    "providers": "a mapping of provider name (socialfetch, keyapi) to its api_key and limits",
    "channels": "a mapping of channel id to its type and settings",
    "watches": "a list of watches, each starting '- id: ...'",
    "rules": "a list of rules, each starting '- id: ...'",
}
# Top-level options (scalars beside the sections).
_OPTIONS = {
    "retention": Param("duration", doc="prune sent or dead alerts older than this (default 90d)"),
    "history_retention": Param(
        "duration", doc="prune change history older than this (default: keep it)"
    ),
}

# The keys of every watch type, checked even when a watch's type is unknown.
_SHARED_WATCH_PARAMS = {
    key: param
    for key, param in next(iter(WATCH_TYPES.values())).params.items()
    if all(t.params.get(key) == param for t in WATCH_TYPES.values())
}

_Known = dict[str, tuple[str | None, int]]  # id → (watch type if valid, line)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the whole file, so nothing runs on a half-valid config.

    Args:
        path: the YAML file; messages name it as given.
        env: where ``${VAR}`` comes from (default ``os.environ``).

    Raises:
        ConfigError: carrying every issue found, sorted by line. Bad input of any shape
            raises nothing else.
    """
    r = Reader(os.fsdecode(path), os.environ if env is None else env, SOCIALFETCH_REGIONS)
    try:
        root = r.load()
        config = _build(r, root) if root is not None else None
    except (Exception, RecursionError, MemoryError) as exc:
        # A loader bug must still end as "config rejected" (exit 2), never a traceback: the
        # file is what made it fail, so that is where the message points.
        config = None
        r.issue(None, f"cannot check this file ({type(exc).__name__}); please report it")
    if r.issues or config is None:
        raise ConfigError(r.sorted_issues())
    return config


def _build(r: Reader, root: Node) -> Config | None:
    expected = "a mapping with the sections " + ", ".join(_SECTIONS)
    top = r.mapping(root, "the config file", expected)
    if not isinstance(root, MappingNode):
        return None
    for key, (key_node, _) in top.items():
        if key not in _SECTIONS and key not in _OPTIONS:
            r.issue(
                key_node,
                f"unknown top-level section '{key}'{options(key, {**_SECTIONS, **_OPTIONS})}",
            )
    settings = {
        key: value
        for key, param in _OPTIONS.items()
        if key in top and (value := r.value(top[key][1], param, f"'{key}'")) is not None
    }
    nodes = {name: top[name][1] if name in top else None for name in _SECTIONS}
    providers = _providers(r, nodes["providers"])
    channels = _channels(r, nodes["channels"])
    watches, known = _watches(r, nodes["watches"], providers)
    rules = _rules(r, nodes["rules"], known, channels)
    return Config(
        path=r.file,
        providers={k: v for k, v in providers.items() if v is not None},
        channels={k: v for k, v in channels.items() if v is not None},
        watches=watches,
        rules=rules,
        **settings,
    )


def _make(cls: type, values: Mapping[str, Any], **fixed: Any) -> Any:
    """A config dataclass from the keys that are set; the rest keep their defaults.

    Called only while no issue has been found, so every required key is present.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **fixed)


def _section(r: Reader, node: Node | None, name: str, mapping: bool) -> list[Any]:
    """The entries of a section; an absent or null section is empty."""
    if node is None or r.is_null(node, f"'{name}'"):
        return []
    if mapping:
        entries = r.mapping(node, f"section '{name}'", _SECTIONS[name])
        return [(key, kn, vn) for key, (kn, vn) in entries.items()]
    return r.sequence(node, f"section '{name}'", _SECTIONS[name]) or []


def _check_id(r: Reader, node: Node, value: str, noun: str) -> None:
    if not ID_RE.match(value):
        r.issue(
            node,
            f"invalid {noun} '{value}': use only {ID_ALLOWED} (ids are typed in bot commands)",
        )


def _id(r: Reader, entries: Entries, owner: Node, what: str, noun: str, param: Param) -> str:
    """The item's ``id`` ('' if missing or invalid; the issue is recorded)."""
    if "id" not in entries:
        r.issue(owner, f"{what} is missing required key 'id' (a unique name: {ID_ALLOWED})")
        return ""
    node = entries["id"][1]
    value = r.value(node, param, f"'id' in {what}")
    if value is None:
        return ""
    _check_id(r, node, value, f"{noun} id")
    return value


def _kind(
    r: Reader,
    entries: Entries,
    key: str,
    table: Mapping[str, Any],
    what: str,
    owner: Node,
    noun: str,
) -> str | None:
    """The type/kind name under ``key`` if it is one of ``table``; else None, reported."""
    if key not in entries:
        r.issue(owner, f"{what} is missing required key '{key}' (one of: {', '.join(table)})")
        return None
    node = entries[key][1]
    name = r.value(node, Param("str", required=True), f"'{key}' in {what}")
    if name is not None and name not in table:
        r.issue(
            node,
            f"'{key}' in {what}: unknown {noun} '{name}'{options(name, table)}",
        )
        return None
    return name


def _elsewhere(table: Mapping[str, Any], noun: str) -> Callable[[str], str]:
    """A hint for a key that belongs to another type or kind, e.g. 'query' on a store."""

    def hint(key: str) -> str:
        owners = [name for name, kind in table.items() if key in kind.params]
        return f"'{key}' belongs to {noun} {', '.join(owners)}." if owners else ""

    return hint


def _check_url(r: Reader, entries: Entries, values: dict[str, Any], key: str, what: str) -> None:
    url = values.get(key)
    if url is not None and not url.startswith(("http://", "https://")):
        r.issue(
            entries[key][1], f"'{key}' in {what} must be an http:// or https:// URL, got '{url}'"
        )


def _present(r: Reader, entries: Entries, key: str, what: str) -> bool:
    """The key is there with a value (``every:`` alone is not a schedule)."""
    return key in entries and not r.is_null(entries[key][1], f"'{key}' in {what}")


def _one_of(r: Reader, entries: Entries, keys: tuple[str, ...], what: str, owner: Node) -> None:
    if keys and not any(_present(r, entries, k, what) for k in keys):
        r.issue(owner, f"{what} needs at least one of: {', '.join(keys)}")


def _providers(r: Reader, node: Node | None) -> dict[str, ProviderConfig | None]:
    """Provider name → config (None when invalid, so watches still see it is there)."""
    out: dict[str, ProviderConfig | None] = {}
    for name, key_node, value in _section(r, node, "providers", mapping=True):
        if name not in PROVIDERS:
            r.issue(
                key_node,
                f"unknown provider '{name}'{options(name, PROVIDERS)}",
            )
            continue
        what = f"provider '{name}'"
        out[name] = None
        entries = r.mapping(value, what, "a mapping with api_key and optional limits")
        if not isinstance(value, MappingNode):
            continue
        r.check_keys(entries, PROVIDER_PARAMS, what)
        values = r.fields(entries, PROVIDER_PARAMS, what, value)
        _check_url(r, entries, values, "base_url", what)
        _check_range(r, entries, values, "requests_per_second", what, 0.01, 1000)
        _check_range(r, entries, values, "max_concurrency", what, 1, 1000)
        _check_range(r, entries, values, "max_response_mib", what, 1, 1024)
        values["base_url"] = values.get("base_url", DEFAULT_BASE_URLS[name]).rstrip("/")
        if not r.issues:
            out[name] = _make(ProviderConfig, values, name=name)
    return out


def _channels(r: Reader, node: Node | None) -> dict[str, ChannelConfig | None]:
    """Channel id → config (None when invalid, so rules may still name it)."""
    out: dict[str, ChannelConfig | None] = {}
    for cid, key_node, value in _section(r, node, "channels", mapping=True):
        what = f"channel '{cid}'"
        out[cid] = None
        _check_id(r, key_node, cid, "channel id")
        entries = r.mapping(value, what, "a mapping with 'type' and its settings")
        if not isinstance(value, MappingNode):
            continue
        ctype = _kind(r, entries, "type", CHANNEL_TYPES, what, value, "channel type")
        if ctype is None:
            continue
        params = {**CHANNEL_COMMON, **CHANNEL_TYPES[ctype].params}
        hint = _elsewhere(CHANNEL_TYPES, "channel type")
        r.check_keys(entries, params, f"{what} (type: {ctype})", hint)
        values = r.fields(entries, params, what, value, skip=("type",))
        _check_url(r, entries, values, "url", what)
        _check_url(r, entries, values, "base_url", what)
        if "headers" in entries and isinstance(entries["headers"][1], MappingNode):
            _check_headers(r, entries["headers"][1], values.get("headers") or {}, what)
        if ctype == "telegram" and values.get("base_url", "").endswith("/"):
            r.issue(
                entries["base_url"][1],
                f"'base_url' in {what} must not end with '/': the bot token is appended "
                "directly, e.g. https://api.telegram.org/bot",
            )
        if not r.issues:
            out[cid] = _make(ChannelConfig, values, id=cid, type=ctype)
    return out


def _check_range(
    r: Reader, entries: Entries, values: Mapping[str, Any], key: str, what: str, lo, hi
) -> None:
    """Bounds a value must keep to be usable at run time (a rate of 1e-10 a second would
    wait for ever; a billion connections would exhaust the machine)."""
    value = values.get(key)
    if value is not None and not lo <= value <= hi:
        r.issue(entries[key][1], f"'{key}' in {what} must be between {lo:g} and {hi:g}")


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_HEADER_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but tab: no CR/LF injection
_OUR_HEADERS = {"content-type", "x-watcher-signature", "x-watcher-timestamp"}


def _check_headers(r: Reader, node: MappingNode, resolved: Mapping[str, str], what: str) -> None:
    """Header names and values that an HTTP client would refuse at send time (or that would
    split the request) are config errors now, not a failed delivery at 3 a.m."""
    for key_node, value_node in node.value:
        name = str(key_node.value)
        if not _HEADER_NAME.match(name):
            r.issue(key_node, f"header name {name!r} in {what} is not a valid HTTP header name")
        elif name.lower() in _OUR_HEADERS:
            r.issue(key_node, f"header '{name}' in {what} is set by watcher; remove it")
        value = resolved.get(name, value_node.value if isinstance(value_node, ScalarNode) else "")
        if _HEADER_BAD.search(str(value)):
            r.issue(
                value_node,
                f"the value of header '{name}' in {what} contains a control character "
                "(a line break or NUL cannot be sent in a header)",
            )


def _watches(
    r: Reader, node: Node | None, providers: Mapping[str, Any]
) -> tuple[dict[str, WatchConfig], _Known]:
    """Valid watches by id, and every id named (with its type) for rule references."""
    built: dict[str, WatchConfig] = {}
    known: _Known = {}
    items = _section(r, node, "watches", mapping=False)
    if not items and (node is None or isinstance(node, SequenceNode) or r.is_null(node, "")):
        r.issue(
            node, "no watches defined; add at least one under 'watches' (see rules.example.yaml)"
        )
    for index, item in enumerate(items, 1):
        what = f"watch #{index}"
        entries = r.mapping(item, what, "a mapping like '- id: my-watch'")
        if not isinstance(item, MappingNode):
            continue
        wid = _id(r, entries, item, what, "watch", WATCH_COMMON["id"])
        what = f"watch '{wid}'" if wid else what
        line = item.start_mark.line + 1
        wtype = _kind(r, entries, "type", WATCH_TYPES, what, item, "watch type")
        if wid in known:
            r.issue(
                entries["id"][1],
                f"duplicate watch id '{wid}' (first at line {known[wid][1]}); "
                "every watch id must be unique",
            )
        elif wid:
            known[wid] = (wtype, line)
        if wtype is None:  # still check the keys every type shares (every, max_pages, ...)
            r.fields(entries, _SHARED_WATCH_PARAMS, what, item)
            continue
        wt = WATCH_TYPES[wtype]
        params = {**WATCH_COMMON, **wt.params}
        hint = _elsewhere(WATCH_TYPES, "watch type")
        r.check_keys(entries, params, f"{what} (type: {wtype})", hint)
        values = r.fields(entries, params, what, item, skip=("id", "type"))
        schedule = [k for k in ("every", "cron") if _present(r, entries, k, what)]
        if len(schedule) == 2:
            r.issue(entries["cron"][0], f"{what} sets both 'every' and 'cron'; keep exactly one")
        elif not schedule:
            r.issue(
                item,
                f"{what} has no schedule; add 'every' (e.g. every: 15m) "
                "or 'cron' (e.g. cron: \"*/15 * * * *\")",
            )
        _one_of(r, entries, wt.one_of, f"{what} ({wtype})", item)
        if wt.provider not in providers:
            r.issue(
                entries["type"][1],
                f"{what} has type {wtype}, which needs the '{wt.provider}' provider; "
                f"add it under 'providers' with its api_key",
            )
        if not r.issues and wid not in built:
            built[wid] = _make(WatchConfig, values, id=wid, type=wtype, line=line)
    return built, known


def _refs(
    r: Reader, node: Node, ids: tuple[str, ...], what: str, defined: Mapping[str, Any], noun: str
) -> list[tuple[str, Node]]:
    """The listed ids that exist, with their nodes; reports the others and an empty list."""
    key = "notify" if noun == "channel" else "watches"
    items = list(zip(ids, node.value, strict=True))
    if not items:
        r.issue(node, f"{what}: '{key}' is empty; list at least one {noun} id")
    found = []
    for text, item in items:
        if text in defined:
            found.append((text, item))
            continue
        label = f"defined {'channels' if noun == 'channel' else 'watches'}"
        r.issue(item, f"{what} names unknown {noun} '{text}'{options(text, defined, label=label)}")
    return found


def _rules(
    r: Reader, node: Node | None, watches: _Known, channels: Mapping[str, Any]
) -> dict[str, RuleConfig]:
    """Valid rules by id; every reference to a watch or channel is checked."""
    built: dict[str, RuleConfig] = {}
    lines: dict[str, int] = {}
    for index, item in enumerate(_section(r, node, "rules", mapping=False), 1):
        what = f"rule #{index}"
        entries = r.mapping(item, what, "a mapping like '- id: my-rule'")
        if not isinstance(item, MappingNode):
            continue
        rid = _id(r, entries, item, what, "rule", RULE_COMMON["id"])
        what = f"rule '{rid}'" if rid else what
        if rid in lines:
            r.issue(
                entries["id"][1],
                f"duplicate rule id '{rid}' (first at line {lines[rid]}); "
                "every rule id must be unique",
            )
        elif rid in watches:
            r.issue(
                entries["id"][1],
                f"rule id '{rid}' is also the id of the watch at line {watches[rid][1]}; "
                "watch and rule ids share one namespace (/subscribe takes either): rename one",
            )
        if rid:
            lines.setdefault(rid, item.start_mark.line + 1)
        when = _kind(r, entries, "when", RULE_KINDS, what, item, "rule kind")
        kind = RULE_KINDS.get(when or "")
        params = {**RULE_COMMON, **(kind.params if kind else {})}
        if kind:
            hint = _elsewhere(RULE_KINDS, "rule kind")
            r.check_keys(entries, params, f"{what} (when: {when})", hint)
        values = r.fields(entries, params, what, item, skip=("id", "when"))
        if kind:
            _one_of(r, entries, kind.one_of, f"{what} ({when})", item)
        if "notify" in values:
            _refs(r, entries["notify"][1], values["notify"], what, channels, "channel")
        if "watches" in values:
            for wid, item_node in _refs(
                r, entries["watches"][1], values["watches"], what, watches, "watch"
            ):
                wtype = watches[wid][0]
                allowed_types = kind.watch_types if kind else None
                if allowed_types is not None and wtype is not None and wtype not in allowed_types:
                    types = ", ".join(t for t in WATCH_TYPES if t in allowed_types)
                    r.issue(
                        item_node,
                        f"{what} ({when}) names watch '{wid}' of type {wtype}; "
                        f"{when} applies only to watches of type {types}",
                    )
        if "match" in values:
            values["match"] = _match(r, values["match"], what, entries["match"][1])
        if not r.issues and kind and rid not in built:
            given = {k: values.pop(k) for k in kind.params if k in values}
            built[rid] = _make(
                RuleConfig, values, id=rid, when=kind.name, params=kind.settings(given)
            )
    return built


def _match(r: Reader, entries: Entries, what: str, node: Node) -> MatchConfig:
    """The product filter of a rule; min_price must not exceed max_price."""
    what = f"'match' of {what}"
    r.check_keys(entries, MATCH_PARAMS, what)
    values = r.fields(entries, MATCH_PARAMS, what, node)
    low, high = values.get("min_price"), values.get("max_price")
    if low is not None and high is not None and low > high:
        r.issue(
            entries["min_price"][1],
            f"{what}: min_price {low} is greater than max_price {high}; "
            "min_price must be <= max_price",
        )
    return _make(MatchConfig, values)
