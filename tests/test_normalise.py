"""Normalisation of recorded upstream pages (api-docs examples) and of hand-made garbage."""

from __future__ import annotations

import contextlib
import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.errors import FetchError
from watcher.models import Product
from watcher.sources.keyapi import parse_keyapi_page
from watcher.sources.normalise import MalformedPayload, ParsedPage, assign_ranks
from watcher.sources.socialfetch import parse_search_page, parse_showcase_page, parse_store_page

D = Decimal
UPSTREAM = Path(__file__).parent / "data" / "upstream"


def load(name: str) -> Any:
    return json.loads((UPSTREAM / f"{name}.json").read_text())


GOLI_SHOP = "7495794203056835079"

# --------------------------------------------------------------------------- recorded pages

RECORDED = [
    pytest.param(
        "store_found",
        parse_store_page,
        ParsedPage(
            products=(
                Product(
                    id="1729527313880355335",
                    title="Goli Ashwagandha & Vitamin D Gummy - Mixed Berry, KSM-66, Vegan, "
                    "Plant Based, Non-GMO, Gluten-Free & Gelatin Free.",
                    url="https://www.tiktok.com/shop/pdp/1729527313880355335",
                    image_url="https://p16.example.com/product.webp",
                    currency="USD",
                    price=D("14.96"),
                    original_price=D("24.99"),
                    discount_percent=40,
                    sold=1283012,
                    rating=D("4.5"),
                    reviews=93661,
                    shop_id=GOLI_SHOP,
                    shop_name="Goli Nutrition",
                ),
            ),
            has_more=True,
            next="WzkzNjU0LCIxNzI5NTg5MjU1NzcwMzc4NzU5Il0=",
            request_id="req_01example_shop_products",
            credits=1,
        ),
        id="store-found",
    ),
    pytest.param(
        "store_not_found",
        parse_store_page,
        ParsedPage((), False, None, "req_01example_shop_not_found", credits=1, not_found=True),
        id="store-not-found",
    ),
    pytest.param(
        "store_sparse",
        parse_store_page,
        ParsedPage(
            products=(
                Product(
                    id="1732299628898390535",
                    title="Goli Restore Kit - 1 Silk Pillow Case & 1 Silk Eye Mask",
                    url="https://www.tiktok.com/shop/pdp/1732299628898390535",
                    image_url="https://p16.example.com/p.webp",
                    currency="USD",
                    price=D("99.98"),
                    sold=3076,
                    shop_id=GOLI_SHOP,
                ),
            ),
            has_more=False,
            request_id="req_01example_shop_sparse",
            credits=1,
        ),
        id="store-sparse",
    ),
    pytest.param(
        "showcase_first_page",
        parse_showcase_page,
        ParsedPage(
            products=(
                Product(
                    id="1729508370969629931",
                    title="Example skincare product title",
                    url="https://www.tiktok.com/shop/pdp/1729508370969629931",
                    image_url="https://example.com/product-cover.webp",
                    currency="USD",
                    price=D("21"),
                    original_price=D("36"),
                    discount_percent=42,
                    sold=338798,
                    rating=D("4.5"),
                    reviews=5922,
                    shop_id="7495514739648989419",
                ),
            ),
            has_more=True,
            next="eyJwcm9kdWN0SWRzIjpbIjE3In0",
            request_id="req_01example",
            credits=1,
        ),
        id="showcase-first-page",
    ),
    pytest.param(
        "showcase_paginated",
        parse_showcase_page,
        ParsedPage(
            products=(
                Product(
                    id="1731414247972311160",
                    title="Example page-two product",
                    url="https://www.tiktok.com/shop/pdp/1731414247972311160",
                    image_url="https://example.com/page2-cover.webp",
                    currency="USD",
                    price=D("9.9"),
                    original_price=D("19"),
                    discount_percent=48,
                    sold=49056,
                    rating=D("4.5"),
                    reviews=3507,
                    shop_id="7496252928214665336",
                ),
            ),
            has_more=True,
            next="eyJwcm9kdWN0SWRzIjpbIjI5In0",
            request_id="req_01example_page_2",
            credits=1,
        ),
        id="showcase-paginated",
    ),
    pytest.param(
        "showcase_empty",
        parse_showcase_page,
        ParsedPage((), False, None, "req_01example", credits=1),
        id="showcase-empty",
    ),
    pytest.param(
        "search_sample",
        parse_search_page,
        ParsedPage(
            products=(
                Product(
                    id="1730213444857467838",
                    title="Crocs Adult Classic Clogs",
                    url="https://www.tiktok.com/shop/pdp/example/1730213444857467838",
                    image_url="https://p16.example.com/image.webp",
                    currency="USD",
                    price=D("49.99"),
                    original_price=D("59.99"),
                    discount_percent=15,
                    sold=24737,
                    rating=D("4.8"),
                    reviews=2493,
                    shop_id="7495832567110863806",
                    shop_name="Crocs",
                ),
            ),
            has_more=True,
            next=2,
            request_id="req_01example",
            credits=1,
        ),
        id="search-sample",
    ),
    pytest.param(
        "search_empty",
        parse_search_page,
        ParsedPage((), False, None, "req_01example_empty", credits=1),
        id="search-empty",
    ),
    pytest.param(
        "search_sparse",
        parse_search_page,
        ParsedPage(
            products=(
                Product(
                    id="1729505304355116874",
                    title="Sample product with missing rating data",
                    url="https://www.tiktok.com/shop/pdp/1729505304355116874",
                    image_url="https://p16.example.com/p.webp",
                    currency="USD",
                    price=D("16.00"),
                    original_price=D("39.98"),
                    discount_percent=60,
                    sold=16,
                    shop_id="7494469722151290698",
                    shop_name="example-shop",
                ),
            ),
            has_more=False,
            request_id="req_01example_sparse",
            credits=1,
        ),
        id="search-sparse",
    ),
    pytest.param(
        "keyapi_example",
        parse_keyapi_page,
        ParsedPage(
            products=(Product(id="601583", title="Perfume"),),
            has_more=True,
            next=2,
            request_id="d8a309f6-e55c-4569-b17e-a148368362a4",
            credits=None,
        ),
        id="keyapi-example",
    ),
]


