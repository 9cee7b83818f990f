"""ProviderClient against mocked upstreams: paging, retries, status codes, credits, budget."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from watcher import config, kinds
from watcher.config import WATCH_PROVIDERS, ProviderConfig, WatchConfig
from watcher.errors import PaymentRequired, ProviderUnavailable
from watcher.models import Product
from watcher.sources import PROVIDERS, SOURCES, keyapi, socialfetch
from watcher.sources.client import MAX_ATTEMPTS, USER_AGENT, ProviderClient, retry_after_seconds

UPSTREAM = Path(__file__).parent / "data" / "upstream"

SF_KEY = "sfk_super_secret_key"
KA_KEY = "sk_live_super_secret"
SF = ProviderConfig(name="socialfetch", api_key=SF_KEY, base_url="https://sf.test/")
KA = ProviderConfig(name="keyapi", api_key=KA_KEY, base_url="https://ka.test")

STORE_URL = "https://www.tiktok.com/shop/store/goli-nutrition/7495794203056835079"
STORE = WatchConfig(id="goli-store", type="store", url=STORE_URL, region="US")
SHOWCASE = WatchConfig(id="charli-showcase", type="showcase", handle="charlidamelio")
SEARCH = WatchConfig(id="crocs-search", type="search", query="crocs clogs", region="GB")
TOP = WatchConfig(id="perfume-top", type="top_products", category_id="601583")

STORE_RE = re.compile(r"^https://sf\.test/v1/tiktok/shop/products\?")
SEARCH_RE = re.compile(r"^https://sf\.test/v1/tiktok/shop/products/search\?")
SHOWCASE_RE = re.compile(r"^https://sf\.test/v1/tiktok/profiles/[^/]+/showcase-products")
TOP_RE = re.compile(r"^https://ka\.test/v1/tiktok/insights/products\?")


def load(name: str) -> Any:
    return json.loads((UPSTREAM / f"{name}.json").read_text())


def store_page(
    ids: list[str], *, cursor: str | None = None, has_more: bool | None = None, rid: str = "r"
) -> dict[str, Any]:
    """A store page built from the recorded example, with the given product ids."""
    body = load("store_found")
    template = body["data"]["products"][0]
    body["data"]["products"] = [{**copy.deepcopy(template), "id": pid} for pid in ids]
    more = cursor is not None if has_more is None else has_more
    body["data"]["page"] = {"nextCursor": cursor, "hasMore": more}
    body["meta"]["requestId"] = rid
    return body


def sf_error(code: str, message: str, rid: str, credits: int | None = 0) -> dict[str, Any]:
    meta: dict[str, Any] = {"requestId": rid}
    if credits is not None:
        meta["creditsCharged"] = credits
    return {"error": {"code": code, "message": message}, "meta": meta}


def keyapi_page(titles: list[str], *, page: int = 1, has_more: bool = False) -> dict[str, Any]:
    body = load("keyapi_example")
    body["data"]["list"] = [{"url_title": title} for title in titles]
    body["data"]["pagination"] = {"page": page, "size": len(titles), "has_more": has_more}
    return body


class Sleeps:
    """Injected ``sleep``: records delays instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)


class Harness:
    """A client plus everything it reported, for one test."""

    def __init__(self, provider: ProviderConfig, **kwargs: Any) -> None:
        self.sleeps = Sleeps()
        self.credits: list[tuple[str, int]] = []
        kwargs.setdefault("on_credits", lambda name, credits: self.credits.append((name, credits)))
        kwargs.setdefault("random", lambda: 0.5)
        self.client = ProviderClient(provider, sleep=self.sleeps, **kwargs)

    @property
    def spent(self) -> list[int]:
        return [credits for _, credits in self.credits]


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(provider: ProviderConfig = SF, **kwargs: Any) -> Harness:
        made.append(Harness(provider, **kwargs))
        return made[-1]

    yield factory
    for harness in made:
        await harness.client.close()


@pytest.fixture
def mock() -> Any:
    with aioresponses() as m:
        yield m


def sent(m: aioresponses) -> list[tuple[URL, dict[str, Any]]]:
    """Every request aioresponses saw, as (URL with sorted query, call kwargs)."""
    return [(key[1], call.kwargs) for key, calls in m.requests.items() for call in calls]


def queries(m: aioresponses) -> list[dict[str, str]]:
    return [dict(url.query) for url, _ in sent(m)]


# --------------------------------------------------------------------------- registry


def test_registry_matches_declared_watch_types() -> None:
    assert set(SOURCES) == set(kinds.WATCH_TYPES)
    for name, source in SOURCES.items():
        assert source.provider == kinds.WATCH_TYPES[name].provider == WATCH_PROVIDERS[name]
    assert set(PROVIDERS) == set(kinds.PROVIDERS)


