"""The upstream simulator over real sockets: shapes, paging, auth, errors, faults, timeline.

Shapes are checked against the api-docs field outlines (every required key, right types,
no undocumented keys). The timeline test polls the demo world once per step like watcher
would and evaluates ``watcher/demo.yaml``'s rules with a small reference implementation, so
the documented ``DEMO_EXPECTED_ALERTS`` are known to follow from the served payloads.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from watcher.config import Config, load_config
from watcher.simulator import (
    DEMO_EXPECTED_ALERTS,
    SCENARIOS,
    ExpectedAlert,
    Fault,
    Simulator,
    build_world,
    start_simulator,
)
from watcher.simulator import demo as d
from watcher.simulator.payloads import decode_cursor

ROOT = Path(__file__).resolve().parents[1]
DEMO_YAML = ROOT / "watcher" / "demo.yaml"
STORE = "/v1/tiktok/shop/products"
SEARCH = "/v1/tiktok/shop/products/search"
SHOWCASE = f"/v1/tiktok/profiles/{d.HANDLE}/showcase-products"
TOP = "/v1/tiktok/insights/products"
SF = {"x-api-key": "test-key"}
KA = {"Authorization": "Bearer test-key"}
ID19 = re.compile(r"\d{19}")


# ---------------------------------------------------------------- a tiny schema checker


@dataclass(frozen=True)
class N:
    """Nullable."""

    inner: Any


@dataclass(frozen=True)
class Opt:
    """A key that may be absent."""

    inner: Any


NUM = "number"


def conforms(value: Any, schema: Any, where: str = "$") -> None:
    """Assert ``value`` matches ``schema``: dicts are closed (no undocumented keys)."""
    if isinstance(schema, Opt):
        schema = schema.inner
    if isinstance(schema, N):
        if value is None:
            return
        schema = schema.inner
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: expected object, got {value!r}"
        for key, sub in schema.items():
            if key in value:
                conforms(value[key], sub, f"{where}.{key}")
            else:
                assert isinstance(sub, Opt), f"{where}.{key} is missing"
        extra = set(value) - set(schema)
        assert not extra, f"{where}: undocumented keys {extra}"
    elif isinstance(schema, list):
        assert isinstance(value, list), f"{where}: expected array, got {value!r}"
        for i, item in enumerate(value):
            conforms(item, schema[0], f"{where}[{i}]")
    elif schema is bool:
        assert isinstance(value, bool), f"{where}: expected boolean, got {value!r}"
    elif schema is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
    elif schema == NUM:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        assert ok, f"{where}: expected number, got {value!r}"
    elif schema is dict:
        assert isinstance(value, dict), f"{where}: expected object, got {value!r}"
    else:
        assert isinstance(value, schema), f"{where}: expected {schema.__name__}, got {value!r}"


SF_META = {"requestId": str, "creditsCharged": int, "version": str}
CARD = {
    "id": str,
    "title": str,
    "description": N(str),
    "url": N(str),
    "imageUrl": N(str),
    "image": Opt(N({"width": N(int), "height": N(int), "url": N(str)})),
    "shipFrom": N(str),
    "trustLabel": N(str),
    "labels": [{"text": str, "type": N(int)}],
    "price": {
        "currencyCode": N(str),
        "currencySymbol": N(str),
        "current": N(str),
        "original": N(str),
        "discountText": N(str),
        "savingText": N(str),
    },
    "metrics": {"sold": N(int), "reviews": N(int), "rating": N(NUM)},
    "shop": {"id": N(str), "name": N(str), "logoUrl": N(str)},
}
STORE_SCHEMA = {
    "data": {
        "lookupStatus": str,
        "shop": N(
            {
                "id": N(str),
                "name": N(str),
                "logoUrl": N(str),
                "storeUrl": N(str),
                "region": N(str),
                "rating": N(NUM),
                "soldCount": N(int),
                "reviewCount": N(int),
                "onSellProductCount": N(int),
                "followerCount": N(int),
                "videoCount": N(int),
            }
        ),
        "products": [CARD],
        "page": {"nextCursor": N(str), "hasMore": bool},
    },
    "meta": SF_META,
}
SHOWCASE_SCHEMA = {
    "data": {
        "products": [
            {
                "id": str,
                "title": N(str),
                "url": N(str),
                "image": N({"url": N(str), "urls": [str], "width": N(int), "height": N(int)}),
                "price": N(
                    {
                        "currencyCode": N(str),
                        "currencySymbol": N(str),
                        "salePrice": N(str),
                        "originalPrice": N(str),
                        "discountPercent": N(str),
                    }
                ),
                "rating": N({"score": N(NUM), "reviewCount": int}),
                "sales": {"soldCount": int},
                "seller": N({"id": str}),
                "details": Opt(dict),
            }
        ],
        "page": {"nextCursor": N(str), "hasMore": bool},
    },
    "meta": SF_META,
}
SEARCH_SCHEMA = {
    "data": {
        "query": str,
        "products": [CARD],
        "totalProducts": int,
        "page": {"currentPage": int, "nextPage": N(int), "hasMore": bool},
    },
    "meta": SF_META,
}
_CAT = {"id": str, "label": str, "parent_id": Opt(str), "value": str}
KEYAPI_SCHEMA = {
    "code": int,
    "message": str,
    "data": {
        "list": [
            {
                "comment": int,
                "cost": int,
                "cover_url": N(str),
                "cpa": NUM,
                "ctr": NUM,
                "cvr": NUM,
                "ecom_type": str,
                "first_ecom_category": _CAT,
                "impression": int,
                "like": int,
                "play_six_rate": NUM,
                "post": int,
                "post_change": NUM,
                "second_ecom_category": N(_CAT),
                "share": int,
                "third_ecom_category": N(_CAT),
                "url_title": str,
            }
        ],
        "pagination": {"page": int, "size": int, "total": int, "has_more": bool},
    },
    "requestId": str,
}
SF_ERROR_SCHEMA = {"error": {"code": str, "message": str}, "meta": SF_META}


# ---------------------------------------------------------------- fixtures and walkers


@pytest.fixture
async def sim():
    running = await start_simulator()
    yield running
    await running.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def fetch(
    http: aiohttp.ClientSession,
    base: str,
    path: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = SF,
) -> tuple[int, Any, Any]:
    """GET and return (status, parsed JSON or raw text, headers)."""
    async with http.get(base + path, params=params or {}, headers=headers or {}) as resp:
        raw = await resp.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        return resp.status, body, resp.headers


async def walk_cursor(
    http: aiohttp.ClientSession, base: str, path: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    """Every page of a cursor endpoint, following nextCursor like the docs say."""
    pages, cursor = [], None
    for _ in range(30):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        status, body, _ = await fetch(http, base, path, query)
        assert status == 200, body
        pages.append(body)
        page = body["data"]["page"]
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            return pages
        cursor = page["nextCursor"]
        assert cursor
    raise AssertionError("paging never ended")


async def walk_numbered(
    http: aiohttp.ClientSession, base: str, path: str, params: dict[str, str], *, keyapi: bool
) -> list[dict[str, Any]]:
    """Every page of a page-number endpoint (Social Fetch search or KeyAPI)."""
    pages = []
    for n in range(1, 30):
        headers = KA if keyapi else SF
        status, body, _ = await fetch(http, base, path, dict(params, page=str(n)), headers)
        assert status == 200, body
        pages.append(body)
        if keyapi:
            if not body["data"]["pagination"]["has_more"]:
                return pages
        else:
            page = body["data"]["page"]
            assert page["currentPage"] == n
            if not page["hasMore"]:
                assert page["nextPage"] is None
                return pages
            assert page["nextPage"] == n + 1
    raise AssertionError("paging never ended")


def store_params(**extra: str) -> dict[str, str]:
    return {"url": d.STORE_URL, "region": "US", **extra}


# ---------------------------------------------------------------- shapes and paging


async def test_store_pages_match_docs_and_walk_without_repeats(sim, http):
    pages = await walk_cursor(http, sim.base_url, STORE, store_params())
    assert len(pages) == 4  # 32 products, 10 a page
    ids = [p["id"] for body in pages for p in body["data"]["products"]]
    assert len(ids) == 32 and len(set(ids)) == 32
    for body in pages:
        conforms(body, STORE_SCHEMA)
        assert body["data"]["lookupStatus"] == "found"
        assert body["data"]["shop"]["id"] == d.SHOP_ID
        assert body["data"]["shop"]["onSellProductCount"] == 32
        assert body["meta"]["creditsCharged"] == 1 and body["meta"]["version"] == "v1"
        for p in body["data"]["products"]:
            assert ID19.fullmatch(p["id"])
            assert re.fullmatch(r"\d+\.\d\d", p["price"]["current"])
            if p["price"]["discountText"] is not None:
                assert re.fullmatch(r"\d+%", p["price"]["discountText"])
                assert Decimal(p["price"]["original"]) > Decimal(p["price"]["current"])
    # the cursor is opaque base64 JSON of the position, like the docs' example
    offset, last_id = decode_cursor(pages[0]["data"]["page"]["nextCursor"])
    assert (offset, last_id) == (10, ids[9])
    request_ids = {b["meta"]["requestId"] for b in pages}
    assert len(request_ids) == 4


async def test_showcase_pages_match_docs(sim, http):
    pages = await walk_cursor(http, sim.base_url, SHOWCASE, {"region": "US"})
    assert len(pages) == 2
    items = [p for body in pages for p in body["data"]["products"]]
    assert len(items) == 14 and len({p["id"] for p in items}) == 14
    for body in pages:
        conforms(body, SHOWCASE_SCHEMA)
    assert all(ID19.fullmatch(p["id"]) for p in items)
    sparse = [p for p in items if p["price"] is None]
    assert len(sparse) == 1
    assert sparse[0]["title"] is None and sparse[0]["image"] is None
    assert sparse[0]["seller"] is None and sparse[0]["rating"] is None
    sale_prices = [p["price"]["salePrice"] for p in items if p["price"]]
    assert all(re.fullmatch(r"\d+(\.\d\d?)?", s) for s in sale_prices)
    assert "24" in sale_prices and "9.9" in sale_prices  # TikTok's short showcase format
    assert any(p["price"] and p["price"]["discountPercent"] for p in items)
    assert all("details" in p for p in items)


async def test_search_pages_match_docs(sim, http):
    pages = await walk_numbered(http, sim.base_url, SEARCH, {"query": d.QUERY}, keyapi=False)
    assert len(pages) == 3
    ids = [p["id"] for body in pages for p in body["data"]["products"]]
    assert len(ids) == 25 == len(set(ids))
    for body in pages:
        conforms(body, SEARCH_SCHEMA)
        assert body["data"]["query"] == d.QUERY and body["data"]["totalProducts"] == 25
    titles = [p["title"] for body in pages for p in body["data"]["products"]]
    assert [t for t in titles if re.search("(?i)classic clog", t)] == [
        "Crocs Unisex-Adult Classic Clogs, Lightweight Slip-On Water Shoes"
    ]
    savings = [
        p["price"]["savingText"]
        for b in pages
        for p in b["data"]["products"]
        if p["price"]["original"]
    ]
    assert savings and all(s.startswith("Saving $") for s in savings)


async def test_search_page_past_the_end_is_empty(sim, http):
    status, body, _ = await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY, "page": "9"})
    assert status == 200
    assert body["data"]["products"] == []
    assert body["data"]["page"] == {"currentPage": 9, "nextPage": None, "hasMore": False}


async def test_keyapi_pages_match_docs(sim, http):
    params = {"ecom_category_id": d.CATEGORY_ID, "limit": "7", "region": "US"}
    pages = await walk_numbered(http, sim.base_url, TOP, params, keyapi=True)
    assert len(pages) == 5  # 30 rows, 7 a page
    rows = [r for body in pages for r in body["data"]["list"]]
    keys = [r["third_ecom_category"]["id"] for r in rows]
    assert len(keys) == 30 == len(set(keys))
    for n, body in enumerate(pages, 1):
        conforms(body, KEYAPI_SCHEMA)
        assert body["code"] == 0 and body["message"] == "success"
        pagination = body["data"]["pagination"]
        assert (pagination["page"], pagination["size"], pagination["total"]) == (n, 7, 30)
    assert all(r["first_ecom_category"]["id"] == d.CATEGORY_ID for r in rows)
    uuid_like = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    assert all(uuid_like.fullmatch(b["requestId"]) for b in pages)


async def test_keyapi_limit_is_capped_at_20_and_defaults_to_20(sim, http):
    for limit in ("50", None):
        params = {"ecom_category_id": d.CATEGORY_ID} | ({"limit": limit} if limit else {})
        status, body, _ = await fetch(http, sim.base_url, TOP, params, KA)
        assert status == 200
        assert len(body["data"]["list"]) == 20
        assert body["data"]["pagination"] == {"page": 1, "size": 20, "total": 30, "has_more": True}


async def test_keyapi_filters_by_any_category_level_and_keyword(sim, http):
    async def keys(**params: str) -> list[str]:
        _, body, _ = await fetch(http, sim.base_url, TOP, params, KA)
        rows = body["data"]["list"]
        return [(r["third_ecom_category"] or r["second_ecom_category"])["id"] for r in rows]

    assert await keys(ecom_category_id="601583") == ["601583"]  # third level: Perfume
    makeup = await keys(ecom_category_id="848648")  # second level
    assert d.LIP_GLOSS in makeup and "601611" not in makeup
    assert await keys(ecom_category_id=d.CATEGORY_ID, search_keyword="gloss") == [d.LIP_GLOSS]
    assert len(await keys(ecom_category_id=d.CATEGORY_ID, search_keyword="FALSE")) == 20
    # rows without a third level exist elsewhere (identity falls back to the second level)
    _, body, _ = await fetch(http, sim.base_url, TOP, {"ecom_category_id": "605196"}, KA)
    l2 = [r for r in body["data"]["list"] if r["third_ecom_category"] is None]
    assert l2 and l2[0]["ecom_type"] == "l2"


async def test_page_size_is_configurable(http):
    async with await start_simulator(page_size=5) as small:
        pages = await walk_cursor(http, small.base_url, STORE, store_params())
        assert [len(b["data"]["products"]) for b in pages] == [5] * 6 + [2]
        pages = await walk_numbered(http, small.base_url, SEARCH, {"query": d.QUERY}, keyapi=False)
        assert len(pages) == 5


async def test_cursor_paging_stays_stable_when_the_world_steps_mid_walk(sim, http):
    """A poll that straddles a step neither repeats nor skips the products still listed."""
    sim.step(2)
    _, first, _ = await fetch(http, sim.base_url, STORE, store_params())
    seen = [p["id"] for p in first["data"]["products"]]
    sim.step()  # step 3: RESTORE_KIT (position 17, page 2) sells out
    cursor = first["data"]["page"]["nextCursor"]
    while cursor:
        _, body, _ = await fetch(http, sim.base_url, STORE, store_params(cursor=cursor))
        seen += [p["id"] for p in body["data"]["products"]]
        cursor = body["data"]["page"]["nextCursor"]
    assert len(seen) == len(set(seen)) == 31
    assert d.RESTORE_KIT not in seen


# ---------------------------------------------------------------- lookups that find nothing


async def test_unknown_store_is_not_found(sim, http):
    url = "https://www.tiktok.com/shop/store/nobody/7490000000000000001"
    status, body, _ = await fetch(http, sim.base_url, STORE, {"url": url})
    assert status == 200
    conforms(body, STORE_SCHEMA)
    assert body["data"] == {
        "lookupStatus": "not_found",
        "shop": None,
        "products": [],
        "page": {"nextCursor": None, "hasMore": False},
    }
    assert body["meta"]["creditsCharged"] == 1


async def test_store_url_spelling_variants_find_the_store(sim, http):
    for url in (
        d.STORE_URL + "/",
        d.STORE_URL + "?source=share",
        d.STORE_URL.upper()[:8] + d.STORE_URL[8:],
    ):
        _, body, _ = await fetch(http, sim.base_url, STORE, {"url": url})
        assert body["data"]["lookupStatus"] == "found", url


async def test_unknown_handle_query_and_category_are_empty(sim, http):
    _, body, _ = await fetch(
        http, sim.base_url, "/v1/tiktok/profiles/nobody.here/showcase-products"
    )
    assert body["data"] == {"products": [], "page": {"nextCursor": None, "hasMore": False}}
    _, body, _ = await fetch(http, sim.base_url, SEARCH, {"query": "zzzzimprobablequery"})
    assert body["data"]["products"] == [] and body["data"]["totalProducts"] == 0
    assert body["data"]["page"] == {"currentPage": 1, "nextPage": None, "hasMore": False}
    _, body, _ = await fetch(http, sim.base_url, TOP, {"ecom_category_id": "999999"}, KA)
    assert body["code"] == 0 and body["data"]["list"] == []
    assert body["data"]["pagination"]["total"] == 0
    assert body["data"]["pagination"]["has_more"] is False


async def test_handle_and_query_lookups_are_forgiving(sim, http):
    path = f"/v1/tiktok/profiles/@{d.HANDLE.upper()}/showcase-products"
    _, body, _ = await fetch(http, sim.base_url, path)
    assert len(body["data"]["products"]) == 10
    _, body, _ = await fetch(http, sim.base_url, SEARCH, {"query": "  Crocs   CLOGS "})
    assert body["data"]["totalProducts"] == 25


async def test_world_mutations_not_found_private_and_failing(sim, http):
    sim.world.stores[d.STORE_URL].not_found = True
    sim.world.showcases[d.HANDLE].private = True
    sim.world.searches[d.QUERY].failing = 503
    sim.world.rankings[d.CATEGORY_ID].failing = 500
    _, body, _ = await fetch(http, sim.base_url, STORE, store_params())
    assert body["data"]["lookupStatus"] == "not_found"
    _, body, _ = await fetch(http, sim.base_url, SHOWCASE)
    assert body["data"]["products"] == [] and body["data"]["page"]["hasMore"] is False
    status, body, _ = await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY})
    assert status == 503
    conforms(body, SF_ERROR_SCHEMA)
    assert body["error"]["code"] == "service_unavailable"
    status, body, _ = await fetch(http, sim.base_url, TOP, {"ecom_category_id": "601583"}, KA)
    assert status == 500 and body == {
        "code": 500,
        "data": None,
        "message": "Internal server error",
    }


async def test_outage_scenario_breaks_one_watch_at_a_time(http):
    async with await start_simulator(scenario="outage") as sim:
        sim.step()
        _, body, _ = await fetch(http, sim.base_url, STORE, store_params())
        assert body["data"]["lookupStatus"] == "not_found"
        sim.step()
        _, body, _ = await fetch(http, sim.base_url, STORE, store_params())
        assert body["data"]["lookupStatus"] == "found"
        _, body, _ = await fetch(http, sim.base_url, SHOWCASE)
        assert body["data"]["products"] == []
        sim.step()
        status, _, _ = await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY})
        assert status == 503
        sim.step()
        status, _, _ = await fetch(http, sim.base_url, TOP, {"ecom_category_id": "601450"}, KA)
        assert status == 500
        sim.step()
        for path, params, headers in (
            (STORE, store_params(), SF),
            (SHOWCASE, {}, SF),
            (SEARCH, {"query": d.QUERY}, SF),
            (TOP, {"ecom_category_id": "601450"}, KA),
        ):
            status, _, _ = await fetch(http, sim.base_url, path, params, headers)
            assert status == 200, path


# ---------------------------------------------------------------- auth and bad requests


@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"x-api-key": "   "}, KA])
@pytest.mark.parametrize("path", [STORE, SHOWCASE, SEARCH])
async def test_social_fetch_requires_x_api_key(sim, http, path, headers):
    params = {"url": d.STORE_URL, "query": d.QUERY}
    status, body, _ = await fetch(http, sim.base_url, path, params, headers)
    assert status == 401
    conforms(body, SF_ERROR_SCHEMA)
    assert body["error"] == {"code": "unauthorized", "message": "Missing or invalid API key"}
    assert body["meta"]["creditsCharged"] == 0 and body["meta"]["version"] == "v1"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}, {"Authorization": "k"}, SF],
)
async def test_keyapi_requires_bearer(sim, http, headers):
    status, body, _ = await fetch(http, sim.base_url, TOP, {}, headers)
    assert status == 401
    assert body == {"code": 401, "data": None, "message": "apiKey is null"}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (STORE, {}),
        (STORE, {"url": ""}),
        (STORE, {"url": d.STORE_URL, "region": "XX"}),
        (STORE, {"url": d.STORE_URL, "cursor": "not-a-cursor"}),
        (STORE, {"url": d.STORE_URL, "cursor": ""}),
        (SEARCH, {}),
        (SEARCH, {"query": d.QUERY, "page": "0"}),
        (SEARCH, {"query": d.QUERY, "page": "two"}),
        (SEARCH, {"query": d.QUERY, "region": "us"}),
        (SEARCH, {"query": "x" * 513}),
        ("/v1/tiktok/profiles/bad%20handle!/showcase-products", {}),
        (SHOWCASE, {"cursor": "%%%"}),
    ],
)
async def test_social_fetch_bad_parameters_are_400(sim, http, path, params):
    status, body, _ = await fetch(http, sim.base_url, path, params)
    assert status == 400
    conforms(body, SF_ERROR_SCHEMA)
    assert body["error"]["code"] == "bad_request" and body["error"]["message"]
    assert body["meta"]["creditsCharged"] == 0


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "many"}, {"page": "0"}])
async def test_keyapi_bad_parameters_are_400(sim, http, params):
    status, body, _ = await fetch(http, sim.base_url, TOP, params, KA)
    assert status == 400
    assert body["code"] == 400 and body["data"] is None and body["message"]


async def test_unknown_api_path_is_404_envelope(sim, http):
    status, body, _ = await fetch(http, sim.base_url, "/v1/tiktok/nothing")
    assert status == 404
    conforms(body, SF_ERROR_SCHEMA)


# ---------------------------------------------------------------- faults


async def test_fault_status_count_and_retry_after(sim, http):
    sim.add_fault(STORE, status=503, times=2, retry_after=0)
    for _ in range(2):
        status, body, headers = await fetch(http, sim.base_url, STORE, store_params())
        assert status == 503 and headers["Retry-After"] == "0"
        conforms(body, SF_ERROR_SCHEMA)
        assert body["error"]["code"] == "service_unavailable"
    status, _, headers = await fetch(http, sim.base_url, STORE, store_params())
    assert status == 200 and "Retry-After" not in headers
    assert sim.simulator.faults == []
    log = [r for r in sim.requests if r.path == STORE]
    assert [r.status for r in log] == [503, 503, 200]
    assert [r.fault for r in log] == ["json", "json", None]


async def test_fault_path_is_exact_so_search_is_not_hit_by_a_store_fault(sim, http):
    sim.add_fault(STORE, status=500)
    status, _, _ = await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY})
    assert status == 200
    status, _, _ = await fetch(http, sim.base_url, STORE, store_params())
    assert status == 500


async def test_fault_on_one_page_only(sim, http):
    sim.add_fault(STORE, status=502, page=2)
    status, first, _ = await fetch(http, sim.base_url, STORE, store_params())
    assert status == 200
    cursor = first["data"]["page"]["nextCursor"]
    status, body, _ = await fetch(http, sim.base_url, STORE, store_params(cursor=cursor))
    assert status == 502 and body["meta"]["creditsCharged"] == 1  # the docs charge a 502
    status, _, _ = await fetch(http, sim.base_url, STORE, store_params(cursor=cursor))
    assert status == 200
    sim.add_fault(SEARCH, status=503, page=3)
    pages_ok = [
        (await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY, "page": str(n)}))[0]
        for n in (1, 2, 3)
    ]
    assert pages_ok == [200, 200, 503]


async def test_fault_matching_params_and_glob(sim, http):
    sim.add_fault("/v1/tiktok/profiles/*", status=503, params={"handle": "someone.else"})
    assert (await fetch(http, sim.base_url, SHOWCASE))[0] == 200
    path = "/v1/tiktok/profiles/someone.else/showcase-products"
    assert (await fetch(http, sim.base_url, path))[0] == 503


async def test_fault_until_cleared(sim, http):
    sim.add_fault(TOP, status=503, times=None)
    for _ in range(3):
        assert (await fetch(http, sim.base_url, TOP, {}, KA))[0] == 503
    sim.simulator.clear_faults()
    assert (await fetch(http, sim.base_url, TOP, {}, KA))[0] == 200


@pytest.mark.parametrize("path", [STORE, SHOWCASE, SEARCH, TOP])
async def test_fault_bodies_that_do_not_parse(sim, http, path):
    params = {"url": d.STORE_URL, "query": d.QUERY}
    headers = KA if path == TOP else SF
    sim.add_fault(path, body="html", status=502)
    status, body, resp_headers = await fetch(http, sim.base_url, path, params, headers)
    assert status == 502 and resp_headers["Content-Type"].startswith("text/html")
    assert body.startswith(b"<html>") and b"502 Bad Gateway" in body

    sim.add_fault(path, body="truncated")
    status, body, resp_headers = await fetch(http, sim.base_url, path, params, headers)
    assert status == 200 and resp_headers["Content-Type"].startswith("application/json")
    assert isinstance(body, bytes)  # not valid JSON …
    healthy = json.dumps((await fetch(http, sim.base_url, path, params, headers))[1])
    assert healthy[:40] == body.decode()[:40]  # … but the start of a real answer

    sim.add_fault(path, body="garbage")
    status, body, _ = await fetch(http, sim.base_url, path, params, headers)
    assert status == 200 and isinstance(body, bytes)

    sim.add_fault(path, body="empty")
    status, body, _ = await fetch(http, sim.base_url, path, params, headers)
    assert status == 200 and body == b""


async def test_fault_wrong_types_keeps_the_envelope(sim, http):
    sim.add_fault(STORE, body="wrong_types")
    status, body, _ = await fetch(http, sim.base_url, STORE, store_params())
    assert status == 200 and body["data"]["lookupStatus"] == "found"
    product = body["data"]["products"][0]
    assert isinstance(product["id"], int) and isinstance(product["price"]["current"], float)
    assert isinstance(body["data"]["page"]["hasMore"], str)
    with pytest.raises(AssertionError):
        conforms(body, STORE_SCHEMA)
    sim.add_fault(TOP, body="wrong_types")
    status, body, _ = await fetch(http, sim.base_url, TOP, {}, KA)
    assert body["code"] == 0 and isinstance(body["data"]["pagination"]["has_more"], str)
    with pytest.raises(AssertionError):
        conforms(body, KEYAPI_SCHEMA)


async def test_keyapi_body_code_fault(sim, http):
    sim.add_fault(TOP, keyapi_code=429)
    status, body, _ = await fetch(http, sim.base_url, TOP, {}, KA)
    assert status == 200
    assert body == {"code": 429, "data": None, "message": "qps limit exceeded"}
    sim.add_fault(TOP, status=429, retry_after=1.5)
    status, body, headers = await fetch(http, sim.base_url, TOP, {}, KA)
    assert status == 429 and body["code"] == 429 and headers["Retry-After"] == "1.5"
    sim.add_fault(TOP, status=402)
    status, body, _ = await fetch(http, sim.base_url, TOP, {}, KA)
    assert body == {"code": 402, "data": None, "message": "apiKey quota is not enough"}
    assert sim.simulator.credits["keyapi"] == 0


async def test_fault_disconnect_drops_the_connection(sim, http):
    sim.add_fault(SEARCH, body="disconnect", times=2)  # aiohttp retries a dropped GET once
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY})
    assert [r.status for r in sim.requests] == [None, None]
    assert (await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY}))[0] == 200


async def test_fault_delay(sim, http):
    sim.add_fault(SEARCH, status=504, delay=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY}))[0] == 504
    assert loop.time() - started >= 0.3


def test_fault_validation():
    with pytest.raises(ValueError, match="body must be one of"):
        Fault(body="sparkles")
    with pytest.raises(ValueError, match="times"):
        Fault(times=0)
    with pytest.raises(ValueError, match="unknown fault keys"):
        Fault.from_json({"paths": "/x"})
    with pytest.raises(ValueError, match="wrong type"):
        Fault.from_json({"status": "503"})
    assert Fault(body="html").http_status == 200 and Fault().http_status == 503


# ---------------------------------------------------------------- control API


async def test_control_api_over_http(sim, http):
    base = sim.base_url
    fault = {"path": SEARCH, "status": 503, "times": 2, "retry_after": 0, "page": 1}
    async with http.post(f"{base}/_sim/faults", json=fault) as resp:
        assert resp.status == 201
    async with http.post(f"{base}/_sim/faults", json={"path": SEARCH, "body": "nope"}) as resp:
        assert resp.status == 400 and "body must be one of" in (await resp.json())["error"]
    async with http.get(f"{base}/_sim/faults") as resp:
        assert [f["times"] for f in (await resp.json())["faults"]] == [2]
    assert (await fetch(http, base, SEARCH, {"query": d.QUERY}))[0] == 503

    async with http.post(f"{base}/_sim/step") as resp:
        assert await resp.json() == {"step": 1}
    async with http.post(f"{base}/_sim/step", json={"count": 2}) as resp:
        assert await resp.json() == {"step": 3}
    async with http.get(f"{base}/_sim/requests") as resp:
        log = (await resp.json())["requests"]
    assert len(log) == 1
    entry = log[0]
    assert entry["method"] == "GET" and entry["path"] == SEARCH
    assert entry["query"] == {"query": d.QUERY} and entry["headers"] == ["x-api-key"]
    assert entry["status"] == 503 and entry["fault"] == "json" and entry["request_id"]
    assert "test-key" not in json.dumps(log)  # header presence only, never values
    assert isinstance(entry["time"], float)

    async with http.get(f"{base}/_sim/state") as resp:
        state = await resp.json()
    assert state["step"] == 3 and state["scenario"] == "demo" and state["last_step"] == 8
    assert state["world"]["stores"][d.STORE_URL]["sold_out"] == [d.RESTORE_KIT]
    assert state["faults"][0]["used"] == 1
    assert state["credits"] == {"socialfetch": 0, "keyapi": 0}

    async with http.post(f"{base}/_sim/reset") as resp:
        state = await resp.json()
    assert state["step"] == 0 and state["faults"] == [] and state["requests"] == 0
    async with http.post(f"{base}/_sim/reset", json={"scenario": "nope"}) as resp:
        assert resp.status == 400
    async with http.post(f"{base}/_sim/step", data=b"{not json") as resp:
        assert resp.status == 400


async def test_credits_follow_the_documented_prices(sim, http):
    await fetch(http, sim.base_url, STORE, store_params())  # 1
    await fetch(http, sim.base_url, STORE, {})  # 400: 0
    sim.add_fault(SEARCH, status=502)
    await fetch(http, sim.base_url, SEARCH, {"query": d.QUERY})  # 502: 1
    await fetch(http, sim.base_url, TOP, {}, KA)  # 2
    await fetch(http, sim.base_url, TOP, {}, {})  # 401: 0
    assert sim.simulator.credits == {"socialfetch": 2, "keyapi": 2}


async def test_auto_step_runs_the_script_then_stops(http):
    async with await start_simulator(step_every=0.01) as sim:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while sim.world.current_step < 8:
            assert loop.time() < deadline, "auto-step stalled"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert sim.world.current_step == 8


# ---------------------------------------------------------------- the demo timeline


def test_timeline_changes_at_documented_steps():
    world = build_world()
    store = world.stores[d.STORE_URL]
    search = world.searches[d.QUERY]
    ranking = world.rankings[d.CATEGORY_ID]
    assert (search.rank_of(d.CLASSIC_CLOG), search.rank_of(d.BAYA)) == (9, 14)
    assert (ranking.rank_of(d.LIP_GLOSS), ranking.rank_of(d.TEETH_WHITENING)) == (17, 12)
    prices = {pid: [] for pid in (d.ACV, d.MATCHA, d.PREBIOTIC, d.SUPERGREENS, d.SLEEP)}
    listed = []
    for _ in range(10):
        for pid, seen in prices.items():
            seen.append(str(store.product(pid).price))
        listed.append(d.RESTORE_KIT in {p.id for p in store.listed()})
        world.step()
    assert prices[d.ACV][:2] == ["19.99", "16.99"]
    assert prices[d.MATCHA][:7] == ["12.99", "12.99", "10.99", "10.99", "12.99", "12.99", "11.49"]
    assert prices[d.PREBIOTIC][:6] == ["16.99", "16.99", "18.99", "18.99", "18.99", "14.99"]
    assert prices[d.SUPERGREENS][2:4] == ["44.99", "34.99"]
    assert prices[d.SLEEP][7:] == ["29.99", "24.99", "24.99"]
    assert listed == [True, True, True, False, False, False, True, True, True, True]
    assert search.rank_of(d.CLASSIC_CLOG) == 2 and search.rank_of(d.BAYA) == 5
    assert str(search.product(d.CLASSIC_CLOG).price) == "29.99"
    assert (ranking.rank_of(d.LIP_GLOSS), ranking.rank_of(d.TEETH_WHITENING)) == (3, 6)
    assert len(world.showcases[d.HANDLE].listed()) == 17
    assert store.products[0].id == d.HOLIDAY_SET


def test_world_is_frozen_after_the_script_and_quiet_never_changes():
    world = build_world()
    world.step()
    sold = world.stores[d.STORE_URL].product(d.ACV).sold
    assert sold > 0
    for _ in range(8):
        world.step()
    frozen = world.summary(), [(p.id, p.price, p.sold) for p in world.stores[d.STORE_URL].products]
    world.step()
    world.step()
    assert frozen == (
        world.summary(),
        [(p.id, p.price, p.sold) for p in world.stores[d.STORE_URL].products],
    )
    quiet = build_world(scenario="quiet")
    before = [(p.id, p.price, p.sold) for p in quiet.searches[d.QUERY].products]
    quiet.step()
    assert [(p.id, p.price, p.sold) for p in quiet.searches[d.QUERY].products] == before
    with pytest.raises(ValueError, match="unknown scenario"):
        build_world(scenario="nope")
    assert set(SCENARIOS) == {"demo", "quiet", "outage"}


@dataclass
class _Seen:
    """Reference state of one watch, enough to evaluate demo.yaml's rules."""

    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # present last poll
    known: dict[str, dict[str, Any]] = field(default_factory=dict)  # every id since baseline
    prices: dict[str, list[Decimal]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


async def poll_watch(http: aiohttp.ClientSession, base: str, watch: Any) -> list[dict[str, Any]]:
    """One full poll of a demo.yaml watch, reduced to id/title/price/discount/rank."""
    out = []
    if watch.type in ("store", "showcase"):
        path = (
            STORE
            if watch.type == "store"
            else f"/v1/tiktok/profiles/{watch.handle}/showcase-products"
        )
        params = {"url": watch.url} if watch.type == "store" else {}
        pages = await walk_cursor(
            http, base, path, params | ({"region": watch.region} if watch.region else {})
        )
        for p in (p for b in pages for p in b["data"]["products"]):
            if watch.type == "store":
                price, disc = p["price"]["current"], p["price"]["discountText"]
            else:
                price = p["price"] and p["price"]["salePrice"]
                disc = p["price"] and p["price"]["discountPercent"]
            out.append({"id": p["id"], "title": p["title"], "price": price, "disc": disc})
    elif watch.type == "search":
        pages = await walk_numbered(http, base, SEARCH, {"query": watch.query}, keyapi=False)
        for p in (p for b in pages for p in b["data"]["products"]):
            price, disc = p["price"]["current"], p["price"]["discountText"]
            out.append({"id": p["id"], "title": p["title"], "price": price, "disc": disc})
    else:
        params = {"ecom_category_id": watch.category_id, "limit": "20"}
        pages = await walk_numbered(http, base, TOP, params, keyapi=True)
        for r in (r for b in pages for r in b["data"]["list"]):
            key = (r["third_ecom_category"] or r["second_ecom_category"])["id"]
            out.append({"id": key, "title": r["url_title"], "price": None, "disc": None})
    for rank, p in enumerate(out, 1):
        p["rank"] = rank
        p["price"] = Decimal(p["price"]) if p["price"] else None
        p["disc"] = int(p["disc"].rstrip("%")) if p["disc"] else None
    return out


def _fires(rule: Any, pid: str, old: dict | None, new: dict, seen: _Seen) -> bool:
    """Whether one product-level rule fires; ``old`` is None when absent last poll."""
    if rule.when == "new_item":
        return pid not in seen.known
    if rule.when == "back_in_stock":
        return pid in seen.removed
    if rule.when == "price_below":
        was_above = old is None or old["price"] is None or old["price"] > rule.params["target"]
        return new["price"] is not None and new["price"] <= rule.params["target"] and was_above
    if old is None:
        return False
    p0, p1 = old["price"], new["price"]
    if rule.when == "price_drop":
        least = rule.params["min_percent"] or 0
        return bool(p0 and p1 and p1 < p0 and (p0 - p1) / p0 * 100 >= least)
    if rule.when == "lowest_price":
        return bool(p1 and p1 != p0 and p1 < min(seen.prices[pid]))
    if rule.when == "discount_at_least":
        percent = rule.params["percent"]
        return new["disc"] is not None and new["disc"] >= percent > (old["disc"] or 0)
    if rule.when == "rank_jump":
        gained = old["rank"] - new["rank"]
        return gained >= rule.params["min_positions"] and new["rank"] <= rule.params["top"]
    raise AssertionError(f"no reference for {rule.when}")


def evaluate(cfg: Config, step: int, watch: Any, seen: _Seen, poll: list[dict[str, Any]]):
    """The demo rules over one poll, per SPEC §4–5 (ignoring cooldowns)."""
    fired: set[ExpectedAlert] = set()
    now = {p["id"]: p for p in poll}
    stock = watch.type in ("store", "showcase")

    def fire(rule_id: str, pid: str) -> None:
        fired.add(ExpectedAlert(step, rule_id, watch.id, pid))

    if seen.known:  # the first poll is a baseline: no alerts
        for rule in (r for r in cfg.rules.values() if r.applies_to(watch.id)):
            if rule.when == "out_of_stock":
                for pid in seen.known.keys() - now.keys():
                    if stock and seen.missed.get(pid, 0) + 1 == 2:
                        fire(rule.id, pid)
                continue
            for pid, new in now.items():
                if rule.match.title and not re.search(rule.match.title, new["title"] or ""):
                    continue
                if _fires(rule, pid, seen.last.get(pid), new, seen):
                    fire(rule.id, pid)
    # bookkeeping for the next poll
    for pid in set(seen.known) - set(now):
        seen.missed[pid] = seen.missed.get(pid, 0) + 1
        if stock and seen.missed[pid] == 2:
            seen.removed.add(pid)
    for pid, p in now.items():
        seen.missed[pid] = 0
        seen.removed.discard(pid)
        seen.known[pid] = p
        if p["price"] is not None:
            seen.prices.setdefault(pid, []).append(p["price"])
    seen.last = now
    return fired


async def test_demo_yaml_rules_fire_exactly_the_documented_alerts(sim, http):
    """Poll once per step after a baseline: the alerts are DEMO_EXPECTED_ALERTS, step by step."""
    cfg = load_config(DEMO_YAML, env={"WATCHER_SIM_URL": sim.base_url})
    state = {w: _Seen() for w in cfg.watches}
    fired: set[ExpectedAlert] = set()
    for step in range(11):
        if step:
            assert sim.step() == step
        for watch in cfg.watches.values():
            poll = await poll_watch(http, sim.base_url, watch)
            assert poll, f"{watch.id} is empty at step {step}"
            result = evaluate(cfg, step, watch, state[watch.id], poll)
            assert step or not result  # no baseline alerts
            fired |= result
    for step in range(1, 11):
        got = {a for a in fired if a.step == step}
        want = {a for a in DEMO_EXPECTED_ALERTS if a.step == step}
        assert got == want, f"step {step}"
    fired_kinds = {cfg.rules[a.rule].when for a in fired}
    assert fired_kinds == {r.when for r in cfg.rules.values()}  # every rule kind is exercised


def test_demo_yaml_points_at_the_demo_world():
    cfg = load_config(DEMO_YAML, env={"WATCHER_SIM_URL": "http://127.0.0.1:9"})
    world = build_world()
    for provider in cfg.providers.values():
        assert provider.base_url == "http://127.0.0.1:9" and provider.api_key == "demo-key"
    assert [c.type for c in cfg.channels.values()] == ["console"]
    by_type = {w.type: w for w in cfg.watches.values()}
    assert set(by_type) == {"store", "showcase", "search", "top_products"}
    assert world.find_store(by_type["store"].url) is world.stores[d.STORE_URL]
    assert world.find_showcase(by_type["showcase"].handle) is not None
    assert "clog" in by_type["search"].query and world.find_search(by_type["search"].query)
    assert by_type["top_products"].category_id == d.CATEGORY_ID
    for watch in cfg.watches.values():
        assert watch.every is not None and watch.every.total_seconds() == 3
    # max_pages reads everything, even after the store grows to 33 products
    assert by_type["store"].max_pages * 10 >= 33 and by_type["search"].max_pages * 10 >= 25
    assert by_type["top_products"].max_pages * 20 >= 30
    for rule in cfg.rules.values():
        assert rule.cooldown.total_seconds() <= 1
    assert {a.rule for a in DEMO_EXPECTED_ALERTS} == set(cfg.rules)
    assert {a.watch for a in DEMO_EXPECTED_ALERTS} == set(cfg.watches)


# ---------------------------------------------------------------- determinism


async def _all_payloads(http: aiohttp.ClientSession, base: str) -> list[Any]:
    bodies: list[Any] = []
    bodies += await walk_cursor(http, base, STORE, store_params())
    bodies += await walk_cursor(http, base, SHOWCASE, {})
    bodies += await walk_numbered(http, base, SEARCH, {"query": d.QUERY}, keyapi=False)
    bodies += await walk_numbered(http, base, TOP, {}, keyapi=True)
    for body in bodies:
        body.pop("requestId", None)
        body.get("meta", {}).pop("requestId", None)
    return bodies


async def test_same_seed_same_payloads_except_request_ids(http):
    async with await start_simulator(seed=7) as a, await start_simulator(seed=7) as b:
        for _ in range(9):
            assert await _all_payloads(http, a.base_url) == await _all_payloads(http, b.base_url)
            a.step()
            b.step()
        async with await start_simulator(seed=8) as c:
            other = await _all_payloads(http, c.base_url)
            a.reset()
            assert await _all_payloads(http, a.base_url) != other
    # the key products keep their ids whatever the seed
    ids = {p.id for p in build_world(seed=123).stores[d.STORE_URL].products}
    assert {d.ACV, d.RESTORE_KIT, d.SLEEP} <= ids


def test_in_process_simulator_without_sockets():
    sim = Simulator(page_size=3)
    assert sim.step(3) == 3
    assert d.RESTORE_KIT in sim.world.stores[d.STORE_URL].sold_out
    sim.reset(seed=99)
    assert sim.world.current_step == 0 and sim.seed == 99
    routes = {r.resource.canonical for r in sim.app.router.routes() if r.resource}
    assert {STORE, SEARCH, TOP, "/v1/tiktok/profiles/{handle}/showcase-products"} <= routes
    with pytest.raises(ValueError):
        Simulator(page_size=0)


# ---------------------------------------------------------------- the command line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("port_choice", ["free", "zero"])
async def test_cli_prints_listening_line_and_stops_on_sigterm(http, port_choice):
    port = _free_port() if port_choice == "free" else 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher.simulator",
        "--port",
        str(port),
        "--scenario",
        "demo",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))", line)
        assert match, line
        if port:
            assert int(match.group(2)) == port
        base = match.group(1)
        assert (await fetch(http, base, STORE, store_params()))[0] == 200
        async with http.post(f"{base}/_sim/step") as resp:
            assert await resp.json() == {"step": 1}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