@pytest.mark.parametrize(("fixture", "parse", "expected"), RECORDED)
def test_recorded_pages(fixture: str, parse: Any, expected: ParsedPage) -> None:
    assert parse(load(fixture)) == expected


def test_prices_stay_exact_decimals() -> None:
    product = parse_store_page(load("store_found")).products[0]
    assert type(product.price) is Decimal and str(product.price) == "14.96"
    assert type(product.rating) is Decimal and str(product.rating) == "4.5"
    assert str(parse_search_page(load("search_sparse")).products[0].price) == "16.00"


# --------------------------------------------------------------------------- builders


def card(**fields: Any) -> dict[str, Any]:
    """A store/search product card with every field present; ``fields`` replace top keys."""
    base: dict[str, Any] = {
        "id": "p1",
        "title": "Thing",
        "description": None,
        "url": "https://shop.example/p1",
        "imageUrl": "https://img.example/p1.webp",
        "image": {"width": 1, "height": 1, "url": "https://img.example/p1-alt.webp"},
        "shipFrom": None,
        "trustLabel": None,
        "labels": [],
        "price": {
            "currencyCode": "USD",
            "currencySymbol": "$",
            "current": "10.00",
            "original": "20.00",
            "discountText": None,
            "savingText": None,
        },
        "metrics": {"sold": 5, "reviews": 2, "rating": 4.5},
        "shop": {"id": "s1", "name": "Shop One", "logoUrl": None},
    }
    base.update(fields)
    return base


def priced(**price: Any) -> dict[str, Any]:
    body = card()
    body["price"].update(price)
    return body


def store_body(*products: Any, shop: Any = None, page: Any = None) -> dict[str, Any]:
    return {
        "data": {
            "lookupStatus": "found",
            "shop": shop,
            "products": list(products),
            "page": page if page is not None else {"nextCursor": None, "hasMore": False},
        },
        "meta": {"requestId": "req_t", "creditsCharged": 1, "version": "v1"},
    }


def search_body(*products: Any, page: Any = None) -> dict[str, Any]:
    default_page = {"currentPage": 1, "nextPage": None, "hasMore": False}
    return {
        "data": {
            "query": "q",
            "totalProducts": len(products),
            "products": list(products),
            "page": page if page is not None else default_page,
        },
        "meta": {"requestId": "req_s", "creditsCharged": 1, "version": "v1"},
    }


def showcase_body(*products: Any, page: Any = None) -> dict[str, Any]:
    return {
        "data": {
            "products": list(products),
            "page": page if page is not None else {"nextCursor": None, "hasMore": False},
        },
        "meta": {"requestId": "req_c", "creditsCharged": 1, "version": "v1"},
    }


def keyapi_body(*rows: Any, pagination: Any = None) -> dict[str, Any]:
    default = {"page": 1, "size": len(rows), "total": len(rows), "has_more": False}
    return {
        "code": 0,
        "message": "success",
        "data": {"list": list(rows), "pagination": pagination or default},
        "requestId": "kreq",
    }


def one(parse: Any, body: Any) -> Product:
    (product,) = parse(body).products
    return product


# --------------------------------------------------------------------------- prices & discount