def test_provider_facts_come_from_the_provider_modules() -> None:
    """Names, base URLs and regions are declared once, in socialfetch.py and keyapi.py."""
    assert kinds.PROVIDERS == (socialfetch.NAME, keyapi.NAME) == tuple(PROVIDERS)
    assert config.DEFAULT_BASE_URLS == {
        socialfetch.NAME: socialfetch.BASE_URL,
        keyapi.NAME: keyapi.BASE_URL,
    }
    assert config.SOCIALFETCH_REGIONS == socialfetch.REGIONS
    for module in (socialfetch, keyapi):
        assert PROVIDERS[module.NAME] is module.PROVIDER
        assert all(source.provider == module.NAME for source in module.PROVIDER.sources)
        assert module.PROVIDER.price == module.PRICE


def test_config_reads_provider_facts_without_http_or_parsers() -> None:
    """``watcher check`` imports the config loader: no aiohttp, no PTB, no parsing code, no
    store (the frozen models of the bottom layer are fine: channel types render with them)."""
    code = (
        "import sys, watcher.config, watcher.kinds; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'sqlalchemy') "
        "or m in ('telegram', 'watcher.sources.normalise', 'watcher.sources.client')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


CREDITS = yaml.safe_load((UPSTREAM / "credits.yaml").read_text())


@pytest.mark.parametrize("case", CREDITS, ids=[c["id"] for c in CREDITS])
def test_credits_of_a_response(case: dict[str, Any]) -> None:
    assert PROVIDERS[case["provider"]].credits(case["status"], case["body"]) == case["credits"]


@pytest.mark.parametrize(
    ("watch", "first", "following"),
    [
        pytest.param(
            STORE,
            ("/v1/tiktok/shop/products", {"url": STORE_URL, "region": "US"}),
            {"url": STORE_URL, "region": "US", "cursor": "c2"},
            id="store",
        ),
        pytest.param(
            WatchConfig(id="s", type="showcase", handle="@char li/x", region="somewhere"),
            ("/v1/tiktok/profiles/char%20li%2Fx/showcase-products", {"region": "somewhere"}),
            {"region": "somewhere", "cursor": "c2"},
            id="showcase-quoted-handle",
        ),
        pytest.param(
            WatchConfig(id="q", type="search", query="crocs"),
            ("/v1/tiktok/shop/products/search", {"query": "crocs", "page": "1"}),
            {"query": "crocs", "page": "c2"},
            id="search-no-region",
        ),
        pytest.param(
            TOP,
            ("/v1/tiktok/insights/products",
             {"limit": "20", "ecom_category_id": "601583", "page": "1"}),
            {"limit": "20", "ecom_category_id": "601583", "page": "c2"},
            id="keyapi-minimal",
        ),
        pytest.param(
            WatchConfig(id="t", type="top_products", keyword="lipstick", time_scope="7",
                        region="US"),
            ("/v1/tiktok/insights/products",
             {"limit": "20", "search_keyword": "lipstick", "time_scope": "7", "region": "US",
              "page": "1"}),
            {"limit": "20", "search_keyword": "lipstick", "time_scope": "7", "region": "US",
             "page": "c2"},
            id="keyapi-everything",
        ),
    ],
)  # fmt: skip
def test_request_specs(
    watch: WatchConfig, first: tuple[str, dict[str, str]], following: dict[str, str]
) -> None:
    source = SOURCES[watch.type]
    request = source.first_request(watch)
    assert (request.path, request.params) == first
    assert source.next_request(watch, "c2").params == following


# --------------------------------------------------------------------------- happy paths


async def test_store_pages_repeat_params_and_rank_across_pages(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, payload=store_page(["a", "b"], cursor="CUR 2+/="))
    mock.get(STORE_RE, payload=store_page(["b", "c"], cursor=None, has_more=False))
    result = await h.client.poll(STORE)
    assert [(p.id, p.rank) for p in result.products] == [("a", 1), ("b", 2), ("c", 3)]
    assert (result.complete, result.exhausted, result.not_found) == (True, True, False)
    assert (result.pages, result.credits, result.errors) == (2, 2, ())
    assert queries(mock) == [
        {"url": STORE_URL, "region": "US"},
        {"url": STORE_URL, "region": "US", "cursor": "CUR 2+/="},
    ]
    assert h.credits == [("socialfetch", 1), ("socialfetch", 1)]
    assert h.sleeps.calls == []


async def test_product_values_survive_the_client(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, payload=load("store_sparse"))
    (product,) = (await h.client.poll(STORE)).products
    assert product == Product(
        id="1732299628898390535",
        title="Goli Restore Kit - 1 Silk Pillow Case & 1 Silk Eye Mask",
        url="https://www.tiktok.com/shop/pdp/1732299628898390535",
        image_url="https://p16.example.com/p.webp",
        currency="USD",
        price=Decimal("99.98"),
        sold=3076,
        rank=1,
        shop_id="7495794203056835079",
    )


async def test_auth_and_user_agent_headers(make: Any, mock: Any) -> None:
    sf, ka = make(SF), make(KA)
    mock.get(STORE_RE, payload=load("store_not_found"))
    mock.get(TOP_RE, payload=keyapi_page(["Perfume"]))
    await sf.client.poll(STORE)
    await ka.client.poll(TOP)
    (_, sf_call), (_, ka_call) = sent(mock)
    assert sf_call["headers"]["x-api-key"] == SF_KEY
    assert "Authorization" not in sf_call["headers"]
    assert ka_call["headers"]["Authorization"] == f"Bearer {KA_KEY}"
    assert "x-api-key" not in ka_call["headers"]
    for call in (sf_call, ka_call):
        assert call["headers"]["User-Agent"] == USER_AGENT
    assert SF_KEY not in repr(sf.client) and KA_KEY not in repr(ka.client)


async def test_showcase_cursor_paging(make: Any, mock: Any) -> None:
    h = make()
    mock.get(SHOWCASE_RE, payload=load("showcase_first_page"))
    mock.get(SHOWCASE_RE, payload=load("showcase_paginated"))
    mock.get(SHOWCASE_RE, payload=load("showcase_empty"))
    result = await h.client.poll(SHOWCASE)
    assert [p.id for p in result.products] == ["1729508370969629931", "1731414247972311160"]
    assert (result.exhausted, result.pages, result.credits) == (True, 3, 3)
    assert queries(mock) == [
        {},
        {"cursor": "eyJwcm9kdWN0SWRzIjpbIjE3In0"},
        {"cursor": "eyJwcm9kdWN0SWRzIjpbIjI5In0"},
    ]
    assert all(url.path.endswith("/charlidamelio/showcase-products") for url, _ in sent(mock))


async def test_search_page_numbers(make: Any, mock: Any) -> None:
    h = make()
    mock.get(SEARCH_RE, payload=load("search_sample"))
    mock.get(SEARCH_RE, payload=load("search_sparse"))
    result = await h.client.poll(SEARCH)
    assert [p.rank for p in result.products] == [1, 2]
    assert queries(mock) == [
        {"query": "crocs clogs", "region": "GB", "page": "1"},
        {"query": "crocs clogs", "region": "GB", "page": "2"},
    ]


async def test_keyapi_paging_and_credits(make: Any, mock: Any) -> None:
    h = make(KA)
    watch = WatchConfig(id="t", type="top_products", category_id="601583", max_pages=5)
    mock.get(TOP_RE, payload=keyapi_page(["A", "B"], page=1, has_more=True))
    mock.get(TOP_RE, payload=keyapi_page(["C"], page=2, has_more=False))
    result = await h.client.poll(watch)
    assert [(p.id, p.rank) for p in result.products] == [("A", 1), ("B", 2), ("C", 3)]
    assert (result.exhausted, result.pages, result.credits) == (True, 2, 4)
    assert h.credits == [("keyapi", 2), ("keyapi", 2)]
    assert queries(mock) == [
        {"page": "1", "limit": "20", "ecom_category_id": "601583"},
        {"page": "2", "limit": "20", "ecom_category_id": "601583"},
    ]


async def test_not_found_store(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, payload=load("store_not_found"))
    result = await h.client.poll(STORE)
    assert (result.not_found, result.complete, result.exhausted) == (True, True, True)
    assert (result.products, result.pages, result.credits, result.errors) == ((), 1, 1, ())


# --------------------------------------------------------------------------- stop conditions


@pytest.mark.parametrize(
    ("pages", "max_pages", "requests", "exhausted"),
    [
        pytest.param([store_page(["a"], has_more=False)], 5, 1, True, id="hasMore-false"),
        pytest.param(
            [store_page(["a"], cursor="ignored", has_more=False)], 5, 1, True,
            id="hasMore-false-with-cursor",
        ),
        pytest.param([store_page(["a"], cursor=None, has_more=True)], 5, 1, True,
                     id="nextCursor-null"),
        # an empty page stops paging (spec section 1) but only upstream can say "no more":
        # products beyond a glitching empty page must not become removal candidates
        pytest.param([store_page(["a"], cursor="c2"), store_page([], cursor="c3")], 5, 2, False,
                     id="empty-page-with-hasMore"),
        pytest.param([store_page([], cursor="c2")], 5, 1, False, id="empty-first-page-hasMore"),
        pytest.param([store_page(["a"], cursor="c2"), store_page([], has_more=False)], 5, 2,
                     True, id="empty-last-page"),
        pytest.param([store_page(["a"], cursor="c2"), store_page([], cursor=None, has_more=True)],
                     5, 2, True, id="empty-page-without-cursor"),
        pytest.param([store_page(["a"], cursor="c2"), store_page(["b"], cursor="c3")], 2, 2, False,
                     id="max-pages-while-hasMore"),
        pytest.param([store_page(["a"], cursor="c2")], 1, 1, False, id="max-pages-one"),
    ],
)  # fmt: skip
async def test_stop_conditions(
    make: Any, mock: Any, pages: list[Any], max_pages: int, requests: int, exhausted: bool
) -> None:
    h = make()
    for page in pages:
        mock.get(STORE_RE, payload=page)
    watch = WatchConfig(id="w", type="store", url=STORE_URL, max_pages=max_pages)
    result = await h.client.poll(watch)
    assert len(sent(mock)) == requests == result.pages
    assert (result.exhausted, result.complete) == (exhausted, True)


async def test_repeated_empty_pages_never_exhaust(make: Any, mock: Any) -> None:
    """The same upstream glitch poll after poll: each poll stops, none may remove products."""
    h = make()
    watch = WatchConfig(id="w", type="store", url=STORE_URL, max_pages=5)
    for _ in range(3):
        mock.get(STORE_RE, payload=store_page(["a"], cursor="c2"))
        mock.get(STORE_RE, payload=store_page([], cursor="c3"))
        result = await h.client.poll(watch)
        assert [p.id for p in result.products] == ["a"]
        assert (result.complete, result.exhausted, result.pages) == (True, False, 2)


async def test_keyapi_empty_page_with_has_more_is_not_exhausted(make: Any, mock: Any) -> None:
    h = make(KA)
    mock.get(TOP_RE, payload=keyapi_page(["A"], page=1, has_more=True))
    mock.get(TOP_RE, payload=keyapi_page([], page=2, has_more=True))
    result = await h.client.poll(TOP)
    assert (result.pages, result.complete, result.exhausted) == (2, True, False)


async def test_search_empty_page_with_next_page_is_not_exhausted(make: Any, mock: Any) -> None:
    h = make()
    body = load("search_empty")
    body["data"]["page"] = {"currentPage": 1, "nextPage": 2, "hasMore": True}
    mock.get(SEARCH_RE, payload=body)
    result = await h.client.poll(SEARCH)
    assert (result.pages, result.complete, result.exhausted) == (1, True, False)


async def test_search_stops_when_next_page_null(make: Any, mock: Any) -> None:
    h = make()
    body = load("search_sample")
    body["data"]["page"]["nextPage"] = None
    mock.get(SEARCH_RE, payload=body)
    result = await h.client.poll(SEARCH)
    assert (result.pages, result.exhausted) == (1, True)


# --------------------------------------------------------------------------- Social Fetch statuses


@pytest.mark.parametrize(
    ("status", "body", "retried", "message", "credit"),
    [
        pytest.param(400, sf_error("bad_request", "url is not a store URL", "req_400"), False,
                     "HTTP 400 Bad Request: url is not a store URL (request req_400)", 0,
                     id="400"),
        pytest.param(401, sf_error("unauthorized", "bad key", "req_401"), False,
                     "HTTP 401 Unauthorized: check the api_key of provider socialfetch "
                     "(request req_401)", 0, id="401"),
        pytest.param(429, sf_error("rate_limited", "slow down", "req_429"), True,
                     "HTTP 429 Too Many Requests: slow down (request req_429)", 0, id="429"),
        pytest.param(500, sf_error("internal", "boom", "req_500"), True,
                     "HTTP 500 Internal Server Error: boom (request req_500)", 0, id="500"),
        pytest.param(502, sf_error("normalization_failed", "bad data", "req_502", credits=None),
                     True, "HTTP 502 Bad Gateway: bad data (request req_502)", 1,
                     id="502-documented-price"),
        pytest.param(503, None, True, "HTTP 503 Service Unavailable", 0, id="503-no-body"),
        pytest.param(404, None, False, "HTTP 404 Not Found", 0, id="404-undocumented"),
    ],
)  # fmt: skip
async def test_socialfetch_error_statuses(
    make: Any,
    mock: Any,
    status: int,
    body: Any,
    retried: bool,
    message: str,
    credit: int,
) -> None:
    h = make()
    mock.get(STORE_RE, status=status, payload=body, repeat=True)
    result = await h.client.poll(STORE)
    attempts = MAX_ATTEMPTS if retried else 1
    assert len(sent(mock)) == attempts
    assert result.errors == (f"store goli-store page 1: {message}",)
    assert (result.complete, result.exhausted, result.products) == (False, False, ())
    assert h.spent == [credit] * attempts
    assert result.credits == credit * attempts
    assert h.sleeps.calls == ([0.25, 0.5] if retried else [])


async def test_402_raises_payment_required_at_once(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, status=402, payload=sf_error("insufficient_credits", "top up", "req_402"))
    with pytest.raises(PaymentRequired) as caught:
        await h.client.poll(STORE)
    assert caught.value.request_id == "req_402"
    assert "socialfetch" in str(caught.value) and "top up" in str(caught.value)
    assert len(sent(mock)) == 1 and h.sleeps.calls == []
    assert h.spent == [0]


async def test_402_on_a_later_page_raises_too(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, payload=store_page(["a"], cursor="c2"))
    mock.get(STORE_RE, status=402, body="Payment Required")
    with pytest.raises(PaymentRequired):
        await h.client.poll(STORE)


async def test_retry_then_success(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, status=503, body="<html>busy</html>", content_type="text/html")
    mock.get(STORE_RE, status=502, body="<html>bad gateway</html>", content_type="text/html")
    mock.get(STORE_RE, payload=store_page(["a"], has_more=False))
    result = await h.client.poll(STORE)
    assert (result.complete, result.errors, [p.id for p in result.products]) == (True, (), ["a"])
    assert h.sleeps.calls == [0.25, 0.5]  # random 0.5 × 0.5 s × 2**attempt
    assert h.spent == [0, 1, 1]


async def test_later_page_failure_keeps_earlier_pages(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, payload=store_page(["a", "b"], cursor="c2"))
    mock.get(STORE_RE, status=503, payload=sf_error("unavailable", "", "req_123"), repeat=True)
    result = await h.client.poll(STORE)
    assert result.errors == (
        "store goli-store page 2: HTTP 503 Service Unavailable (request req_123)",
    )
    assert [p.id for p in result.products] == ["a", "b"]
    assert (result.complete, result.exhausted, result.pages) == (False, False, 1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param("1.5", 1.5, id="fraction"),
        pytest.param("120", 60.0, id="capped-at-60"),
        pytest.param("soon", 0.25, id="garbage-falls-back-to-jitter"),
    ],
)
async def test_retry_after_is_honoured(make: Any, mock: Any, header: str, expected: float) -> None:
    h = make()
    mock.get(STORE_RE, status=429, headers={"Retry-After": header}, payload=sf_error("r", "", "x"))
    mock.get(STORE_RE, payload=store_page(["a"], has_more=False))
    result = await h.client.poll(STORE)
    assert result.complete
    assert h.sleeps.calls == [expected]


