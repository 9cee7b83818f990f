"""Checks the config sections share: ids, kind names, references, URLs, ranges, headers.

Each records issues on the ``Reader`` at the node concerned and returns what is usable;
``watcher.config`` composes them into the sections of the schema.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.configload import ID_ALLOWED, ID_RE, Reader, options
from watcher.configtypes import Entries
from watcher.errors import ConfigIssue
from watcher.kinds import Param

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_HEADER_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but tab: no CR/LF injection
_OUR_HEADERS = {"content-type", "x-watcher-signature", "x-watcher-timestamp"}


def make(cls: type, values: Mapping[str, Any], **fixed: Any) -> Any:
    """A config dataclass from the keys that are set; the rest keep their defaults.

    Called only while no issue has been found, so every required key is present.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **fixed)


def check_id(r: Reader, node: Node, value: str, noun: str) -> None:
    if not ID_RE.match(value):
        r.issue(
            node,
            f"invalid {noun} '{value}': use only {ID_ALLOWED} (ids are typed in bot commands)",
        )


def read_id(r: Reader, entries: Entries, owner: Node, what: str, noun: str, param: Param) -> str:
    """The item's ``id`` ('' if missing or invalid; the issue is recorded)."""
    if "id" not in entries:
        r.issue(owner, f"{what} is missing required key 'id' (a unique name: {ID_ALLOWED})")
        return ""
    node = entries["id"][1]
    value = r.value(node, param, f"'id' in {what}")
    if value is None:
        return ""
    check_id(r, node, value, f"{noun} id")
    return value