PRICES = [
    # id, price object fields, expected (price, original, discount)
    ("parsed-text-wins", {"current": "14.96", "original": "24.99", "discountText": "40%"},
     (D("14.96"), D("24.99"), 40)),
    ("computed-when-no-text", {"current": "14.99", "original": "19.99"},
     (D("14.99"), D("19.99"), 25)),
    ("computed-half-up-12.5", {"current": "87.50", "original": "100"}, (D("87.50"), D("100"), 13)),
    ("computed-half-up-2.5", {"current": "97.5", "original": "100"}, (D("97.5"), D("100"), 3)),
    ("computed-rounds-down", {"current": "66.8", "original": "100"}, (D("66.8"), D("100"), 33)),
    ("equal-prices-zero", {"current": "20.00", "original": "20"}, (D("20.00"), D("20"), 0)),
    ("price-above-original", {"current": "25", "original": "20"}, (D("25"), D("20"), None)),
    ("original-zero", {"current": "5", "original": "0"}, (D("5"), D("0"), None)),
    ("price-zero", {"current": "0", "original": "10"}, (D("0"), D("10"), None)),
    ("no-original", {"current": "99.98", "original": None}, (D("99.98"), None, None)),
    ("no-price", {"current": None, "original": "10"}, (None, D("10"), None)),
    ("no-price-text-kept", {"current": None, "original": None, "discountText": "15%"},
     (None, None, 15)),
    ("n/a-price", {"current": "N/A", "original": "10"}, (None, D("10"), None)),
    ("empty-price", {"current": "", "original": ""}, (None, None, None)),
    ("garbage-price", {"current": "abc", "original": "$20"}, (None, None, None)),
    ("negative-price", {"current": "-1", "original": "10"}, (None, D("10"), None)),
    ("nan-price", {"current": "NaN", "original": "Infinity"}, (None, None, None)),
    ("float-price", {"current": 14.96, "original": 24.99}, (D("14.96"), D("24.99"), 40)),
    ("int-price", {"current": 15, "original": 20}, (D("15"), D("20"), 25)),
    ("padded-price", {"current": " 15.50 ", "original": "20"}, (D("15.50"), D("20"), 23)),
    ("minus-text", {"current": "6", "original": "10", "discountText": "-40%"},
     (D("6"), D("10"), 40)),
    ("text-with-words", {"current": "6", "original": "10", "discountText": "Save 41% today"},
     (D("6"), D("10"), 41)),
    ("fractional-text", {"current": "6", "original": "10", "discountText": "12.5%"},
     (D("6"), D("10"), 13)),
    ("bare-number-text", {"current": "6", "original": "10", "discountText": "42"},
     (D("6"), D("10"), 42)),
    ("unparseable-text-computes", {"current": "6", "original": "10", "discountText": "Flash"},
     (D("6"), D("10"), 40)),
    ("out-of-range-text-computes", {"current": "6", "original": "10", "discountText": "150%"},
     (D("6"), D("10"), 40)),
    ("numeric-text", {"current": "6", "original": "10", "discountText": 35},
     (D("6"), D("10"), 35)),
    # absurd values become None field by field; they never fail (or crash) the page
    ("30-digit-percent-text", {"current": "6", "original": "10",
                               "discountText": "123456789012345678901234567890%"},
     (D("6"), D("10"), 40)),
    ("30-digit-bare-text", {"current": "6", "original": "10",
                            "discountText": "123456789012345678901234567890"},
     (D("6"), D("10"), 40)),
    ("huge-numeric-discount", {"current": "6", "original": "10", "discountText": 1e40},
     (D("6"), D("10"), 40)),
    ("huge-decimal-discount", {"current": "6", "original": "10", "discountText": D("1E+40")},
     (D("6"), D("10"), 40)),
    ("huge-int-discount", {"current": "6", "original": "10", "discountText": 10**40},
     (D("6"), D("10"), 40)),
    ("nan-discount", {"current": "6", "original": "10", "discountText": D("sNaN")},
     (D("6"), D("10"), 40)),
    ("huge-float-prices", {"current": 1e40, "original": 1e40}, (None, None, None)),
    ("huge-decimal-prices", {"current": D("1E+40"), "original": D("-1E+40")},
     (None, None, None)),
    ("huge-string-prices", {"current": "1e30", "original": "123456789012345678901234567890"},
     (None, None, None)),
    ("price-at-bound", {"current": "999999999.9999", "original": "1000000000"},
     (D("999999999.9999"), None, None)),
    ("exponent-price-made-plain", {"current": "1E+2", "original": "2e2"},
     (D("100"), D("200"), 50)),
    ("minus-zero-price", {"current": "-0", "original": "-0.00"}, (D("0"), D("0.00"), None)),
    ("infinity-price", {"current": "Infinity", "original": "-Infinity"}, (None, None, None)),
    ("snan-price", {"current": D("sNaN"), "original": D("NaN")}, (None, None, None)),
    ("too-many-places", {"current": "9.99999", "original": "0.000001"}, (None, None, None)),
    ("trailing-zero-places-kept", {"current": "9.990000", "original": "20"},
     (D("9.9900"), D("20"), 50)),
    ("tiny-exponent", {"current": "1e-999999999", "original": "10"}, (None, D("10"), None)),
    ("giant-int-price", {"current": 10**5000, "original": 10**40}, (None, None, None)),
]  # fmt: skip


@pytest.mark.parametrize(("price", "expected"), [pytest.param(p, e, id=i) for i, p, e in PRICES])
def test_store_prices_and_discount(price: dict[str, Any], expected: tuple[Any, ...]) -> None:
    product = one(parse_store_page, store_body(priced(**price)))
    assert (product.price, product.original_price, product.discount_percent) == expected


@pytest.mark.parametrize(("price", "expected"), [pytest.param(p, e, id=i) for i, p, e in PRICES])
def test_showcase_prices_and_discount(price: dict[str, Any], expected: tuple[Any, ...]) -> None:
    names = {
        "current": "salePrice",
        "original": "originalPrice",
        "discountText": "discountPercent",
    }
    item = {"id": "c1", "price": {names[k]: v for k, v in price.items()}, "sales": {}}
    product = one(parse_showcase_page, showcase_body(item))
    assert (product.price, product.original_price, product.discount_percent) == expected


# --------------------------------------------------------------------------- other fields