def test_retry_after_parsing() -> None:
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("nan") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500.0) == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 09:28:00 GMT", now=1445412500.0) == 60.0


async def test_backoff_doubles_with_full_jitter(make: Any, mock: Any) -> None:
    h = make(backoff_base=2.0, random=lambda: 1.0)  # upper bound of the jitter window
    mock.get(STORE_RE, status=500, repeat=True)
    await h.client.poll(STORE)
    assert h.sleeps.calls == [2.0, 4.0]


async def test_error_body_credits_are_authoritative(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, status=500, payload=sf_error("billing", "billing error", "r1", credits=1))
    mock.get(STORE_RE, status=502, payload=sf_error("normalization", "x", "r2", credits=0))
    body = store_page(["a"], has_more=False)
    body["meta"]["creditsCharged"] = 0
    mock.get(STORE_RE, payload=body)
    result = await h.client.poll(STORE)
    assert h.spent == [1, 0, 0] and result.credits == 1


async def test_200_without_credits_field_costs_documented_price(make: Any, mock: Any) -> None:
    h = make()
    body = store_page(["a"], has_more=False)
    del body["meta"]["creditsCharged"]
    mock.get(STORE_RE, payload=body)
    assert (await h.client.poll(STORE)).credits == 1


# --------------------------------------------------------------------------- KeyAPI statuses


