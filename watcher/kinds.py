"""The registries the config loader validates against: watch types, channel types, providers.

Each kind is declared once, beside its behaviour: a watch type in its provider's module
(``watcher.sources``), a channel type in its channel's module (``watcher.channels``
registers them here), a provider in its own module, a rule kind in its module under
``watcher/rules/kinds/`` (``watcher.rules.RULE_KINDS``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from watcher import sources
from watcher.param import Param

# (channel id, rule id, watch id) -> the chat ids subscribed to that rule or watch there
Subscribers = Callable[[str, str | None, str | None], Iterable[int]]


@dataclass(frozen=True, slots=True)
class WatchType:
    name: str
    provider: str
    doc: str
    params: dict[str, Param]
    tracks_stock: bool
    one_of: tuple[str, ...] = ()  # at least one of these optional keys must be set

    @property
    def defining(self) -> tuple[str, ...]:
        """The keys that say *what* is watched (not when): changing one starts a new baseline."""
        return tuple(k for k in self.params if k not in _SCHEDULE)


_SCHEDULE = {
    "every": Param("duration", doc="poll interval, e.g. 15m (exactly one of every / cron)"),
    "cron": Param("cron", doc='5-field crontab, e.g. "*/15 * * * *"'),
    "max_pages": Param("positive_int", doc="upstream pages one poll may read (default 5)"),
    "missing_after": Param(
        "positive_int", doc="complete polls a product must be absent to count removed (default 2)"
    ),
    "notify_failures_after": Param(
        "positive_int", doc="consecutive failed polls before a watch_failing notice (default 3)"
    ),
}

# Every watch type is declared by its provider's module, beside how it is fetched
# (``watcher.sources``: keys, doc, paging, parser); here it gains the schedule keys.
WATCH_TYPES: dict[str, WatchType] = {
    name: WatchType(
        name,
        source.provider,
        source.doc,
        {**source.keys, **_SCHEDULE},
        tracks_stock=source.tracks_stock,
        one_of=source.one_of,
    )
    for name, source in sources.SOURCES.items()
}

# Every key that defines some watch type, in declaration order (``WatchConfig.definition``).
DEFINING_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(k for t in WATCH_TYPES.values() for k in t.defining)
)

WATCH_COMMON = {"id": Param("str", required=True), "type": Param("str", required=True)}


RULE_COMMON = {
    "id": Param("str", required=True),
    "when": Param("str", required=True),
    "notify": Param("str_list", required=True, doc="channel ids"),
    "watches": Param("str_list", doc="watch ids (default: every watch)"),
    "match": Param("map", doc="title regex, min_price, max_price, min_rating, product_ids"),
    "cooldown": Param("duration", doc="same rule+watch+product alerts at most once per (6h)"),
    "template": Param("str", doc="message text override"),
}

MATCH_PARAMS = {
    "title": Param("regex"),
    "min_price": Param("decimal"),
    "max_price": Param("decimal"),
    "min_rating": Param("decimal"),
    "product_ids": Param("str_list"),
}


def one_target(*_: Any) -> list[str]:
    """The channel is its own single target (a webhook URL, the console): target ""."""
    return [""]


@dataclass(frozen=True, slots=True)
class ChannelType:
    """A channel type: its config keys, its one-line doc and how it is built and routed.

    Each is defined in its own module of ``watcher.channels``, next to its class, and
    registered by ``watcher.channels`` with ``register_channel_type``. ``factory(config)``
    builds the channel (modules keep heavy imports inside it: loading the config stays fast).
    ``alert_targets(config, alert, subscribers)`` and ``notice_targets(config)`` say which
    targets of the channel receive a rule alert or a notice (``subscribers`` is the store's
    lookup of subscribed chats, or None). ``has_bot``: the channel's client also serves the
    command bot (``watcher.bot``). ``merges_per_product``: a person reads it, so the alerts of
    one product in one poll go to a target as one message listing each reason (Telegram, the
    console); a machine reads a webhook, which gets one body per alert. ``check(values,
    what)``, when set, finds what the value
    types cannot (an apprise URL no plugin reads) without sending anything: it yields
    ``(key, item index or None, message)`` and the loader reports each at that node.
    """

    name: str
    doc: str
    params: dict[str, Param]
    factory: Callable[..., Any] | None = None
    alert_targets: Callable[..., list[str]] = one_target
    notice_targets: Callable[..., list[str]] = one_target
    has_bot: bool = False
    merges_per_product: bool = False
    check: Callable[[dict[str, Any], str], Iterable[tuple[str, int | None, str]]] | None = None


DELIVERY_PARAMS = {
    "max_attempts": Param("positive_int", doc="deliveries before an alert is dead (default 8)"),
    "group_over": Param("positive_int", doc="more alerts than this per poll → one digest (5)"),
    "quiet_hours": Param("hhmm_range", doc='"23:00-07:00": hold alerts, then one digest'),
    "timezone": Param("timezone", doc="IANA zone for quiet_hours (default UTC)"),
}

# Filled by ``watcher.channels`` (which the config loader imports) from its modules' TYPEs.
CHANNEL_TYPES: dict[str, ChannelType] = {}


def register_channel_type(ctype: ChannelType) -> ChannelType:
    """Declare a channel type under its name (one module per type)."""
    CHANNEL_TYPES[ctype.name] = ctype
    return ctype


CHANNEL_COMMON = {"type": Param("str", required=True)}  # channels are a map keyed by id

PROVIDER_PARAMS = {
    "api_key": Param("str", required=True),
    "base_url": Param("str"),
    "max_concurrency": Param("positive_int", doc="in-flight requests (default 4)"),
    "requests_per_second": Param("positive_number", doc="rate limit (default 5)"),
    "daily_credit_budget": Param("positive_int", doc="credits per UTC day, then polls stop"),
    "max_response_mib": Param(
        "positive_int", doc="largest page body accepted, after decompression (default 16)"
    ),
}
PROVIDERS = tuple(sources.PROVIDERS)  # registered in watcher.sources, one module each
