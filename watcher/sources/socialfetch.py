"""Social Fetch (api.socialfetch.dev): everything watcher knows about this upstream.

Its base URL, regions, ``x-api-key`` auth, the envelope (``data`` + ``meta.requestId``, errors
as ``error.message``), credits (``meta.creditsCharged`` is authoritative; else 1 credit for a
200 or a 502 normalisation failure, nothing for other errors), and its three watch types:
``store`` and ``showcase`` page by cursor, ``search`` by page number. Parsing is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from watcher.param import Param
from watcher.sources.specs import (
    ProviderSpec,
    SourceSpec,
    WatchParams,
    charged_credits,
    present,
    required,
    text_at,
)
from watcher.util import strip_handle

if TYPE_CHECKING:
    from watcher.models import Product
    from watcher.sources.normalise import ParsedPage

# The parsers import ``normalise`` (and ``models``) when first called, not with this module:
# the config loader reads the facts below, and ``watcher check`` stays as quick as it was.

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
    from watcher.sources import normalise as n

    rid = n.envelope_request_id(raw)
    body = n.require_object(raw, "response body", rid)
    data = n.require_object(body.get("data"), "data", rid)
    return body, data, rid


def _cursor_paging(data: Mapping[str, Any], rid: str | None) -> tuple[bool, str | None]:
    from watcher.sources import normalise as n

    page = n.require_object(data.get("page"), "data.page", rid)
    has_more = n.require_bool(page, "hasMore", "data.page.hasMore", rid)
    cursor = page.get("nextCursor")
    if cursor is not None and not isinstance(cursor, str):
        raise n.MalformedPayload(
            f"data.page.nextCursor is {n.describe(cursor)}, expected a string or null",
            request_id=rid,
        )
    return has_more, cursor or None


def _number_paging(data: Mapping[str, Any], rid: str | None) -> tuple[bool, int | None]:
    from watcher.sources import normalise as n

    page = n.require_object(data.get("page"), "data.page", rid)
    has_more = n.require_bool(page, "hasMore", "data.page.hasMore", rid)
    raw_next = page.get("nextPage")
    next_page = n.to_count(raw_next)
    if raw_next is not None and not next_page:
        raise n.MalformedPayload(
            f"data.page.nextPage is {n.show(raw_next)}, expected a page number or null",
            request_id=rid,
        )
    return has_more, next_page


# --------------------------------------------------------------------------- products


def _card_product(row: Mapping[str, Any], fallback_shop: Mapping[str, Any]) -> Product:
    """Store and search share one product card shape."""
    from watcher.models import Product
    from watcher.sources import normalise as n

    product_id = n.require_id(row)
    price = n.sub_object(row, "price")
    metrics = n.sub_object(row, "metrics")
    shop = n.sub_object(row, "shop")
    current = n.to_price(n.numeric_field(price, "current"))
    original = n.to_price(n.numeric_field(price, "original"))
    image_url = n.text_field(row, "imageUrl") or n.text_field(n.sub_object(row, "image"), "url")
    return Product(
        id=product_id,
        title=n.text_field(row, "title"),
        url=n.text_field(row, "url"),
        image_url=image_url,
        currency=n.text_field(price, "currencyCode"),
        price=current,
        original_price=original,
        discount_percent=n.discount(n.numeric_field(price, "discountText"), current, original),
        sold=n.to_count(n.numeric_field(metrics, "sold")),
        rating=n.to_rating(n.numeric_field(metrics, "rating")),
        reviews=n.to_count(n.numeric_field(metrics, "reviews")),
        shop_id=n.id_field(shop, "id") or n.ident(fallback_shop.get("id")),
        shop_name=n.text_field(shop, "name") or n.to_text(fallback_shop.get("name")),
    )


def _showcase_product(row: Mapping[str, Any]) -> Product:
    from watcher.models import Product
    from watcher.sources import normalise as n

    product_id = n.require_id(row)
    price = n.sub_object(row, "price")
    rating = n.sub_object(row, "rating")
    image = n.sub_object(row, "image")
    urls = image.get("urls")
    first_url = next((u for u in urls if n.to_text(u)), None) if isinstance(urls, list) else None
    sale = n.to_price(n.numeric_field(price, "salePrice"))
    original = n.to_price(n.numeric_field(price, "originalPrice"))
    return Product(
        id=product_id,
        title=n.text_field(row, "title"),
        url=n.text_field(row, "url"),
        image_url=n.text_field(image, "url") or n.to_text(first_url),
        currency=n.text_field(price, "currencyCode"),
        price=sale,
        original_price=original,
        discount_percent=n.discount(n.numeric_field(price, "discountPercent"), sale, original),
        sold=n.to_count(n.numeric_field(n.sub_object(row, "sales"), "soldCount")),
        rating=n.to_rating(n.numeric_field(rating, "score")),
        reviews=n.to_count(n.numeric_field(rating, "reviewCount")),
        shop_id=n.id_field(n.sub_object(row, "seller"), "id"),
    )


# --------------------------------------------------------------------------- page parsers


def parse_store_page(raw: Any) -> ParsedPage:
    """``GET /v1/tiktok/shop/products``; a ``not_found`` store has no products."""
    from watcher.sources import normalise as n

    body, data, rid = _envelope(raw)
    charged = charged_credits(body)
    if data.get("lookupStatus") == "not_found":
        return n.ParsedPage((), False, None, rid, charged, not_found=True)
    rows = n.require_list(data, "products", "data.products", rid)
    has_more, cursor = _cursor_paging(data, rid)
    shop = data.get("shop") if isinstance(data.get("shop"), dict) else {}
    products, skipped = n.product_rows(
        rows, "data.products", rid, lambda row, _path: _card_product(row, shop)
    )
    return n.ParsedPage(products, has_more, cursor, rid, charged, skipped=skipped)


def parse_showcase_page(raw: Any) -> ParsedPage:
    """``GET /v1/tiktok/profiles/{handle}/showcase-products``."""
    from watcher.sources import normalise as n

    body, data, rid = _envelope(raw)
    rows = n.require_list(data, "products", "data.products", rid)
    has_more, cursor = _cursor_paging(data, rid)
    products, skipped = n.product_rows(
        rows, "data.products", rid, lambda row, _path: _showcase_product(row)
    )
    return n.ParsedPage(products, has_more, cursor, rid, charged_credits(body), skipped=skipped)


def parse_search_page(raw: Any) -> ParsedPage:
    """``GET /v1/tiktok/shop/products/search`` (page-numbered)."""
    from watcher.sources import normalise as n

    body, data, rid = _envelope(raw)
    rows = n.require_list(data, "products", "data.products", rid)
    has_more, next_page = _number_paging(data, rid)
    products, skipped = n.product_rows(
        rows, "data.products", rid, lambda row, _path: _card_product(row, {})
    )
    return n.ParsedPage(products, has_more, next_page, rid, charged_credits(body), skipped=skipped)


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
            doc="Every product of a TikTok Shop store (Social Fetch).",
            keys={
                "url": Param("str", required=True, doc="public store URL"),
                "region": Param("region", doc="Social Fetch region code (default US)"),
            },
            tracks_stock=True,
        ),
        SourceSpec(
            watch_type="showcase",
            provider=NAME,
            paging="cursor",
            path=_showcase_path,
            params=lambda watch: present(region=watch.region),
            parse=parse_showcase_page,
            doc="Products in a creator's profile showcase (Social Fetch).",
            keys={
                "handle": Param("handle", required=True, doc="TikTok handle, without @"),
                "region": Param("str", doc="free-text region code"),
            },
            tracks_stock=True,
        ),
        SourceSpec(
            watch_type="search",
            provider=NAME,
            paging="page",
            path=lambda watch: "/v1/tiktok/shop/products/search",
            params=lambda watch: present(query=required(watch, "query"), region=watch.region),
            parse=parse_search_page,
            doc="Results of a TikTok Shop product search (Social Fetch).",
            keys={
                "query": Param("str", required=True, doc="search text"),
                "region": Param("region", doc="Social Fetch region code"),
            },
        ),
    ),
)