@pytest.mark.parametrize(
    ("http_status", "fixture", "retried", "message"),
    [
        pytest.param(400, "keyapi_error_400", False,
                     "HTTP 400 Bad Request: Missing required parameter: handle", id="http-400"),
        pytest.param(401, "keyapi_error_401", False,
                     "HTTP 401 Unauthorized: check the api_key of provider keyapi", id="http-401"),
        pytest.param(429, "keyapi_error_429", True,
                     "HTTP 429 Too Many Requests: qps limit exceeded", id="http-429"),
        pytest.param(500, "keyapi_error_500", True,
                     "HTTP 500 Internal Server Error: Internal server error", id="http-500"),
        pytest.param(200, "keyapi_error_400", False,
                     "HTTP 200 with body code 400 Bad Request: Missing required parameter: handle",
                     id="body-400"),
        pytest.param(200, "keyapi_error_401", False,
                     "HTTP 200 with body code 401 Unauthorized: check the api_key of provider "
                     "keyapi", id="body-401"),
        pytest.param(200, "keyapi_error_429", True,
                     "HTTP 200 with body code 429 Too Many Requests: qps limit exceeded",
                     id="body-429"),
        pytest.param(200, "keyapi_error_500", True,
                     "HTTP 200 with body code 500 Internal Server Error: Internal server error",
                     id="body-500"),
    ],
)  # fmt: skip
async def test_keyapi_error_statuses(
    make: Any, mock: Any, http_status: int, fixture: str, retried: bool, message: str
) -> None:
    h = make(KA)
    body = load(fixture)
    body["requestId"] = "kreq-1"
    mock.get(TOP_RE, status=http_status, payload=body, repeat=True)
    result = await h.client.poll(TOP)
    attempts = MAX_ATTEMPTS if retried else 1
    assert len(sent(mock)) == attempts
    assert result.errors == (f"top_products perfume-top page 1: {message} (request kreq-1)",)
    assert result.complete is False
    assert h.spent == [2] * attempts  # 2 credits per request, retries included
    assert result.credits == 2 * attempts


