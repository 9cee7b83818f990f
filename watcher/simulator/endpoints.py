"""The four upstream endpoints: request parameters + world → response body.

Validation follows the api-docs constraints (required ``url``/``query``, Social Fetch's
region enum, 1-based pages, KeyAPI's ``limit`` 1..20 with larger values treated as 20).
A problem the client caused raises ``ApiError(400)``; a watch the world marks ``failing``
raises ``ApiError(status)``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import payloads as pl
from .world import World

SF_REGIONS = frozenset(
    (
        "US",
        "GB",
        "DE",
        "FR",
        "IT",
        "ID",
        "MY",
        "MX",
        "PH",
        "SG",
        "ES",
        "TH",
        "VN",
        "BR",
        "JP",
        "IE",
    )
)
KEYAPI_MAX_LIMIT = 20
KEYAPI_PRICE = 2  # credits per request (docs)
_HANDLE_RE = re.compile(r"^@?[A-Za-z0-9._]{1,64}$")
_BEARER_RE = re.compile(r"^bearer\s+\S+", re.IGNORECASE)

Params = Mapping[str, str]


class ApiError(Exception):
    """The request gets the provider's error envelope with ``status``."""

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream route and how it authenticates, pages, fails and renders."""

    name: str  # store | showcase | search | top_products
    path: str  # aiohttp route pattern
    provider: str  # socialfetch | keyapi
    render: Callable[[World, Params, str, int], dict[str, Any]]

    @property
    def keyapi(self) -> bool:
        return self.provider == "keyapi"

    def new_request_id(self) -> str:
        return str(uuid.uuid4()) if self.keyapi else f"req_{uuid.uuid4().hex}"

    def authorised(self, headers: Mapping[str, str]) -> bool:
        if self.keyapi:
            return bool(_BEARER_RE.match(headers.get("Authorization", "").strip()))
        return bool(headers.get("x-api-key", "").strip())

    def error_body(self, status: int, request_id: str, message: str | None = None) -> Any:
        if self.keyapi:
            return pl.keyapi_error(status, message)
        return pl.sf_error(status, request_id, message)

    def credits(self, status: int) -> int:
        """Documented prices: Social Fetch 1 for a 200 or 502, KeyAPI 2 for a 200."""
        if self.keyapi:
            return KEYAPI_PRICE if status == 200 else 0
        return 1 if status in (200, 502) else 0

    def page_of(self, params: Params, page_size: int) -> int | None:
        """The 1-based page a request asks for (for fault matching); None if unreadable."""
        try:
            if self.keyapi or self.name == "search":
                return int(params.get("page") or 1)
            cursor = params.get("cursor")
            return 1 if cursor is None else pl.decode_cursor(cursor)[0] // page_size + 1
        except ValueError:
            return None


def store_page(world: World, params: Params, rid: str, page_size: int) -> dict[str, Any]:
    url = _required(params, "url", 4096)
    _sf_region(params)
    cursor = _cursor(params)
    store = world.find_store(url)
    if store is None or store.not_found:
        return pl.sf_ok(
            {
                "lookupStatus": "not_found",
                "shop": None,
                "products": [],
                "page": {"nextCursor": None, "hasMore": False},
            },
            rid,
        )
    if store.failing:
        raise ApiError(store.failing)
    listed = store.listed()
    chunk, next_cursor = _cursor_page(listed, cursor, page_size, pl.store_cursor)
    return pl.sf_ok(
        {
            "lookupStatus": "found",
            "shop": pl.shop_json(store.shop, len(listed)),
            "products": [pl.card(p, style="store") for p in chunk],
            "page": {"nextCursor": next_cursor, "hasMore": next_cursor is not None},
        },
        rid,
    )


def showcase_page(world: World, params: Params, rid: str, page_size: int) -> dict[str, Any]:
    handle = params["handle"]
    if not _HANDLE_RE.match(handle):
        raise ApiError(400, f"Invalid handle: {handle!r}")
    if params.get("region") == "":
        raise ApiError(400, "Query parameter 'region' must not be empty")
    cursor = _cursor(params)
    showcase = world.find_showcase(handle)
    if showcase is not None and showcase.failing:
        raise ApiError(showcase.failing)
    listed = showcase.listed() if showcase is not None else []
    chunk, next_cursor = _cursor_page(listed, cursor, page_size, pl.showcase_cursor)
    return pl.sf_ok(
        {
            "products": [pl.showcase_item(p) for p in chunk],
            "page": {"nextCursor": next_cursor, "hasMore": next_cursor is not None},
        },
        rid,
    )


def search_page(world: World, params: Params, rid: str, page_size: int) -> dict[str, Any]:
    query = _required(params, "query", 512)
    page = _positive_int(params, "page", 1)
    _sf_region(params)
    search = world.find_search(query)
    if search is not None and search.failing:
        raise ApiError(search.failing)
    listed = search.listed() if search is not None else []
    start = (page - 1) * page_size
    chunk = listed[start : start + page_size]
    has_more = start + page_size < len(listed)
    return pl.sf_ok(
        {
            "query": query,
            "totalProducts": len(listed),
            "products": [pl.card(p, style="search") for p in chunk],
            "page": {
                "currentPage": page,
                "nextPage": page + 1 if has_more else None,
                "hasMore": has_more,
            },
        },
        rid,
    )


def top_page(world: World, params: Params, rid: str, page_size: int) -> dict[str, Any]:
    """KeyAPI pages by its own ``limit`` (default and maximum 20), not ``page_size``."""
    page = _positive_int(params, "page", 1)
    limit = min(_positive_int(params, "limit", KEYAPI_MAX_LIMIT), KEYAPI_MAX_LIMIT)
    keyword = params.get("search_keyword") or None
    view = world.top_rows(
        params.get("ecom_category_id") or None, None if keyword == "FALSE" else keyword
    )
    if view.failing:
        raise ApiError(view.failing)
    chunk = view.rows[(page - 1) * limit : page * limit]
    return pl.keyapi_ok(
        [pl.keyapi_row(r) for r in chunk],
        page=page,
        size=limit,
        total=len(view.rows),
        request_id=rid,
    )


ENDPOINTS = (
    Endpoint("search", "/v1/tiktok/shop/products/search", "socialfetch", search_page),
    Endpoint("store", "/v1/tiktok/shop/products", "socialfetch", store_page),
    Endpoint(
        "showcase", "/v1/tiktok/profiles/{handle}/showcase-products", "socialfetch", showcase_page
    ),
    Endpoint("top_products", "/v1/tiktok/insights/products", "keyapi", top_page),
)


def _cursor_page(
    listed: list[Any],
    cursor: tuple[int, str] | None,
    page_size: int,
    encode: Callable[[int, str], str],
) -> tuple[list[Any], str | None]:
    start = 0 if cursor is None else pl.resume_at([p.id for p in listed], *cursor)
    chunk = listed[start : start + page_size]
    end = start + len(chunk)
    return chunk, (encode(end, chunk[-1].id) if chunk and end < len(listed) else None)


def _required(params: Params, name: str, max_len: int) -> str:
    value = params.get(name)
    if not value:
        raise ApiError(400, f"Query parameter '{name}' is required")
    if len(value) > max_len:
        raise ApiError(400, f"Query parameter '{name}' is longer than {max_len} characters")
    return value


def _sf_region(params: Params) -> None:
    region = params.get("region")
    if region is not None and region not in SF_REGIONS:
        allowed = ", ".join(sorted(SF_REGIONS))
        raise ApiError(400, f"Query parameter 'region' must be one of {allowed}")


def _cursor(params: Params) -> tuple[int, str] | None:
    cursor = params.get("cursor")
    if cursor is None:
        return None
    try:
        return pl.decode_cursor(cursor)
    except ValueError:
        raise ApiError(400, "Query parameter 'cursor' is not a valid cursor") from None


def _positive_int(params: Params, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ApiError(400, f"Query parameter '{name}' must be a positive integer")
    return value