METRICS = [
    ("sold-ok", {"sold": 1200}, ("sold", 1200)),
    ("sold-k-suffix", {"sold": "12k"}, ("sold", None)),
    ("sold-negative", {"sold": -5}, ("sold", None)),
    ("sold-digit-string", {"sold": "1200"}, ("sold", 1200)),
    ("sold-integral-float", {"sold": 12.0}, ("sold", 12)),
    ("sold-fraction", {"sold": 12.5}, ("sold", None)),
    ("rating-string", {"rating": "4.7"}, ("rating", D("4.7"))),
    ("rating-garbage", {"rating": "x"}, ("rating", None)),
    ("rating-negative", {"rating": -1}, ("rating", None)),
    ("rating-int", {"rating": 5}, ("rating", D("5"))),
    ("reviews-garbage", {"reviews": "many"}, ("reviews", None)),
    ("reviews-null", {"reviews": None}, ("reviews", None)),
    ("sold-30-digits", {"sold": "123456789012345678901234567890"}, ("sold", None)),
    ("sold-huge-int", {"sold": 10**40}, ("sold", None)),
    ("sold-giant-int", {"sold": 10**5000}, ("sold", None)),
    ("sold-huge-float", {"sold": 1e40}, ("sold", None)),
    ("sold-huge-decimal", {"sold": D("1E+40")}, ("sold", None)),
    ("sold-exponent-decimal", {"sold": D("1.2E+3")}, ("sold", 1200)),
    ("sold-below-bound", {"sold": 999_999_999_999}, ("sold", 999_999_999_999)),
    ("sold-at-bound", {"sold": 10**12}, ("sold", None)),
    ("sold-nan", {"sold": D("NaN")}, ("sold", None)),
    ("reviews-huge-string", {"reviews": "9" * 5000}, ("reviews", None)),
    ("rating-above-five", {"rating": "5.1"}, ("rating", None)),
    ("rating-huge", {"rating": 1e40}, ("rating", None)),
    ("rating-nan", {"rating": "NaN"}, ("rating", None)),
    ("rating-infinity", {"rating": "Infinity"}, ("rating", None)),
    ("rating-minus-zero", {"rating": "-0"}, ("rating", D("0"))),
    ("rating-five", {"rating": "5.0"}, ("rating", D("5.0"))),
    (
        "rating-long-fraction-rounded",
        {"rating": "4.666666666666666666666666666666"},
        ("rating", D("4.67")),
    ),
]


@pytest.mark.parametrize(
    ("metrics", "expected"), [pytest.param(m, e, id=i) for i, m, e in METRICS]
)
def test_metric_oddities_become_none(metrics: dict[str, Any], expected: tuple[str, Any]) -> None:
    body = card()
    body["metrics"].update(metrics)
    field, value = expected
    assert getattr(one(parse_store_page, store_body(body)), field) == value


def test_missing_nested_objects_leave_fields_none() -> None:
    bare = {"id": "p9", "title": "Bare"}
    assert one(parse_store_page, store_body(bare)) == Product(id="p9", title="Bare")
    assert one(parse_search_page, search_body(bare)) == Product(id="p9", title="Bare")
    nulls = card(price=None, metrics=None, shop=None, image=None, imageUrl=None)
    product = one(parse_search_page, search_body(nulls))
    assert product == Product(id="p1", title="Thing", url="https://shop.example/p1")