@pytest.mark.parametrize("http_status", [200, 402])
async def test_keyapi_402_in_status_or_body(make: Any, mock: Any, http_status: int) -> None:
    h = make(KA)
    mock.get(TOP_RE, status=http_status, payload=load("keyapi_error_402"))
    with pytest.raises(PaymentRequired) as caught:
        await h.client.poll(TOP)
    assert "apiKey quota is not enough" in str(caught.value)
    assert h.spent == [2]


async def test_keyapi_body_429_retries_then_succeeds(make: Any, mock: Any) -> None:
    h = make(KA)
    mock.get(TOP_RE, payload=load("keyapi_error_429"), headers={"Retry-After": "2"})
    mock.get(TOP_RE, payload=keyapi_page(["Perfume"]))
    result = await h.client.poll(TOP)
    assert (result.complete, [p.id for p in result.products]) == (True, ["Perfume"])
    assert h.sleeps.calls == [2.0]
    assert result.credits == 4


# --------------------------------------------------------------------------- broken bodies


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        pytest.param("<html><body>Gateway</body></html>", {"x-request-id": "hdr-9"},
                     "response is not valid JSON", id="html"),
        pytest.param('{"data": {"products": [', {}, "response is not valid JSON", id="truncated"),
        pytest.param("", {}, "response is not valid JSON", id="empty"),
        pytest.param(json.dumps({"data": [], "meta": {"requestId": "req_shape"}}), {},
                     "data is a list", id="wrong-shape"),
    ],
)  # fmt: skip
async def test_broken_200_bodies_fail_the_page_without_retry(
    make: Any,
    mock: Any,
    caplog: pytest.LogCaptureFixture,
    body: str,
    headers: dict[str, str],
    fragment: str,
) -> None:
    h = make()
    mock.get(STORE_RE, status=200, body=body, headers=headers, repeat=True)
    with caplog.at_level(logging.WARNING, logger="watcher.sources"):
        result = await h.client.poll(STORE)
    assert len(sent(mock)) == 1
    (error,) = result.errors
    assert error.startswith("store goli-store page 1: ") and fragment in error
    assert (result.complete, result.products) == (False, ())
    assert h.spent == [1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and fragment in warnings[0].getMessage()
    rid = json.loads(body)["meta"]["requestId"] if fragment == "data is a list" else None
    for expected in filter(None, [headers.get("x-request-id"), rid]):
        assert f"(request {expected})" in error and expected in warnings[0].getMessage()


async def test_keyapi_wrong_shape_names_request_id(make: Any, mock: Any) -> None:
    h = make(KA)
    body = keyapi_page(["A"])
    del body["data"]["pagination"]
    mock.get(TOP_RE, payload=body)
    result = await h.client.poll(TOP)
    assert result.errors == (
        "top_products perfume-top page 1: data.pagination is missing or null, expected an "
        "object (request d8a309f6-e55c-4569-b17e-a148368362a4)",
    )


async def test_second_page_malformed_keeps_first(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, payload=store_page(["a"], cursor="c2"))
    mock.get(
        STORE_RE, payload={"data": {"products": [{"title": "no id"}], "page": {"hasMore": False}}}
    )
    result = await h.client.poll(STORE)
    assert [p.id for p in result.products] == ["a"]
    assert result.errors == (
        "store goli-store page 2: 1 of 1 products unusable, first: data.products[0] has no "
        "string or integer id (id is None)",
    )
    assert not result.complete


async def test_a_few_unusable_products_are_skipped_and_the_poll_is_not_complete(
    make: Any, mock: Any
) -> None:
    """Skipped is not absent: the poll keeps the good products but may not remove or re-rank."""
    h = make()
    page = store_page(["a", "b", "c"])
    page["data"]["products"][1]["title"] = {"en": "an object where a title belongs"}
    mock.get(STORE_RE, payload=page)
    result = await h.client.poll(STORE)
    assert [p.id for p in result.products] == ["a", "c"]
    assert result.errors == ()
    assert result.exhausted and not result.complete


# The recorded card is "current": "14.96", "original": "24.99", "discountText": "40%". The
# normaliser's bounds: a price must be finite and below 10**9, a count below 10**12, a
# percent within 0..100; a value out of bounds becomes None, and a discount text that is not
# a percent falls back to the one computed from the two prices (10.03 / 24.99 = 40.1 % → 40).
@pytest.mark.parametrize(
    ("price", "sold", "expected"),
    [
        pytest.param(
            {"discountText": "123456789012345678901234567890%"},
            5,
            (Decimal("14.96"), Decimal("24.99"), 40, 5),
            id="30-digit-text",
        ),
        pytest.param(
            {"discountText": 1e40, "current": 1e40, "original": 1e40},
            5,
            (None, None, None, 5),
            id="1e40",
        ),
        pytest.param(
            {"current": "1e30", "original": "NaN"},
            1e40,
            (None, None, 40, None),
            id="exotic-strings",
        ),
    ],
)
async def test_absurd_numbers_do_not_crash_the_poll(
    make: Any, mock: Any, price: dict[str, Any], sold: Any, expected: tuple[Any, ...]
) -> None:
    h = make()
    body = store_page(["a"])
    body["data"]["products"][0]["price"].update(price)
    body["data"]["products"][0]["metrics"]["sold"] = sold
    mock.get(STORE_RE, payload=body)
    result = await h.client.poll(STORE)
    assert (result.complete, result.errors) == (True, ())
    (product,) = result.products
    got = (product.price, product.original_price, product.discount_percent, product.sold)
    assert got == expected
    # the fields the case leaves alone are still read
    assert (product.rating, product.reviews) == (Decimal("4.5"), 93661)


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(ZeroDivisionError("division by zero"), id="zero-division"),
        pytest.param(ArithmeticError("overflow"), id="arithmetic"),
        pytest.param(ValueError("bad\nvalue"), id="value"),
        pytest.param(KeyError("price"), id="key"),
        pytest.param(RecursionError("too deep"), id="recursion"),
    ],
)
async def test_parser_exceptions_become_failed_pages(
    make: Any,
    mock: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    exc: Exception,
) -> None:
    def broken(raw: Any) -> Any:
        raise exc

    monkeypatch.setitem(SOURCES, "store", dataclasses.replace(SOURCES["store"], parse=broken))
    h = make()
    mock.get(STORE_RE, payload=store_page(["a"], rid="req_boom"), repeat=True)
    with caplog.at_level(logging.WARNING, logger="watcher.sources"):
        result = await h.client.poll(STORE)
    assert len(sent(mock)) == 1  # a malformed page is never retried
    assert (result.complete, result.exhausted, result.products) == (False, False, ())
    (error,) = result.errors
    name = type(exc).__name__
    assert error.startswith("store goli-store page 1: ") and name in error
    assert error.endswith("(request req_boom)") and "\n" not in error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and name in warnings[0] and "req_boom" in warnings[0]


