"""YAML config → validated, frozen config objects, with file:line:column errors.

CONTRACT (the loader below these types is being written): ``load_config(path, env=None)``
returns a ``Config`` or raises ``ConfigError`` carrying *every* issue found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

SOCIALFETCH_REGIONS = (
    "US", "GB", "DE", "FR", "IT", "ID", "MY", "MX",
    "PH", "SG", "ES", "TH", "VN", "BR", "JP", "IE",
)  # fmt: skip

DEFAULT_BASE_URLS = {
    "socialfetch": "https://api.socialfetch.dev",
    "keyapi": "https://api.keyapi.ai",
}

# watch type → provider name
WATCH_PROVIDERS = {
    "store": "socialfetch",
    "showcase": "socialfetch",
    "search": "socialfetch",
    "top_products": "keyapi",
}


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str  # "socialfetch" | "keyapi"
    api_key: str
    base_url: str
    max_concurrency: int = 4
    requests_per_second: float = 5.0
    daily_credit_budget: int | None = None


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    id: str
    type: str  # "telegram" | "webhook" | "console"
    # webhook
    url: str | None = None
    secret: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: timedelta = timedelta(seconds=10)
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
        return self.type in ("store", "showcase")

    def definition(self) -> dict[str, Any]:
        """The fields whose change starts a new baseline (spec section 4)."""
        return {
            "type": self.type,
            "url": self.url,
            "handle": self.handle,
            "query": self.query,
            "category_id": self.category_id,
            "keyword": self.keyword,
            "time_scope": self.time_scope,
            "region": self.region,
        }


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
    # kind parameters (only those of the kind are set by the loader)
    min_percent: Decimal | None = None  # price_drop
    min_amount: Decimal | None = None  # price_drop
    target: Decimal | None = None  # price_below
    percent: int | None = None  # discount_at_least
    min_positions: int | None = None  # rank_jump
    top: int | None = None  # rank_jump
    window: timedelta = timedelta(days=30)  # lowest_price

    def applies_to(self, watch_id: str) -> bool:
        return self.watches is None or watch_id in self.watches


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    providers: dict[str, ProviderConfig]
    channels: dict[str, ChannelConfig]
    watches: dict[str, WatchConfig]
    rules: dict[str, RuleConfig]