# A field of the wrong JSON type makes its product unusable: skipped and counted, never
# guessed at (a guess such as "no title" or "the next category" is a new identity, a false
# new_item, a false out_of_stock of the old one). (parser, body builder, the bad row).
WRONG_TYPES = [
    ("bool-price", parse_store_page, store_body, card(price={"current": True})),
    ("object-price", parse_store_page, store_body, card(price={"current": {"v": 1}})),
    ("list-original", parse_search_page, search_body, card(price={"original": [1]})),
    ("price-string", parse_search_page, search_body, card(price="cheap")),
    ("metrics-list", parse_store_page, store_body, card(metrics=[1, 2])),
    ("sold-bool", parse_store_page, store_body, card(metrics={"sold": True})),
    ("shop-string", parse_store_page, store_body, card(shop="nope")),
    ("shop-id-object", parse_store_page, store_body, card(shop={"id": {"x": 1}})),
    ("image-int", parse_search_page, search_body, card(image=7, imageUrl=None)),
    ("title-number", parse_store_page, store_body, card(title=12)),
    ("title-object", parse_search_page, search_body, card(title={"en": "x"})),
    ("url-list", parse_store_page, store_body, card(url=["https://x"])),
    ("no-id", parse_store_page, store_body, {"title": "x"}),
    ("bool-id", parse_store_page, store_body, card(id=True)),
    ("nul-in-id", parse_store_page, store_body, card(id="p1\x00")),
    ("surrogate-in-id", parse_search_page, search_body, card(id="p\ud8001")),
    ("row-string", parse_store_page, store_body, "x"),
    ("showcase-rating-string", parse_showcase_page, showcase_body, {"id": "c1", "rating": "5"}),
    ("showcase-seller-id-list", parse_showcase_page, showcase_body,
     {"id": "c1", "seller": {"id": [1]}}),
    ("keyapi-url-title-object", parse_keyapi_page, keyapi_body,
     {"url_title": {"t": "Perfume"}, "third_ecom_category": {"id": "601583", "name": "Perfume"}}),
    ("keyapi-third-category-number", parse_keyapi_page, keyapi_body,
     {"third_ecom_category": 601583, "second_ecom_category": {"id": "2", "name": "Two"}}),
    ("keyapi-category-string", parse_keyapi_page, keyapi_body,
     {"first_ecom_category": "601450", "url_title": "T"}),
    ("keyapi-category-id-bool", parse_keyapi_page, keyapi_body,
     {"third_ecom_category": {"id": True}, "url_title": "T"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("parse", "body", "bad"), [pytest.param(p, b, r, id=i) for i, p, b, r in WRONG_TYPES]
)
def test_a_field_of_the_wrong_type_makes_the_product_unusable(parse, body, bad) -> None:
    if parse is parse_keyapi_page:
        good, ids = [{"url_title": "G1"}, {"url_title": "G2"}], ["G1", "G2"]
    elif parse is parse_showcase_page:
        good, ids = [{"id": "g1"}, {"id": "g2"}], ["g1", "g2"]
    else:
        good, ids = [card(id="g1"), card(id="g2")], ["g1", "g2"]
    page = parse(body(good[0], bad, good[1]))
    assert [p.id for p in page.products] == ids
    assert len(page.skipped) == 1 and page.skipped[0].startswith("data."), page.skipped
    # alone, or among a minority of good products, it is a failed page, not an empty one
    with pytest.raises(MalformedPayload, match="products unusable"):
        parse(body(bad))
    with pytest.raises(MalformedPayload, match="2 of 3 products unusable"):
        parse(body(good[0], bad, bad))


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Gummies\x00", "Gummies"),
        ("Line\nbreak\ttab\rcr", "Line break tab cr"),
        ("bell\x07 and del\x7f and c1\x85", "bell and del and c1"),
        ("lone \ud800 surrogate", "lone  surrogate"),
        ("emoji 🍏 and zwj 👩\u200d💻 stay", "emoji 🍏 and zwj 👩\u200d💻 stay"),
        ("\x00\x01", None),
    ],
)
def test_text_is_cleaned_of_control_characters(raw: str, clean: str | None) -> None:
    product = one(parse_store_page, store_body(card(title=raw, shop={"name": raw})))
    assert product.title == clean
    assert product.shop_name == clean
    if clean is not None:
        clean.encode("utf-8")  # storable: no surrogate left


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, "https://img.example/p1.webp", id="imageUrl-first"),
        pytest.param({"imageUrl": None}, "https://img.example/p1-alt.webp", id="image.url"),
        pytest.param({"imageUrl": ""}, "https://img.example/p1-alt.webp", id="blank-imageUrl"),
        pytest.param({"imageUrl": None, "image": None}, None, id="no-image"),
    ],
)
def test_card_image(fields: dict[str, Any], expected: str | None) -> None:
    assert one(parse_store_page, store_body(card(**fields))).image_url == expected


def test_store_shop_falls_back_to_store_summary_per_field() -> None:
    summary = {"id": "store-7", "name": "Store Seven"}
    own = one(parse_store_page, store_body(card(), shop=summary))
    assert (own.shop_id, own.shop_name) == ("s1", "Shop One")
    blank = card(shop={"id": None, "name": None, "logoUrl": None})
    fallback = one(parse_store_page, store_body(blank, shop=summary))
    assert (fallback.shop_id, fallback.shop_name) == ("store-7", "Store Seven")
    half = card(shop={"id": "s1", "name": None})
    mixed = one(parse_store_page, store_body(half, shop=summary))
    assert (mixed.shop_id, mixed.shop_name) == ("s1", "Store Seven")
    missing = one(parse_store_page, store_body(card(shop=None), shop=None))
    assert (missing.shop_id, missing.shop_name) == (None, None)


def test_search_has_no_store_fallback() -> None:
    blank = card(shop={"id": None, "name": None})
    assert one(parse_search_page, search_body(blank)).shop_id is None


def test_blank_strings_become_none_and_int_ids_become_strings() -> None:
    product = one(parse_store_page, store_body(card(id=1729, title="  ", url="")))
    assert (product.id, product.title, product.url) == ("1729", None, None)


def test_unmapped_fields_are_dropped() -> None:
    product = one(parse_store_page, store_body(card(description="long", shipFrom="CA")))
    assert set(product.__dataclass_fields__) == set(Product.__dataclass_fields__)
    assert "long" not in repr(product) and "CA" not in repr(product)


SHOWCASE_ITEMS = [
    (
        "nulls-everywhere",
        {
            "id": "c9",
            "title": None,
            "url": None,
            "image": None,
            "price": None,
            "rating": None,
            "sales": {"soldCount": 5},
            "seller": None,
        },
        Product(id="c9", sold=5),
    ),
    ("only-id", {"id": "c9"}, Product(id="c9")),
    (
        "image-urls-fallback",
        {"id": "c9", "image": {"url": None, "urls": ["", "https://i/2", "https://i/3"]}},
        Product(id="c9", image_url="https://i/2"),
    ),
    (
        "image-urls-not-list",
        {"id": "c9", "image": {"url": None, "urls": "https://i/1"}},
        Product(id="c9"),
    ),
    (
        "price-fields-null",
        {
            "id": "c9",
            "price": {
                "currencyCode": None,
                "salePrice": None,
                "originalPrice": None,
                "discountPercent": None,
            },
        },
        Product(id="c9"),
    ),
    (
        "rating-garbage",
        {"id": "c9", "rating": {"score": "x", "reviewCount": "lots"}},
        Product(id="c9"),
    ),
    (
        "rating-without-score",
        {"id": "c9", "rating": {"score": None, "reviewCount": 3}},
        Product(id="c9", reviews=3),
    ),
    ("seller-int-id", {"id": "c9", "seller": {"id": 42}}, Product(id="c9", shop_id="42")),
    ("seller-no-id", {"id": "c9", "seller": {}}, Product(id="c9")),
    ("sold-garbage", {"id": "c9", "sales": {"soldCount": "1.2k"}}, Product(id="c9")),
]


