"""The simulated upstream world: what the fake APIs know at one step of a scenario.

Plain mutable objects, so a scenario script (or a test) can change the world in one line:
``world.stores[url].not_found = True``, ``world.showcases[h].private = True``,
``world.searches[q].failing = 503``. Rendering into upstream JSON lives in ``payloads``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from watcher.util import strip_handle

Script = Mapping[int, Callable[["World"], None]]
_SLUG_RE = re.compile(r"[^a-z0-9]+")


@dataclass
class Item:
    """One product; rendered as a store/search card or a showcase item by ``payloads``."""

    id: str
    title: str | None
    price: Decimal | None
    original: Decimal | None = None
    sold: int = 0
    reviews: int | None = None
    rating: float | None = None
    shop_id: str | None = None
    shop_name: str | None = None
    shop_logo: str | None = None
    has_image: bool = True
    description: str | None = None
    ship_from: str | None = None
    trust_label: str | None = None
    labels: tuple[tuple[str, int | None], ...] = ()
    slug: str | None = None  # search cards link to /shop/pdp/{slug}/{id}
    details: dict[str, Any] | None = None  # showcase-only extras

    def reprice(self, price: str, original: str | None = None) -> None:
        """Set a new price (and list price, when given) from decimal strings."""
        self.price = Decimal(price)
        if original is not None:
            self.original = Decimal(original)


class _Ordered:
    """A list of items (or rows) whose order is the upstream result order: rank = index + 1."""

    products: list[Item]

    def product(self, product_id: str) -> Item:
        """The item with that id; KeyError names it when it is not there."""
        for item in self.products:
            if item.id == product_id:
                return item
        raise KeyError(product_id)

    def add(self, item: Item, at: int | None = None) -> None:
        """Insert ``item`` at 0-based position ``at`` (default: the end)."""
        self.products.insert(len(self.products) if at is None else at, item)

    def remove(self, product_id: str) -> Item:
        item = self.product(product_id)
        self.products.remove(item)
        return item

    def move(self, product_id: str, rank: int) -> None:
        """Move a product to 1-based ``rank``; the ones in between shift down by one."""
        item = self.remove(product_id)
        self.products.insert(rank - 1, item)

    def rank_of(self, product_id: str) -> int:
        return [i.id for i in self.listed()].index(product_id) + 1

    def listed(self) -> list[Item]:
        return list(self.products)


@dataclass
class Shop:
    """Store header data (``data.shop`` of the store endpoint)."""

    id: str
    name: str
    logo_url: str | None
    store_url: str
    region: str = "US"
    rating: float | None = None
    sold: int | None = None
    reviews: int | None = None
    followers: int | None = None
    videos: int | None = None


@dataclass
class Store(_Ordered):
    """A TikTok Shop store; sold-out products are hidden from the listing, not deleted."""

    url: str
    shop: Shop
    products: list[Item]
    sold_out: set[str] = field(default_factory=set)
    not_found: bool = False  # answer lookupStatus not_found
    failing: int | None = None  # answer every page with this HTTP status

    def listed(self) -> list[Item]:
        return [p for p in self.products if p.id not in self.sold_out]

    def sell_out(self, product_id: str) -> None:
        self.product(product_id)
        self.sold_out.add(product_id)

    def restock(self, product_id: str) -> None:
        self.sold_out.discard(product_id)


@dataclass
class Showcase(_Ordered):
    """A creator's showcase; a private one answers an empty product list."""

    handle: str
    products: list[Item]
    private: bool = False
    failing: int | None = None

    def listed(self) -> list[Item]:
        return [] if self.private else list(self.products)


@dataclass
class Search(_Ordered):
    """Results of one search query, in relevance order."""

    query: str
    products: list[Item]
    failing: int | None = None


@dataclass(frozen=True)
class Category:
    """One level of KeyAPI's category tree (``first/second/third_ecom_category``)."""

    id: str
    value: str
    parent_id: str | None = None


@dataclass
class CategoryRow:
    """One KeyAPI top-products row: a category aggregate with engagement metrics."""

    first: Category
    second: Category | None
    third: Category | None
    url_title: str
    cover_url: str | None
    metrics: dict[str, int | float]

    @property
    def key(self) -> str:
        """The deepest category id present: the row's identity."""
        return (self.third or self.second or self.first).id

    @property
    def id(self) -> str:
        return self.key

    def in_category(self, category_id: str) -> bool:
        return any(c is not None and c.id == category_id for c in self.levels())

    def matches_keyword(self, keyword: str) -> bool:
        words = [self.url_title, *(c.value for c in self.levels() if c is not None)]
        return any(keyword.lower() in w.lower() for w in words)

    def levels(self) -> tuple[Category | None, ...]:
        return (self.first, self.second, self.third)


