"""World objects → the exact JSON shapes of the upstream API docs (pure functions).

Field names, nesting and nullability follow ``/work/shared/api-docs``, including the fields
watcher ignores (``description``, ``labels``, ``shipFrom``, ``savingText``, ``details``,
shop ``logoUrl``, image size, KeyAPI's ``cpa``/``ctr``/…), so normalisation code is tested
against what upstream really sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .world import CategoryRow, Item, Shop

SF_VERSION = "v1"
IMAGE_HOST = "https://p16-oec-va.ibyteimg.com/tos-maliva-i-o3syd03w52-us"
PDP = "https://www.tiktok.com/shop/pdp"

SF_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    429: "rate_limited",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
}
SF_ERROR_MESSAGES = {
    401: "Missing or invalid API key",
    402: "Insufficient credits",
    404: "Not found",
    429: "Too many requests",
    500: "Unexpected error",
    502: "Lookup could not be completed from the response",
    503: "Service temporarily unavailable",
}
KEYAPI_MESSAGES = {
    400: "Missing required parameter",
    401: "apiKey is null",
    402: "apiKey quota is not enough",
    429: "qps limit exceeded",
    500: "Internal server error",
}


def money(value: Decimal) -> str:
    """Store/search style: always two decimals ("14.96", "16.00")."""
    return f"{value:.2f}"


def money_short(value: Decimal) -> str:
    """Showcase style: trailing zeros dropped ("21", "9.9"), as TikTok shows them."""
    return money(value).rstrip("0").rstrip(".")


def discount_percent(price: Decimal | None, original: Decimal | None) -> int | None:
    """Whole-percent discount, rounded half up; None without a higher list price."""
    if price is None or original is None or original <= price or original <= 0:
        return None
    pct = (original - price) / original * 100
    return int(pct.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def image_url(item_id: str) -> str:
    digest = hashlib.md5(item_id.encode(), usedforsecurity=False).hexdigest()
    return f"{IMAGE_HOST}/{digest}~tplv-o3syd03w52-resize-webp:500:500.webp"


def card(item: Item, *, style: str) -> dict[str, Any]:
    """A store (``style="store"``) or search (``"search"``) product card."""
    pct = discount_percent(item.price, item.original)
    saving = None
    if pct is not None and item.price is not None and item.original is not None:
        amount = money(item.original - item.price)
        saving = amount if style == "store" else f"Saving ${amount}"
    img = image_url(item.id) if item.has_image else None
    url = f"{PDP}/{item.slug}/{item.id}" if style == "search" and item.slug else f"{PDP}/{item.id}"
    return {
        "id": item.id,
        "title": item.title,
        "description": item.description,
        "url": url,
        "imageUrl": img,
        "image": {"width": 500, "height": 500, "url": img} if img else None,
        "shipFrom": item.ship_from,
        "trustLabel": item.trust_label,
        "labels": [{"text": text, "type": kind} for text, kind in item.labels],
        "price": {
            "currencyCode": "USD",
            "currencySymbol": "$",
            "current": money(item.price) if item.price is not None else None,
            "original": money(item.original)
            if item.original is not None and pct is not None
            else None,
            "discountText": f"{pct}%" if pct is not None else None,
            "savingText": saving,
        },
        "metrics": {"sold": item.sold, "reviews": item.reviews, "rating": item.rating},
        "shop": {"id": item.shop_id, "name": item.shop_name, "logoUrl": item.shop_logo},
    }


def showcase_item(item: Item) -> dict[str, Any]:
    """A showcase product: its own shape (salePrice, soldCount, seller.id, image.urls)."""
    pct = discount_percent(item.price, item.original)
    img = image_url(item.id)
    price = None
    if item.price is not None:
        price = {
            "currencyCode": "USD",
            "currencySymbol": "$",
            "salePrice": money_short(item.price),
            "originalPrice": money_short(item.original)
            if item.original is not None and pct is not None
            else None,
            "discountPercent": f"{pct}%" if pct is not None else None,
        }
    out: dict[str, Any] = {
        "id": item.id,
        "title": item.title,
        "url": f"{PDP}/{item.id}",
        "image": (
            {
                "url": img,
                "urls": [img, img.replace(".webp", "-alt.webp")],
                "width": 500,
                "height": 500,
            }
            if item.has_image
            else None
        ),
        "price": price,
        "rating": (
            {"score": item.rating, "reviewCount": item.reviews or 0}
            if item.rating is not None or item.reviews is not None
            else None
        ),
        "sales": {"soldCount": item.sold},
        "seller": {"id": item.shop_id} if item.shop_id else None,
    }
    if item.details is not None:
        out["details"] = dict(item.details)
    return out


def shop_json(shop: Shop, listed: int) -> dict[str, Any]:
    return {
        "id": shop.id,
        "name": shop.name,
        "logoUrl": shop.logo_url,
        "storeUrl": shop.store_url,
        "region": shop.region,
        "rating": shop.rating,
        "soldCount": shop.sold,
        "reviewCount": shop.reviews,
        "onSellProductCount": listed,
        "followerCount": shop.followers,
        "videoCount": shop.videos,
    }


def _category(c: Any) -> dict[str, Any] | None:
    if c is None:
        return None
    out = {"id": c.id, "label": f"category_{c.id}"}
    if c.parent_id is not None:
        out["parent_id"] = c.parent_id
    out["value"] = c.value
    return out


def keyapi_row(row: CategoryRow) -> dict[str, Any]:
    """One ``data.list`` row, keys in the docs' (alphabetical) order."""
    m = row.metrics
    return {
        "comment": m["comment"],
        "cost": m["cost"],
        "cover_url": row.cover_url,
        "cpa": m["cpa"],
        "ctr": m["ctr"],
        "cvr": m["cvr"],
        "ecom_type": "l3" if row.third else ("l2" if row.second else "l1"),
        "first_ecom_category": _category(row.first),
        "impression": m["impression"],
        "like": m["like"],
        "play_six_rate": m["play_six_rate"],
        "post": m["post"],
        "post_change": m["post_change"],
        "second_ecom_category": _category(row.second),
        "share": m["share"],
        "third_ecom_category": _category(row.third),
        "url_title": row.url_title,
    }