@pytest.mark.parametrize(
    ("item", "expected"), [pytest.param(it, e, id=i) for i, it, e in SHOWCASE_ITEMS]
)
def test_showcase_sparse_items(item: dict[str, Any], expected: Product) -> None:
    assert one(parse_showcase_page, showcase_body(item)) == expected


def category(cid: Any) -> dict[str, Any]:
    return {"id": cid, "label": f"category_{cid}", "value": "X"}


KEYAPI_ROWS = [
    (
        "third",
        {"first_ecom_category": category("1"), "second_ecom_category": category("2"),
         "third_ecom_category": category("3"), "url_title": "Perfume"},
        "3",
    ),
    (
        "second-when-third-null",
        {"first_ecom_category": category("1"), "second_ecom_category": category("2"),
         "third_ecom_category": None, "url_title": "Perfume"},
        "2",
    ),
    (
        "second-when-third-id-blank",
        {"second_ecom_category": category("2"), "third_ecom_category": category("")},
        "2",
    ),
    ("first-only", {"first_ecom_category": category("1"), "url_title": "Beauty"}, "1"),
    ("int-category-id", {"third_ecom_category": category(601583)}, "601583"),
    ("url-title-fallback", {"third_ecom_category": {"label": "x"}, "url_title": "Perfume"},
     "Perfume"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "expected_id"), [pytest.param(r, e, id=i) for i, r, e in KEYAPI_ROWS]
)
def test_keyapi_identity_chain(row: dict[str, Any], expected_id: str) -> None:
    assert one(parse_keyapi_page, keyapi_body(row)).id == expected_id


def test_keyapi_row_maps_title_and_cover_only() -> None:
    row = load("keyapi_example")["data"]["list"][0]
    row["cover_url"] = "https://img.example/cover.webp"
    assert one(parse_keyapi_page, keyapi_body(row)) == Product(
        id="601583", title="Perfume", image_url="https://img.example/cover.webp"
    )


def test_keyapi_paging_uses_pagination_page() -> None:
    body = keyapi_body({"url_title": "A"}, pagination={"page": "3", "has_more": True})
    assert parse_keyapi_page(body).next == 4
    last = keyapi_body({"url_title": "A"}, pagination={"page": 9, "has_more": False})
    assert (parse_keyapi_page(last).has_more, parse_keyapi_page(last).next) == (False, None)


def test_search_next_page_number() -> None:
    page = {"currentPage": 1, "nextPage": "3", "hasMore": True}
    assert parse_search_page(search_body(card(), page=page)).next == 3


def test_blank_cursor_is_no_cursor() -> None:
    page = {"nextCursor": "", "hasMore": True}
    assert parse_store_page(store_body(card(), page=page)).next is None


def test_not_found_store_needs_no_products_or_page() -> None:
    body = {"data": {"lookupStatus": "not_found", "shop": None}, "meta": {"requestId": "r"}}
    assert parse_store_page(body) == ParsedPage((), False, None, "r", None, not_found=True)


def test_credits_only_when_sane() -> None:
    for charged, expected in [(0, 0), (3, 3), (-1, None), ("1", None), (True, None)]:
        body = store_body(card())
        body["meta"]["creditsCharged"] = charged
        assert parse_store_page(body).credits == expected
    assert parse_store_page({"data": store_body(card())["data"]}).credits is None


