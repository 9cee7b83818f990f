"""YAML config → validated, frozen config objects, with file:line:column errors.

``load_config(path, env=None)`` returns a ``Config`` or raises ``ConfigError`` carrying
*every* issue found (spec section 2). The keys and value types of every watch type and
channel type come from ``watcher.kinds``, those of every rule kind from ``watcher.rules``;
this module builds the sections of the schema (``configschema``) from them and adds the
checks that span keys and sections (schedules, references, id namespaces; the shared ones
are ``configcheck``). The reader: ``configload`` (YAML, structure), ``configvalues``
(positions, issues, ``${VAR}``) and ``configtypes`` (one converter per value type).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from yaml.nodes import MappingNode, Node, SequenceNode

import watcher.channels  # noqa: F401  (registers the channel types in kinds.CHANNEL_TYPES)
from watcher import sources
from watcher.configcheck import (
    check_headers,
    check_id,
    check_range,
    check_url,
    elsewhere,
    kind_name,
    make,
    one_of,
    present,
    read_id,
    refs,
)
from watcher.configload import Reader, options
from watcher.configschema import (
    ChannelConfig,
    Config,
    MatchConfig,
    ProviderConfig,
    RuleConfig,
    WatchConfig,
)
from watcher.configtypes import Entries
from watcher.errors import ConfigError
from watcher.kinds import (
    CHANNEL_COMMON,
    CHANNEL_TYPES,
    MATCH_PARAMS,
    PROVIDER_PARAMS,
    PROVIDERS,
    RULE_COMMON,
    WATCH_COMMON,
    WATCH_TYPES,
    Param,
)
from watcher.rules import RULE_KINDS

# provider facts live in their modules (watcher.sources.socialfetch, watcher.sources.keyapi)
SOCIALFETCH_REGIONS = sources.PROVIDERS["socialfetch"].regions
DEFAULT_BASE_URLS = {name: p.base_url for name, p in sources.PROVIDERS.items()}

# watch type → provider name (declared in kinds.py)
WATCH_PROVIDERS = {name: t.provider for name, t in WATCH_TYPES.items()}


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


def _section(r: Reader, node: Node | None, name: str, mapping: bool) -> list[Any]:
    """The entries of a section; an absent or null section is empty."""
    if node is None or r.is_null(node, f"'{name}'"):
        return []
    if mapping:
        entries = r.mapping(node, f"section '{name}'", _SECTIONS[name])
        return [(key, kn, vn) for key, (kn, vn) in entries.items()]
    return r.sequence(node, f"section '{name}'", _SECTIONS[name]) or []


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
        check_url(r, entries, values, "base_url", what)
        check_range(r, entries, values, "requests_per_second", what, 0.01, 1000)
        check_range(r, entries, values, "max_concurrency", what, 1, 1000)
        check_range(r, entries, values, "max_response_mib", what, 1, 1024)
        values["base_url"] = values.get("base_url", DEFAULT_BASE_URLS[name]).rstrip("/")
        if not r.issues:
            out[name] = make(ProviderConfig, values, name=name)
    return out


def _channels(r: Reader, node: Node | None) -> dict[str, ChannelConfig | None]:
    """Channel id → config (None when invalid, so rules may still name it)."""
    out: dict[str, ChannelConfig | None] = {}
    for cid, key_node, value in _section(r, node, "channels", mapping=True):
        what = f"channel '{cid}'"
        out[cid] = None
        known_issues = len(r.issues)
        check_id(r, key_node, cid, "channel id")
        entries = r.mapping(value, what, "a mapping with 'type' and its settings")
        if not isinstance(value, MappingNode):
            continue
        ctype = kind_name(r, entries, "type", CHANNEL_TYPES, what, value, "channel type")
        if ctype is None:
            continue
        params = {**CHANNEL_COMMON, **CHANNEL_TYPES[ctype].params}
        hint = elsewhere(CHANNEL_TYPES, "channel type")
        r.check_keys(entries, params, f"{what} (type: {ctype})", hint)
        values = r.fields(entries, params, what, value, skip=("type",))
        check_url(r, entries, values, "url", what)
        check_url(r, entries, values, "base_url", what)
        if "headers" in entries and isinstance(entries["headers"][1], MappingNode):
            check_headers(r, entries["headers"][1], values.get("headers") or {}, what)
        if ctype == "telegram" and values.get("base_url", "").endswith("/"):
            r.issue(
                entries["base_url"][1],
                f"'base_url' in {what} must not end with '/': the bot token is appended "
                "directly, e.g. https://api.telegram.org/bot",
            )
        check = CHANNEL_TYPES[ctype].check
        if check is not None and len(r.issues) == known_issues:  # its values are sound
            for key, index, message in check(values, what):
                at = entries[key][1] if key in entries else value
                if index is not None and isinstance(at, SequenceNode) and index < len(at.value):
                    at = at.value[index]
                r.issue(at, message)
        if not r.issues:
            out[cid] = make(ChannelConfig, values, id=cid, type=ctype)
    return out


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
        wid = read_id(r, entries, item, what, "watch", WATCH_COMMON["id"])
        what = f"watch '{wid}'" if wid else what
        line = item.start_mark.line + 1
        wtype = kind_name(r, entries, "type", WATCH_TYPES, what, item, "watch type")
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
        hint = elsewhere(WATCH_TYPES, "watch type")
        r.check_keys(entries, params, f"{what} (type: {wtype})", hint)
        values = r.fields(entries, params, what, item, skip=("id", "type"))
        schedule = [k for k in ("every", "cron") if present(r, entries, k, what)]
        if len(schedule) == 2:
            r.issue(entries["cron"][0], f"{what} sets both 'every' and 'cron'; keep exactly one")
        elif not schedule:
            r.issue(
                item,
                f"{what} has no schedule; add 'every' (e.g. every: 15m) "
                "or 'cron' (e.g. cron: \"*/15 * * * *\")",
            )
        one_of(r, entries, wt.one_of, f"{what} ({wtype})", item)
        if wt.provider not in providers:
            r.issue(
                entries["type"][1],
                f"{what} has type {wtype}, which needs the '{wt.provider}' provider; "
                f"add it under 'providers' with its api_key",
            )
        if not r.issues and wid not in built:
            built[wid] = make(WatchConfig, values, id=wid, type=wtype, line=line)
    return built, known


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
        rid = read_id(r, entries, item, what, "rule", RULE_COMMON["id"])
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
        when = kind_name(r, entries, "when", RULE_KINDS, what, item, "rule kind")
        kind = RULE_KINDS.get(when or "")
        params = {**RULE_COMMON, **(kind.params if kind else {})}
        if kind:
            hint = elsewhere(RULE_KINDS, "rule kind")
            r.check_keys(entries, params, f"{what} (when: {when})", hint)
        values = r.fields(entries, params, what, item, skip=("id", "when"))
        if kind:
            one_of(r, entries, kind.one_of, f"{what} ({when})", item)
        if "notify" in values:
            refs(r, entries["notify"][1], values["notify"], what, channels, "channel")
        if "watches" in values:
            for wid, item_node in refs(
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
            built[rid] = make(
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
    return make(MatchConfig, values)


__all__ = [
    "DEFAULT_BASE_URLS",
    "SOCIALFETCH_REGIONS",
    "WATCH_PROVIDERS",
    "ChannelConfig",
    "Config",
    "MatchConfig",
    "ProviderConfig",
    "RuleConfig",
    "WatchConfig",
    "load_config",
]