# envelopes


def sf_ok(data: dict[str, Any], request_id: str, credits: int = 1) -> dict[str, Any]:
    return {
        "data": data,
        "meta": {"requestId": request_id, "creditsCharged": credits, "version": SF_VERSION},
    }


def sf_error(status: int, request_id: str, message: str | None = None) -> dict[str, Any]:
    """Social Fetch's error envelope; only a 502 is charged (the docs' credit rules)."""
    return {
        "error": {
            "code": SF_ERROR_CODES.get(status, "error"),
            "message": message or SF_ERROR_MESSAGES.get(status, "Request failed"),
        },
        "meta": {
            "requestId": request_id,
            "creditsCharged": 1 if status == 502 else 0,
            "version": SF_VERSION,
        },
    }


def keyapi_ok(
    rows: list[dict[str, Any]], *, page: int, size: int, total: int, request_id: str
) -> dict[str, Any]:
    return {
        "code": 0,
        "message": "success",
        "data": {
            "list": rows,
            "pagination": {
                "page": page,
                "size": size,
                "total": total,
                "has_more": page * size < total,
            },
        },
        "requestId": request_id,
    }


def keyapi_error(code: int, message: str | None = None) -> dict[str, Any]:
    """KeyAPI's error body, exactly as documented (no request id)."""
    return {"code": code, "data": None, "message": message or KEYAPI_MESSAGES.get(code, "error")}


# cursors: opaque to clients, but they encode the position (offset and last id seen)


def store_cursor(offset: int, last_id: str) -> str:
    """Like the docs' example: base64 of ``[offset,"lastId"]``."""
    raw = json.dumps([offset, last_id], separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def showcase_cursor(offset: int, last_id: str) -> str:
    """Like the docs' example: unpadded base64url of ``{"productIds":[…]}``."""
    raw = json.dumps({"offset": offset, "productIds": [last_id]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """``(offset, last_id)`` from either cursor style; ValueError when it is not ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if isinstance(value, list) and len(value) == 2:
        offset, last_id = value
    elif isinstance(value, dict) and isinstance(value.get("productIds"), list):
        offset, ids = value.get("offset"), value["productIds"]
        last_id = ids[-1] if ids else ""
    else:
        raise ValueError("invalid cursor")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError("invalid cursor")
    if not isinstance(last_id, str):
        raise ValueError("invalid cursor")
    return offset, last_id


def resume_at(ids: list[str], offset: int, last_id: str) -> int:
    """Where the next page starts: after ``last_id`` if it is still listed, else ``offset``.

    Within a step the two agree; across a step (the world changed mid-poll) resuming after the
    last id seen avoids skipping or repeating products that moved.
    """
    try:
        return ids.index(last_id) + 1
    except ValueError:
        return offset