# --------------------------------------------------------------------------- malformed pages


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def _with(body: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


STORE = load("store_found")
SEARCH = load("search_sample")
SHOWCASE = load("showcase_first_page")
KEYAPI = load("keyapi_example")

MALFORMED = [
    ("store-body-list", parse_store_page, [], "response body is a list"),
    ("store-body-null", parse_store_page, None, "response body is missing or null"),
    ("store-body-text", parse_store_page, "<html>", "response body is a str"),
    ("store-no-data", parse_store_page, _without(STORE, "data"), "data is missing"),
    ("store-data-list", parse_store_page, _with(STORE, [], "data"), "data is a list"),
    ("store-no-products", parse_store_page, _without(STORE, "data", "products"),
     "data.products is missing"),
    ("store-products-object", parse_store_page, _with(STORE, {}, "data", "products"),
     "data.products is a dict"),
    ("store-product-string", parse_store_page, _with(STORE, ["x"], "data", "products"),
     "data.products[0] is a str"),
    ("store-product-no-id", parse_store_page, _without(STORE, "data", "products", 0, "id"),
     "data.products[0] has no string or integer id"),
    ("store-product-null-id", parse_store_page, _with(STORE, None, "data", "products", 0, "id"),
     "has no string or integer id"),
    ("store-product-bool-id", parse_store_page, _with(STORE, True, "data", "products", 0, "id"),
     "has no string or integer id"),
    ("store-product-blank-id", parse_store_page, _with(STORE, " ", "data", "products", 0, "id"),
     "has no string or integer id"),
    ("store-product-object-id", parse_store_page,
     _with(STORE, {"v": 1}, "data", "products", 0, "id"), "has no string or integer id"),
    ("store-no-page", parse_store_page, _without(STORE, "data", "page"), "data.page is missing"),
    ("store-hasmore-string", parse_store_page, _with(STORE, "true", "data", "page", "hasMore"),
     "data.page.hasMore is a str"),
    ("store-hasmore-missing", parse_store_page, _without(STORE, "data", "page", "hasMore"),
     "data.page.hasMore is missing"),
    ("store-cursor-number", parse_store_page, _with(STORE, 5, "data", "page", "nextCursor"),
     "data.page.nextCursor is an int"),
    ("showcase-no-data", parse_showcase_page, _with(SHOWCASE, None, "data"), "data is missing"),
    ("showcase-product-list", parse_showcase_page, _with(SHOWCASE, [[]], "data", "products"),
     "data.products[0] is a list"),
    ("showcase-hasmore-int", parse_showcase_page, _with(SHOWCASE, 1, "data", "page", "hasMore"),
     "data.page.hasMore is an int"),
    ("showcase-page-string", parse_showcase_page, _with(SHOWCASE, "1", "data", "page"),
     "data.page is a str"),
    ("search-no-products", parse_search_page, _with(SEARCH, None, "data", "products"),
     "data.products is missing"),
    ("search-no-page", parse_search_page, _without(SEARCH, "data", "page"),
     "data.page is missing"),
    ("search-next-page-garbage", parse_search_page,
     _with(SEARCH, "two", "data", "page", "nextPage"), "data.page.nextPage is 'two'"),
    ("search-next-page-zero", parse_search_page, _with(SEARCH, 0, "data", "page", "nextPage"),
     "data.page.nextPage is 0"),
    ("keyapi-error-body", parse_keyapi_page, load("keyapi_error_500"), "data is missing"),
    ("keyapi-no-list", parse_keyapi_page, _without(KEYAPI, "data", "list"),
     "data.list is missing"),
    ("keyapi-no-pagination", parse_keyapi_page, _without(KEYAPI, "data", "pagination"),
     "data.pagination is missing"),
    ("keyapi-has-more-string", parse_keyapi_page,
     _with(KEYAPI, "true", "data", "pagination", "has_more"), "data.pagination.has_more is a str"),
    ("keyapi-no-page-number", parse_keyapi_page, _without(KEYAPI, "data", "pagination", "page"),
     "data.pagination.page is None while has_more is true"),
    ("keyapi-row-not-object", parse_keyapi_page, _with(KEYAPI, [1], "data", "list"),
     "data.list[0] is an int"),
    ("keyapi-row-no-identity", parse_keyapi_page, _with(KEYAPI, [{"cost": 1}], "data", "list"),
     "data.list[0] has no category id and no url_title"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("parse", "raw", "message"), [pytest.param(p, r, m, id=i) for i, p, r, m in MALFORMED]
)
def test_malformed_pages(parse: Any, raw: Any, message: str) -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse(raw)
    assert message in str(caught.value)
    assert isinstance(caught.value, FetchError)
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("parse", "raw", "request_id"),
    [
        pytest.param(parse_store_page, _without(STORE, "data", "page"),
                     "req_01example_shop_products", id="socialfetch-meta"),
        pytest.param(parse_keyapi_page, _without(KEYAPI, "data", "list"),
                     "d8a309f6-e55c-4569-b17e-a148368362a4", id="keyapi-top-level"),
        pytest.param(parse_search_page, [], None, id="no-envelope"),
    ],
)  # fmt: skip
def test_malformed_carries_request_id(parse: Any, raw: Any, request_id: str | None) -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse(raw)
    assert caught.value.request_id == request_id


# --------------------------------------------------------------------------- ranks


def test_assign_ranks_across_pages_first_occurrence_wins() -> None:
    pages = [
        (Product(id="a", price=D("1")), Product(id="b")),
        (Product(id="a", price=D("2")), Product(id="c")),
        (),
        (Product(id="d"),),
    ]
    ranked = assign_ranks(pages)
    assert [(p.id, p.rank) for p in ranked] == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    assert ranked[0].price == D("1")


def test_assign_ranks_empty_and_generator() -> None:
    assert assign_ranks([]) == ()
    assert assign_ranks(page for page in [(Product(id="x"),)]) == (Product(id="x", rank=1),)


# --------------------------------------------------------------------------- extreme values


def test_exotic_numbers_come_out_plain_and_unsigned() -> None:
    product = one(parse_store_page, store_body(priced(current="1E+2", original="-0.00")))
    assert (str(product.price), str(product.original_price)) == ("100", "0.00")
    rated = card(metrics={"rating": "-0", "sold": D("1.2E+3"), "reviews": 0})
    product = one(parse_store_page, store_body(rated))
    assert (str(product.rating), product.sold) == ("0", 1200)


@pytest.mark.parametrize(
    ("parse", "raw", "message"),
    [
        pytest.param(parse_search_page, _with(SEARCH, 10**5000, "data", "page", "nextPage"),
                     "data.page.nextPage is", id="giant-next-page"),
        pytest.param(parse_search_page, _with(SEARCH, "9" * 50, "data", "page", "nextPage"),
                     "data.page.nextPage is", id="50-digit-next-page"),
        pytest.param(parse_keyapi_page, _with(KEYAPI, 10**5000, "data", "pagination", "page"),
                     "data.pagination.page is", id="giant-keyapi-page"),
        pytest.param(parse_store_page, _with(STORE, 10**5000, "data", "products", 0, "id"),
                     "has no string or integer id", id="giant-int-id"),
    ],
)  # fmt: skip
def test_absurd_paging_and_ids_fail_the_page_readably(parse: Any, raw: Any, message: str) -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse(raw)
    assert message in str(caught.value) and len(str(caught.value)) < 200


# --------------------------------------------------------------------------- fuzzing

_EXOTIC = [
    "", "N/A", "42%", "-1", "1e999", "NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "inf",
    "12k", "0", "-0", "-0.00", "1e30", "1E+2", "1e-30", "0.000001", "9.99999",
    "123456789012345678901234567890", "123456789012345678901234567890%",
    "-123456789012345678901234567890%", "99.5%", "100.5%", "１２", "4.666666666666666666666666",
    "9" * 400, "1" * 5000, "{}", "[]", "null",
    1e40, -1e40, 1e-40, -0.0, 10**40, -(10**40), 10**4000, 2**63, -(2**63),
    D("1E+40"), D("-1E+40"), D("1E+999999"), D("1E-999999"), D("NaN"), D("sNaN"), D("-0"),
    D("Infinity"), D("123456789012345678901234567890.123456789"),
]  # fmt: skip

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**20)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(_EXOTIC),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


