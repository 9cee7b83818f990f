"""What each provider and watch type needs on the wire: the one place to add a source.

A ``SourceSpec`` turns a ``WatchConfig`` into path + query parameters for the first and the
next page and names the parser; a ``ProviderSpec`` knows the provider's auth header, its
documented price and how its envelope carries request ids, error messages and body status
codes. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from watcher.config import WatchConfig
from watcher.sources.normalise import (
    ParsedPage,
    parse_keyapi_page,
    parse_search_page,
    parse_showcase_page,
    parse_store_page,
)
from watcher.util import strip_handle

__all__ = [
    "KEYAPI_PAGE_SIZE",
    "PROVIDERS",
    "SOURCES",
    "ProviderSpec",
    "Request",
    "SourceSpec",
    "register_source",
]

KEYAPI_PAGE_SIZE = 20  # KeyAPI's maximum ``limit``

Params = dict[str, str]


@dataclass(frozen=True, slots=True)
class Request:
    """One page request: path below the provider's base URL and its query parameters."""

    path: str
    params: Params


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How one watch type is fetched and parsed.

    ``params`` returns the watch's own query parameters (omitting unset ones); every page
    request repeats them beside ``cursor`` or ``page`` (spec section 1).
    """

    watch_type: str
    provider: str
    paging: Literal["cursor", "page"]
    path: Callable[[WatchConfig], str]
    params: Callable[[WatchConfig], Params]
    parse: Callable[[Any], ParsedPage]

    def first_request(self, watch: WatchConfig) -> Request:
        """Cursor sources omit the cursor on the first page; numbered ones ask for page 1."""
        return self.next_request(watch, None if self.paging == "cursor" else 1)

    def next_request(self, watch: WatchConfig, next_token: str | int | None) -> Request:
        params = self.params(watch)
        if next_token is not None:
            params[self.paging] = str(next_token)
        return Request(self.path(watch), params)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Per-provider wire conventions (spec section 1, "Credits")."""

    name: str
    price: int  # documented credits per request, assumed by budget checks
    auth: Callable[[str], dict[str, str]]
    charge: Callable[[int | None], int]  # documented credits for an HTTP status (None: none)
    request_id: Callable[[Any], str | None]
    error_message: Callable[[Any], str | None]
    body_status: Callable[[Any], int | None]  # a failure status reported inside a 2xx body


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _get(body: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body


def _keyapi_code(body: Any) -> int | None:
    """KeyAPI's body ``code``: 0 is success; a non-zero int (or digit string) is a status."""
    code = _get(body, "code")
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int) or code == 0:
        return None
    return code


PROVIDERS: dict[str, ProviderSpec] = {
    "socialfetch": ProviderSpec(
        name="socialfetch",
        price=1,
        auth=lambda key: {"x-api-key": key},
        charge=lambda status: 1 if status in (200, 502) else 0,
        request_id=lambda body: _text(_get(body, "meta", "requestId")),
        error_message=lambda body: _text(_get(body, "error", "message")),
        body_status=lambda body: None,
    ),
    "keyapi": ProviderSpec(
        name="keyapi",
        price=2,
        auth=lambda key: {"Authorization": f"Bearer {key}"},
        charge=lambda status: 2,
        request_id=lambda body: _text(_get(body, "requestId")),
        error_message=lambda body: _text(_get(body, "message")),
        body_status=_keyapi_code,
    ),
}

SOURCES: dict[str, SourceSpec] = {}


def register_source(spec: SourceSpec) -> SourceSpec:
    """Add a watch type; its provider must be known and the name unused."""
    if spec.provider not in PROVIDERS:
        raise ValueError(f"source {spec.watch_type!r} names unknown provider {spec.provider!r}")
    if spec.watch_type in SOURCES:
        raise ValueError(f"source {spec.watch_type!r} is already registered")
    SOURCES[spec.watch_type] = spec
    return spec


def _present(**params: str | None) -> Params:
    """Drop unset parameters: upstream defaults apply, and empty strings are not sent."""
    return {key: value for key, value in params.items() if value is not None and value != ""}


def _required(watch: WatchConfig, key: str) -> str:
    value = getattr(watch, key)
    if not value:
        raise ValueError(f"watch {watch.id!r} ({watch.type}) has no {key}")
    return value


def _showcase_path(watch: WatchConfig) -> str:
    handle = strip_handle(_required(watch, "handle"))
    return f"/v1/tiktok/profiles/{quote(handle, safe='')}/showcase-products"


register_source(
    SourceSpec(
        watch_type="store",
        provider="socialfetch",
        paging="cursor",
        path=lambda watch: "/v1/tiktok/shop/products",
        params=lambda watch: _present(url=_required(watch, "url"), region=watch.region),
        parse=parse_store_page,
    )
)
register_source(
    SourceSpec(
        watch_type="showcase",
        provider="socialfetch",
        paging="cursor",
        path=_showcase_path,
        params=lambda watch: _present(region=watch.region),
        parse=parse_showcase_page,
    )
)
register_source(
    SourceSpec(
        watch_type="search",
        provider="socialfetch",
        paging="page",
        path=lambda watch: "/v1/tiktok/shop/products/search",
        params=lambda watch: _present(query=_required(watch, "query"), region=watch.region),
        parse=parse_search_page,
    )
)
register_source(
    SourceSpec(
        watch_type="top_products",
        provider="keyapi",
        paging="page",
        path=lambda watch: "/v1/tiktok/insights/products",
        params=lambda watch: _present(
            limit=str(KEYAPI_PAGE_SIZE),
            ecom_category_id=watch.category_id,
            search_keyword=watch.keyword,
            time_scope=watch.time_scope,
            region=watch.region,
        ),
        parse=parse_keyapi_page,
    )
)