async def test_parser_exception_on_a_later_page_keeps_earlier_pages(
    make: Any, mock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SOURCES["store"].parse

    def second_page_breaks(raw: Any) -> Any:
        if raw["meta"]["requestId"] == "r2":
            raise ArithmeticError("boom")
        return real(raw)

    monkeypatch.setitem(
        SOURCES, "store", dataclasses.replace(SOURCES["store"], parse=second_page_breaks)
    )
    h = make()
    mock.get(STORE_RE, payload=store_page(["a"], cursor="c2", rid="r1"))
    mock.get(STORE_RE, payload=store_page(["b"], rid="r2"))
    result = await h.client.poll(STORE)
    assert [p.id for p in result.products] == ["a"]
    assert (result.complete, result.exhausted) == (False, False)
    assert result.errors == (
        "store goli-store page 2: parser raised ArithmeticError: boom (request r2)",
    )


# --------------------------------------------------------------------------- network trouble


async def test_timeouts_retry_and_fail_the_page(make: Any, mock: Any) -> None:
    h = make(timeout=7)
    mock.get(STORE_RE, exception=TimeoutError(), repeat=True)
    result = await h.client.poll(STORE)
    assert len(sent(mock)) == MAX_ATTEMPTS
    assert result.errors == ("store goli-store page 1: timed out after 7s",)
    assert h.spent == [0, 0, 0]  # Social Fetch bills nothing it did not answer


async def test_keyapi_timeout_assumes_the_price(make: Any, mock: Any) -> None:
    h = make(KA)
    mock.get(TOP_RE, exception=TimeoutError())
    mock.get(TOP_RE, payload=keyapi_page(["A"]))
    result = await h.client.poll(TOP)
    assert result.complete and h.spent == [2, 2]


async def test_connection_errors_retry(make: Any, mock: Any) -> None:
    h = make(KA)
    mock.get(TOP_RE, exception=aiohttp.ClientConnectionError("reset by peer"))
    mock.get(TOP_RE, exception=aiohttp.ServerDisconnectedError())
    mock.get(TOP_RE, exception=aiohttp.ClientConnectionError("reset by peer"))
    result = await h.client.poll(TOP)
    assert len(sent(mock)) == 3
    assert result.errors == (
        "top_products perfume-top page 1: network error: ClientConnectionError: reset by peer",
    )


async def test_unexpected_exception_types_are_not_swallowed(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, exception=KeyError("a bug, not upstream trouble"))
    with pytest.raises(KeyError):
        await h.client.poll(STORE)


# --------------------------------------------------------------------------- budget


async def test_budget_forbids_first_request(make: Any, mock: Any) -> None:
    h = make(KA, credits_left=lambda: 1)  # a KeyAPI request costs 2
    with pytest.raises(ProviderUnavailable, match="daily credit budget"):
        await h.client.poll(TOP)
    assert sent(mock) == [] and h.credits == []


async def test_unlimited_budget(make: Any, mock: Any) -> None:
    h = make(credits_left=lambda: None)
    mock.get(STORE_RE, payload=store_page(["a"], has_more=False))
    assert (await h.client.poll(STORE)).complete


async def test_budget_stops_mid_poll_without_error(make: Any, mock: Any) -> None:
    budget = {"left": 3}

    def spend(name: str, credits: int) -> None:
        budget["left"] -= credits

    h = make(KA, credits_left=lambda: budget["left"], on_credits=spend)
    mock.get(TOP_RE, payload=keyapi_page(["A"], page=1, has_more=True))
    mock.get(TOP_RE, payload=keyapi_page(["B"], page=2, has_more=False))
    result = await h.client.poll(TOP)
    assert [p.id for p in result.products] == ["A"]
    assert (result.complete, result.exhausted, result.errors) == (False, False, ())
    assert (result.pages, result.credits, len(sent(mock))) == (1, 2, 1)


async def test_budget_stops_a_retry(make: Any, mock: Any) -> None:
    left = iter([1, 0])
    h = make(credits_left=lambda: next(left))
    mock.get(STORE_RE, status=503, payload=sf_error("unavailable", "later", "req_b"), repeat=True)
    result = await h.client.poll(STORE)
    assert len(sent(mock)) == 1
    assert result.errors == (
        "store goli-store page 1: HTTP 503 Service Unavailable: later (request req_b); "
        "not retried: daily credit budget spent",
    )
    assert result.complete is False


# --------------------------------------------------------------------------- lifecycle & logs


async def test_one_session_for_many_polls_then_close(make: Any, mock: Any) -> None:
    h = make()
    mock.get(STORE_RE, payload=store_page(["a"], has_more=False), repeat=True)
    await h.client.poll(STORE)
    session = h.client._transport._open().session
    await asyncio.gather(h.client.poll(STORE), h.client.poll(STORE))
    assert h.client._transport._open().session is session
    await h.client.close()
    assert session.closed
    await h.client.poll(STORE)  # reopens lazily
    assert h.client._transport._open().session is not session


async def test_context_manager_closes(mock: Any) -> None:
    async with ProviderClient(SF) as client:
        mock.get(STORE_RE, payload=store_page(["a"], has_more=False))
        await client.poll(STORE)
        session = client._transport._open().session
    assert session.closed


async def test_wrong_provider_for_watch(make: Any) -> None:
    with pytest.raises(ValueError, match="not served by socialfetch"):
        await make(SF).client.poll(TOP)


async def test_api_key_never_logged(
    make: Any, mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = make()
    mock.get(STORE_RE, status=503, repeat=True)
    with caplog.at_level(logging.DEBUG):
        await h.client.poll(STORE)
        mock.get(STORE_RE, status=401)
        await h.client.poll(STORE)
    assert caplog.records
    assert SF_KEY not in caplog.text


async def test_concurrency_limit(make: Any, mock: Any) -> None:
    limited = ProviderConfig(
        name="socialfetch", api_key="k", base_url="https://sf.test", max_concurrency=2,
        requests_per_second=1000,
    )  # fmt: skip
    h = make(limited)
    state = {"now": 0, "peak": 0}

    async def slow(url: URL, **kwargs: Any) -> CallbackResult:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return CallbackResult(payload=store_page(["a"], has_more=False))

    mock.get(STORE_RE, callback=slow, repeat=True)
    results = await asyncio.gather(*(h.client.poll(STORE) for _ in range(6)))
    assert all(r.complete for r in results)
    assert state["peak"] == 2


async def test_rate_limit_spaces_requests(make: Any, mock: Any) -> None:
    """requests_per_second: after the first second's burst, requests wait their turn.

    A lower bound only (a loaded machine can make it slower, never faster).
    """
    limited = ProviderConfig(
        name="socialfetch", api_key="k", base_url="https://sf.test", max_concurrency=8,
        requests_per_second=4,
    )  # fmt: skip
    h = make(limited)
    stamps: list[float] = []
    loop = asyncio.get_running_loop()

    async def stamp(url: URL, **kwargs: Any) -> CallbackResult:
        stamps.append(loop.time())
        return CallbackResult(payload=store_page(["a"], has_more=False))

    mock.get(STORE_RE, callback=stamp, repeat=True)
    results = await asyncio.gather(*(h.client.poll(STORE) for _ in range(12)))
    assert all(r.complete for r in results)
    # a leaky bucket of 4/s: a burst of 4, then one every 0.25 s, so 12 take at least 2 s
    # and the first second holds at most the burst plus what leaked meanwhile (8)
    assert stamps[-1] - stamps[0] >= 1.9
    first_second = [t for t in stamps if t - stamps[0] < 0.99]
    assert len(first_second) <= 8


# --------------------------------------------------------------------------- real sockets


async def test_against_a_real_local_server() -> None:
    """No mock: quoting, repeated params, headers and a real timeout over 127.0.0.1."""
    seen: list[web.Request] = []

    async def showcase(request: web.Request) -> web.Response:
        seen.append(request)
        if request.query.get("cursor") == "slow":
            await asyncio.sleep(1)
        first = "cursor" not in request.query
        body = load("showcase_first_page") if first else load("showcase_paginated")
        if not first:
            body["data"]["page"]["nextCursor"] = "slow"
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/v1/tiktok/profiles/{handle}/showcase-products", showcase)
    async with TestServer(app, host="127.0.0.1") as server:
        provider = ProviderConfig(
            name="socialfetch", api_key="k-1", base_url=str(server.make_url(""))
        )
        sleeps = Sleeps()
        watch = WatchConfig(id="c", type="showcase", handle="a b", region="US", max_pages=3)
        async with ProviderClient(provider, sleep=sleeps, timeout=0.2) as client:
            result = await client.poll(watch)
    assert [p.id for p in result.products] == ["1729508370969629931", "1731414247972311160"]
    assert result.errors == ("showcase c page 3: timed out after 0.2s",)
    assert seen[0].match_info["handle"] == "a b"
    assert [dict(r.query) for r in seen[:3]] == [
        {"region": "US"},
        {"region": "US", "cursor": "eyJwcm9kdWN0SWRzIjpbIjE3In0"},
        {"region": "US", "cursor": "slow"},
    ]
    assert seen[0].headers["x-api-key"] == "k-1"
    assert seen[0].headers["User-Agent"] == USER_AGENT
    assert len(seen) == 2 + MAX_ATTEMPTS and len(sleeps.calls) == MAX_ATTEMPTS - 1