FUZZ_BASES = [
    (parse_store_page, STORE),
    (parse_store_page, load("store_sparse")),
    (parse_showcase_page, SHOWCASE),
    (parse_search_page, SEARCH),
    (parse_keyapi_page, KEYAPI),
]

MAX_PRICE = D(10**9)
MAX_COUNT = 10**12


def assert_sane(page: ParsedPage) -> None:
    """Every produced product keeps only in-bounds values (see normalise's field helpers)."""
    for product in page.products:
        assert isinstance(product.id, str) and product.id
        for price in (product.price, product.original_price):
            if price is not None:
                assert type(price) is Decimal and price.is_finite()
                assert 0 <= price < MAX_PRICE and not price.is_signed()
                assert -4 <= price.as_tuple().exponent <= 0  # type: ignore[operator]
        if product.rating is not None:
            assert type(product.rating) is Decimal and product.rating.is_finite()
            assert 0 <= product.rating <= 5 and not product.rating.is_signed()
        if product.discount_percent is not None:
            assert type(product.discount_percent) is int and 0 <= product.discount_percent <= 100
        for count in (product.sold, product.reviews):
            assert count is None or (type(count) is int and 0 <= count < MAX_COUNT)
    if isinstance(page.next, int):
        assert 0 < page.next <= MAX_COUNT


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parsers_only_ever_raise_malformed(data: st.DataObject) -> None:
    """Any mutation of a recorded page either parses into sane products or is malformed."""
    parse, base = data.draw(st.sampled_from(FUZZ_BASES))
    path = data.draw(st.sampled_from(_paths(base)))
    raw = _with(base, data.draw(_json), *path)
    try:
        page = parse(raw)
    except MalformedPayload:
        return
    assert_sane(page)


def _field_paths(node: Any) -> list[tuple[Any, ...]]:
    """Paths to a product's own fields (anything but its id): one bad field never fails a page."""
    return [
        path
        for path in _paths(node)
        if len(path) >= 4
        and path[:2] in (("data", "products"), ("data", "list"))
        and path[3] != "id"
    ]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_fields_cost_at_most_their_product_and_never_make_a_new_one(
    data: st.DataObject,
) -> None:
    """One field replaced by any JSON value: the product parses (sane) or is skipped, the
    others are untouched, and no product appears under an id the page did not carry."""
    parse, base = data.draw(st.sampled_from(FUZZ_BASES))
    path = data.draw(st.sampled_from(_field_paths(base)))
    value = data.draw(_json)
    raw = _with(base, value, *path)
    before = parse(base)
    try:
        page = parse(raw)
    except MalformedPayload:
        assert len(before.products) == 1  # its only product became unusable
        return
    assert_sane(page)
    assert len(page.products) + len(page.skipped) == len(before.products)
    assert len(page.skipped) <= 1
    untouched = {p.id: p for i, p in enumerate(before.products) if i != path[2]}
    assert {p.id: p for p in page.products if p.id in untouched} == untouched
    if parse is not parse_keyapi_page:  # a KeyAPI category *is* the identity
        assert {p.id for p in page.products} <= {p.id for p in before.products}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_many_bad_fields_at_once(data: st.DataObject) -> None:
    """Every field of a product replaced by junk at once: sane products or a failed page."""
    parse, base = data.draw(st.sampled_from(FUZZ_BASES))
    raw = copy.deepcopy(base)
    for path in _field_paths(base):
        with contextlib.suppress(KeyError, IndexError, TypeError):
            raw = _with(raw, data.draw(_json), *path)
    try:
        page = parse(raw)
    except MalformedPayload:
        return  # a KeyAPI row whose every category id and url_title went bad has no identity
    assert_sane(page)


@settings(max_examples=200, deadline=None)
@given(raw=_json)
def test_parsers_on_arbitrary_json(raw: Any) -> None:
    for parse in (parse_store_page, parse_showcase_page, parse_search_page, parse_keyapi_page):
        with contextlib.suppress(MalformedPayload):
            assert_sane(parse(raw))