def kind_name(
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


def elsewhere(table: Mapping[str, Any], noun: str) -> Callable[[str], str]:
    """A hint for a key that belongs to another type or kind, e.g. 'query' on a store."""

    def hint(key: str) -> str:
        owners = [name for name, kind in table.items() if key in kind.params]
        return f"'{key}' belongs to {noun} {', '.join(owners)}." if owners else ""

    return hint


def check_url(r: Reader, entries: Entries, values: dict[str, Any], key: str, what: str) -> None:
    url = values.get(key)
    if url is not None and not url.startswith(("http://", "https://")):
        r.issue(
            entries[key][1], f"'{key}' in {what} must be an http:// or https:// URL, got '{url}'"
        )


def present(r: Reader, entries: Entries, key: str, what: str) -> bool:
    """The key is there with a value (``every:`` alone is not a schedule)."""
    return key in entries and not r.is_null(entries[key][1], f"'{key}' in {what}")


def one_of(r: Reader, entries: Entries, keys: tuple[str, ...], what: str, owner: Node) -> None:
    if keys and not any(present(r, entries, k, what) for k in keys):
        r.issue(owner, f"{what} needs at least one of: {', '.join(keys)}")


def check_range(
    r: Reader, entries: Entries, values: Mapping[str, Any], key: str, what: str, lo, hi
) -> None:
    """Bounds a value must keep to be usable at run time (a rate of 1e-10 a second would
    wait for ever; a billion connections would exhaust the machine)."""
    value = values.get(key)
    if value is not None and not lo <= value <= hi:
        r.issue(entries[key][1], f"'{key}' in {what} must be between {lo:g} and {hi:g}")


def check_headers(r: Reader, node: MappingNode, resolved: Mapping[str, str], what: str) -> None:
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


def refs(
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


# -- warnings: a valid config that likely does not do what was meant ----------------------

# a store's public URL, as Social Fetch's store endpoint takes it:
# https://www.tiktok.com/shop/store/<name>/<shop id> (the shop id may be left out)
_STORE_URL = re.compile(
    r"https?://(?:(?:www|m|shop)\.)?tiktok\.com/shop/store/[^/?#\s]+(?:/\d+)?/?(?:[?#]\S*)?",
    re.IGNORECASE,
)
# keys whose value is a credential: written literally, anyone who can read the file has it
_SECRET_KEYS = {"providers": ("api_key",), "channels": ("token", "secret")}
_SECRET_HEADER = re.compile(r"auth|key|token|secret|password", re.IGNORECASE)


def config_warnings(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> list[ConfigIssue]:
    """``file:line:col: warning: …`` issues of a config that loads (``load_config`` passed):
    no rules, no channels, a store ``url`` that is no TikTok Shop store URL, a credential
    written literally in a file that others may read. Never raises; values from the
    environment are never shown."""
    file = os.fsdecode(path)
    r = Reader(file, os.environ if env is None else env, ())
    try:
        root = r.load()
        if isinstance(root, MappingNode):
            _warn(r, root, _readable_by_others(file))
    except Exception:  # the file passed load_config: a warning is never worth a failure
        return []
    return [dataclasses.replace(i, message=f"warning: {i.message}") for i in r.sorted_issues()]


def _readable_by_others(file: str) -> str | None:
    """The file's mode (``0644``) when its group or others may read it, else None."""
    try:
        mode = os.stat(file).st_mode & 0o777
    except OSError:
        return None
    return f"{mode:04o}" if mode & 0o044 else None


def _warn(r: Reader, root: MappingNode, readable: str | None) -> None:
    top = r.mapping(root, "the config file")

    def items(name: str) -> list[tuple[str, MappingNode]]:
        node = top[name][1] if name in top else None
        if isinstance(node, MappingNode):
            return [(str(k.value), v) for k, v in node.value if isinstance(v, MappingNode)]
        if isinstance(node, SequenceNode):
            return [("", v) for v in node.value if isinstance(v, MappingNode)]
        return []

    for name, noun, consequence in (
        ("rules", "rules", "watches are polled and stored, but no alert fires"),
        ("channels", "channels", "alerts have nowhere to go"),
    ):
        if not items(name):
            where = top[name][0] if name in top else None
            r.issue(where, f"no {noun} defined: {consequence} (see rules.example.yaml)")
    for _, watch in items("watches"):
        _check_store_url(r, watch)
    if readable is None:
        return
    for section, keys in _SECRET_KEYS.items():
        for name, item in items(section):
            entries = r.mapping(item, "")
            what = f"{section[:-1]} '{name}'"
            for key in keys:
                if key in entries:
                    where = f"'{key}' of {what}"
                    _check_literal(r, entries[key][1], where, _var(name, key), readable)
            urls = entries.get("urls", (None, None))[1]
            if section == "channels" and isinstance(urls, SequenceNode):
                for n, url_node in enumerate(urls.value):  # apprise: tokens live in the URL
                    if isinstance(url_node, ScalarNode) and _holds_secret(url_node.value):
                        where = f"url {n + 1} of {what}"
                        _check_literal(r, url_node, where, _var(name, f"url_{n + 1}"), readable)
            headers = entries.get("headers", (None, None))[1]
            if section == "channels" and isinstance(headers, MappingNode):
                for key_node, value_node in headers.value:
                    if _SECRET_HEADER.search(str(key_node.value)):
                        where = f"header '{key_node.value}' of {what}"
                        var = _var(name, str(key_node.value))
                        _check_literal(r, value_node, where, var, readable)


def _check_store_url(r: Reader, watch: MappingNode) -> None:
    entries = r.mapping(watch, "")
    if "type" not in entries or "url" not in entries:
        return
    kind = r.scalar(entries["type"][1], "")
    url = r.scalar(entries["url"][1], "")
    if kind is None or kind[0] != "store" or url is None or _STORE_URL.fullmatch(url[0].strip()):
        return
    wid = r.scalar(entries["id"][1], "") if "id" in entries else None
    what = f"watch '{wid[0]}'" if wid else "a watch"
    if re.search(r"tiktok\.com/@", url[0]):
        hint = "; a creator's profile is a showcase watch (type: showcase, handle: …)"
    elif "/shop/pdp/" in url[0] or "/product/" in url[0]:
        hint = "; that is one product's page: watch its store, or a search for it"
    else:
        hint = ""
    r.issue(
        entries["url"][1],
        f"'url' of {what} is not a TikTok Shop store URL (like "
        f"https://www.tiktok.com/shop/store/<name>/<shop id>): upstream will not find the "
        f"store{hint}",
    )


def _holds_secret(url: str) -> bool:
    """Whether an apprise URL carries a credential: apprise itself says so, by masking it
    in the URL it prints for privacy (a token, a password); without apprise, a password."""
    if "${" in url:
        return False
    try:
        import apprise
    except ImportError:
        return bool(re.match(r"^[^:/]+://[^/@]*:[^/@]*@", url))
    plugin = apprise.Apprise.instantiate(url.strip(), suppress_exceptions=True)
    return plugin is not None and plugin.url(privacy=True) != plugin.url()


def _var(*parts: str) -> str:
    """A variable name to suggest: ``SOCIALFETCH_API_KEY``, ``ALERTS_TOKEN``."""
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(parts).upper()).strip("_") or "SECRET"


def _check_literal(r: Reader, node: Node, what: str, var: str, mode: str) -> None:
    """A credential written in the file itself (not ``${VAR}``) of a file others can read."""
    if not isinstance(node, ScalarNode) or "${" in node.value or not node.value.strip():
        return
    r.issue(
        node,
        f"{what} is written in the file, which others can read (mode {mode}): write "
        f"${{{var}}} and set {var} in the environment, or make the file private "
        f"(chmod 600 {r.file})",
    )