@dataclass
class Ranking(_Ordered):
    """The top-products ranking of one first-level category, best first (rows by ``key``)."""

    category_id: str
    rows: list[CategoryRow]
    failing: int | None = None

    @property
    def products(self) -> list[CategoryRow]:  # type: ignore[override]
        return self.rows


def store_key(url: str) -> str:
    """Normalise a store URL so equivalent spellings find the same store."""
    parts = urlsplit(url.strip())
    return f"{parts.netloc.lower()}{parts.path.rstrip('/')}"


def handle_key(handle: str) -> str:
    return strip_handle(handle).lower()


def query_key(query: str) -> str:
    return " ".join(query.lower().split())


@dataclass
class RankingView:
    """The rows one KeyAPI request selects, and the status to fail with (if any)."""

    rows: list[CategoryRow]
    failing: int | None = None


@dataclass
class World:
    """Everything upstream knows, keyed the way requests address it; advanced by ``step()``.

    ``stores`` by store URL, ``showcases`` by handle, ``searches`` by query, ``rankings`` by
    first-level ``ecom_category_id``. ``script`` maps a step number to the scenario's
    mutation for that step; during scripted steps every listed product also sells a few units.
    """

    seed: int
    stores: dict[str, Store] = field(default_factory=dict)
    showcases: dict[str, Showcase] = field(default_factory=dict)
    searches: dict[str, Search] = field(default_factory=dict)
    rankings: dict[str, Ranking] = field(default_factory=dict)
    script: Script = field(default_factory=dict)
    current_step: int = 0

    @property
    def last_step(self) -> int:
        """The last step that changes anything; later steps leave the world as it is."""
        return max(self.script, default=0)

    def step(self) -> int:
        """Advance one tick: sales move, then the scenario's change for this step applies."""
        self.current_step += 1
        if self.current_step <= self.last_step:
            self._sell(random.Random(f"{self.seed}:{self.current_step}"))
            action = self.script.get(self.current_step)
            if action is not None:
                action(self)
        return self.current_step

    def _sell(self, rng: random.Random) -> None:
        seen: set[str] = set()
        for item in self._listed_items():
            if item.id in seen:
                continue
            seen.add(item.id)
            item.sold += rng.randint(0, 60)
            if item.reviews is not None:
                item.reviews += rng.randint(0, 4)
        for ranking in self.rankings.values():
            for row in ranking.rows:
                row.metrics["post"] = int(row.metrics["post"]) + rng.randint(0, 90)
                row.metrics["impression"] = int(row.metrics["impression"]) + rng.randint(
                    0, 250_000
                )

    def _listed_items(self) -> Iterator[Item]:
        for group in (self.stores, self.showcases, self.searches):
            for holder in group.values():
                yield from holder.listed()

    # lookups used by the request handlers

    def find_store(self, url: str) -> Store | None:
        """The store a request's ``url`` names, by normalised URL or by trailing shop id."""
        key = store_key(url)
        tail = key.rsplit("/", 1)[-1]
        for store in self.stores.values():
            if store_key(store.url) == key or (tail.isdigit() and store.shop.id == tail):
                return store
        return None

    def find_showcase(self, handle: str) -> Showcase | None:
        wanted = handle_key(handle)
        return next((s for s in self.showcases.values() if handle_key(s.handle) == wanted), None)

    def find_search(self, query: str) -> Search | None:
        wanted = query_key(query)
        return next((s for s in self.searches.values() if query_key(s.query) == wanted), None)

    def top_rows(self, category_id: str | None, keyword: str | None) -> RankingView:
        """Rows for a KeyAPI request: filtered by category (any level) and keyword."""
        view = RankingView([])
        for ranking in self.rankings.values():
            rows = [r for r in ranking.rows if not category_id or r.in_category(category_id)]
            if keyword:
                rows = [r for r in rows if r.matches_keyword(keyword)]
            if rows and ranking.failing and view.failing is None:
                view.failing = ranking.failing
            view.rows.extend(rows)
        return view

    def summary(self) -> dict[str, Any]:
        """A JSON-able overview for ``GET /_sim/state``."""
        return {
            "stores": {
                url: {
                    "not_found": s.not_found,
                    "failing": s.failing,
                    "products": len(s.listed()),
                    "sold_out": sorted(s.sold_out),
                }
                for url, s in self.stores.items()
            },
            "showcases": {
                h: {"private": s.private, "failing": s.failing, "products": len(s.listed())}
                for h, s in self.showcases.items()
            },
            "searches": {
                q: {"failing": s.failing, "products": len(s.listed())}
                for q, s in self.searches.items()
            },
            "rankings": {
                c: {"failing": r.failing, "rows": len(r.rows)} for c, r in self.rankings.items()
            },
        }


def slugify(title: str) -> str:
    """TikTok-style URL slug of a product title."""
    return _SLUG_RE.sub("-", title.lower()).strip("-")[:80]
