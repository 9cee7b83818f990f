"""Social Fetch (api.socialfetch.dev): everything watcher knows about this upstream.

Its base URL, regions, ``x-api-key`` auth, the envelope (``data`` + ``meta.requestId``, errors
as ``error.message``), credits (``meta.creditsCharged`` is authoritative; else 1 credit for a
200 or a 502 normalisation failure, nothing for other errors), and its three watch types:
``store`` and ``showcase`` page by cursor, ``search`` by page number. Parsing is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from watcher.models import Product
from watcher.sources.normalise import (
    MalformedPayload,
    ParsedPage,
    charged_credits,
    describe,
    discount,
    envelope_request_id,
    id_field,
    ident,
    numeric_field,
    product_rows,
    require_bool,
    require_id,
    require_list,
    require_object,
    show,
    sub_object,
    text_field,
    to_count,
    to_price,
    to_rating,
    to_text,
)
from watcher.sources.specs import (
    ProviderSpec,
    SourceSpec,
    WatchParams,
    present,
    required,
    text_at,
)
from watcher.util import strip_handle

NAME = "socialfetch"
BASE_URL = "https://api.socialfetch.dev"
PRICE = 1  # credits per request, documented
REGIONS = (
    "US", "GB", "DE", "FR", "IT", "ID", "MY", "MX",
    "PH", "SG", "ES", "TH", "VN", "BR", "JP", "IE",
)  # fmt: skip


def credits(status: int | None, body: Any) -> int:
    """``meta.creditsCharged`` when sane, else the documented charge for the status."""
    charged = charged_credits(body)
    if charged is not None:
        return charged
    return PRICE if status in (200, 502) else 0


# --------------------------------------------------------------------------- envelope


def _envelope(raw: Any) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    rid = envelope_request_id(raw)
    body = require_object(raw, "response body", rid)
    data = require_object(body.get("data"), "data", rid)
    return body, data, rid


def _cursor_paging(data: Mapping[str, Any], rid: str | None) -> tuple[bool, str | None]:
    page = require_object(data.get("page"), "data.page", rid)
    has_more = require_bool(page, "hasMore", "data.page.hasMore", rid)
    cursor = page.get("nextCursor")
    if cursor is not None and not isinstance(cursor, str):
        raise MalformedPayload(
            f"data.page.nextCursor is {describe(cursor)}, expected a string or null",
            request_id=rid,
        )
    return has_more, cursor or None


def _number_paging(data: Mapping[str, Any], rid: str | None) -> tuple[bool, int | None]:
    page = require_object(data.get("page"), "data.page", rid)
    has_more = require_bool(page, "hasMore", "data.page.hasMore", rid)
    raw_next = page.get("nextPage")
    next_page = to_count(raw_next)
    if raw_next is not None and not next_page:
        raise MalformedPayload(
            f"data.page.nextPage is {show(raw_next)}, expected a page number or null",
            request_id=rid,
        )
    return has_more, next_page


# --------------------------------------------------------------------------- products


def _card_product(row: Mapping[str, Any], fallback_shop: Mapping[str, Any]) -> Product:
    """Store and search share one product card shape."""
    product_id = require_id(row)
    price = sub_object(row, "price")
    metrics = sub_object(row, "metrics")
    shop = sub_object(row, "shop")
    current = to_price(numeric_field(price, "current"))
    original = to_price(numeric_field(price, "original"))
    image_url = text_field(row, "imageUrl") or text_field(sub_object(row, "image"), "url")
    return Product(
        id=product_id,
        title=text_field(row, "title"),
        url=text_field(row, "url"),
        image_url=image_url,
        currency=text_field(price, "currencyCode"),
        price=current,
        original_price=original,
        discount_percent=discount(numeric_field(price, "discountText"), current, original),
        sold=to_count(numeric_field(metrics, "sold")),
        rating=to_rating(numeric_field(metrics, "rating")),
        reviews=to_count(numeric_field(metrics, "reviews")),
        shop_id=id_field(shop, "id") or ident(fallback_shop.get("id")),
        shop_name=text_field(shop, "name") or to_text(fallback_shop.get("name")),
    )


def _showcase_product(row: Mapping[str, Any]) -> Product:
    product_id = require_id(row)
    price = sub_object(row, "price")
    rating = sub_object(row, "rating")
    image = sub_object(row, "image")
    urls = image.get("urls")
    first_url = next((u for u in urls if to_text(u)), None) if isinstance(urls, list) else None
    sale = to_price(numeric_field(price, "salePrice"))
    original = to_price(numeric_field(price, "originalPrice"))
    return Product(
        id=product_id,
        title=text_field(row, "title"),
        url=text_field(row, "url"),
        image_url=text_field(image, "url") or to_text(first_url),
        currency=text_field(price, "currencyCode"),
        price=sale,
        original_price=original,
        discount_percent=discount(numeric_field(price, "discountPercent"), sale, original),
        sold=to_count(numeric_field(sub_object(row, "sales"), "soldCount")),
        rating=to_rating(numeric_field(rating, "score")),
        reviews=to_count(numeric_field(rating, "reviewCount")),
        shop_id=id_field(sub_object(row, "seller"), "id"),
    )


# --------------------------------------------------------------------------- page parsers


def parse_store_page(raw: Any) -> ParsedPage:
    """``GET /v1/tiktok/shop/products``; a ``not_found`` store has no products."""
    body, data, rid = _envelope(raw)
    charged = charged_credits(body)
    if data.get("lookupStatus") == "not_found":
        return ParsedPage((), False, None, rid, charged, not_found=True)
    rows = require_list(data, "products", "data.products", rid)
    has_more, cursor = _cursor_paging(data, rid)
    shop = data.get("shop") if isinstance(data.get("shop"), dict) else {}
    products, skipped = product_rows(
        rows, "data.products", rid, lambda row, _path: _card_product(row, shop)
    )
    return ParsedPage(products, has_more, cursor, rid, charged, skipped=skipped)


def parse_showcase_page(raw: Any) -> ParsedPage:
    """``GET /v1/tiktok/profiles/{handle}/showcase-products``."""
    body, data, rid = _envelope(raw)
    rows = require_list(data, "products", "data.products", rid)
    has_more, cursor = _cursor_paging(data, rid)
    products, skipped = product_rows(
        rows, "data.products", rid, lambda row, _path: _showcase_product(row)
    )
    return ParsedPage(products, has_more, cursor, rid, charged_credits(body), skipped=skipped)


def parse_search_page(raw: Any) -> ParsedPage:
    """``GET /v1/tiktok/shop/products/search`` (page-numbered)."""
    body, data, rid = _envelope(raw)
    rows = require_list(data, "products", "data.products", rid)
    has_more, next_page = _number_paging(data, rid)
    products, skipped = product_rows(
        rows, "data.products", rid, lambda row, _path: _card_product(row, {})
    )
    return ParsedPage(products, has_more, next_page, rid, charged_credits(body), skipped=skipped)


# --------------------------------------------------------------------------- definition


def _showcase_path(watch: WatchParams) -> str:
    handle = strip_handle(required(watch, "handle"))
    return f"/v1/tiktok/profiles/{quote(handle, safe='')}/showcase-products"


PROVIDER = ProviderSpec(
    name=NAME,
    base_url=BASE_URL,
    price=PRICE,
    auth=lambda key: {"x-api-key": key},
    credits=credits,
    request_id=lambda body: text_at(body, "meta", "requestId"),
    error_message=lambda body: text_at(body, "error", "message"),
    body_status=lambda body: None,
    regions=REGIONS,
    sources=(
        SourceSpec(
            watch_type="store",
            provider=NAME,
            paging="cursor",
            path=lambda watch: "/v1/tiktok/shop/products",
            params=lambda watch: present(url=required(watch, "url"), region=watch.region),
            parse=parse_store_page,
        ),
        SourceSpec(
            watch_type="showcase",
            provider=NAME,
            paging="cursor",
            path=_showcase_path,
            params=lambda watch: present(region=watch.region),
            parse=parse_showcase_page,
        ),
        SourceSpec(
            watch_type="search",
            provider=NAME,
            paging="page",
            path=lambda watch: "/v1/tiktok/shop/products/search",
            params=lambda watch: present(query=required(watch, "query"), region=watch.region),
            parse=parse_search_page,
        ),
    ),
)
