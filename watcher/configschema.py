"""The config schema: the frozen dataclasses ``load_config`` builds (spec section 2).

Every field of a watch, channel and provider is a key declared in ``watcher.kinds``; a
rule's kind parameters are declared by its kind (``watcher.rules``) and arrive as
``RuleConfig.params``. Plain data: nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from watcher.kinds import DEFINING_KEYS, WATCH_TYPES


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
    type: str  # "telegram" | "webhook" | "apprise" | "console"
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
    max_tracks_per_chat: int = 50  # /track targets one chat may hold
    # apprise (``timeout`` too)
    urls: tuple[str, ...] = ()
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
        return WATCH_TYPES[self.type].provider

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
