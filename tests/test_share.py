"""A provider's limits split between the instances of a cluster (``ProviderClient.set_share``).

Over a real local server that records when each request arrived and how many were in flight
then. Rates are checked as lower bounds on elapsed time (a loaded machine makes requests
slower, never faster), with a loose upper bound so that a share of one is not throttled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from watcher.config import ProviderConfig, WatchConfig
from watcher.sources.client import ProviderClient
from watcher.sources.transport import Gate, RateGate

STORE_URL = "https://www.tiktok.com/shop/store/goli-nutrition/7495794203056835079"
STORE = WatchConfig(id="goli-store", type="store", url=STORE_URL, region="US")
BODY = json.loads((Path(__file__).parent / "data" / "upstream" / "store_found.json").read_text())
BODY["data"]["page"] = {"nextCursor": None, "hasMore": False}


@dataclass
class Upstream:
    """The server's record: arrival times and the in-flight count at each arrival."""

    url: str = ""
    hold: float = 0.0  # seconds each request is held open
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    now: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, in flight)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    full_at: int = 10**9  # set ``full`` once this many are in flight

    @property
    def peak(self) -> int:
        return max((n for _, n in self.arrivals), default=0)

    async def handle(self, request: web.Request) -> web.Response:
        self.now += 1
        self.arrivals.append((self.loop.time(), self.now))
        if self.now >= self.full_at:
            self.full.set()
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.now -= 1
        return web.json_response(BODY)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    app = web.Application()
    app.router.add_get("/v1/tiktok/shop/products", up.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        up.url = str(server.make_url(""))
        yield up


def client(up: Upstream, *, concurrency: int, rate: float, share: int = 1) -> ProviderClient:
    provider = ProviderConfig(
        name="socialfetch",
        api_key="k",
        base_url=up.url,
        max_concurrency=concurrency,
        requests_per_second=rate,
    )
    made = ProviderClient(provider)
    if share != 1:
        made.set_share(share)
    return made


async def polls(c: ProviderClient, n: int) -> None:
    results = await asyncio.gather(*(c.poll(STORE) for _ in range(n)))
    assert all(r.complete and r.products for r in results)


def since(up: Upstream, start: float) -> float:
    """Seconds from ``start`` (before the first request) to the last arrival."""
    return up.arrivals[-1][0] - start


@pytest.mark.parametrize(
    ("concurrency", "share", "peak"),
    [(6, 1, 6), (6, 2, 3), (6, 3, 2), (7, 2, 3), (2, 3, 1)],
    ids=["6/1", "6/2", "6/3", "7/2-rounds-down", "2/3-floor-of-one"],
)
async def test_in_flight_is_the_share_of_max_concurrency(
    upstream: Upstream, concurrency: int, share: int, peak: int
) -> None:
    upstream.hold = 0.05
    async with client(upstream, concurrency=concurrency, rate=1000, share=share) as c:
        assert c.limits == (peak, 1000 / share)
        await polls(c, 4 * concurrency)
    assert upstream.peak == peak


@pytest.mark.parametrize("share", [1, 2, 3])
async def test_rate_is_the_share_of_requests_per_second(upstream: Upstream, share: int) -> None:
    """A leaky bucket of rate/N: a burst of max(1, rate/N), then one every N/rate seconds."""
    rate = 20 / share
    n = round(2 * rate)  # the burst, then about a second's worth
    async with client(upstream, concurrency=50, rate=20, share=share) as c:
        start = upstream.loop.time()
        await polls(c, n)
    expected = (n - max(1.0, rate)) / rate
    assert expected * 0.98 <= since(upstream, start) <= expected * 1.5 + 0.5


async def test_three_instances_with_a_third_each_keep_the_cluster_limits(
    upstream: Upstream,
) -> None:
    """Three clients (three instances) on one upstream: together within the provider's limits."""
    upstream.hold = 0.05
    clients = [client(upstream, concurrency=6, rate=15, share=3) for _ in range(3)]
    start = upstream.loop.time()
    try:
        await asyncio.gather(*(polls(c, 10) for c in clients))
    finally:
        for c in clients:
            await c.close()
    assert upstream.peak == 6  # 2 each
    # each: a burst of 5, then 5 more at 5/s; together 30 requests in no less than a second
    assert since(upstream, start) >= 0.98


async def test_a_smaller_share_mid_run_lets_in_flight_requests_finish(upstream: Upstream) -> None:
    upstream.hold, upstream.full_at = 0.1, 6
    async with client(upstream, concurrency=6, rate=1000) as c:
        run = asyncio.create_task(polls(c, 30))
        await asyncio.wait_for(upstream.full.wait(), 10)
        changed = upstream.loop.time()
        c.set_share(3)
        await run
    before = [n for t, n in upstream.arrivals if t <= changed]
    after = [n for t, n in upstream.arrivals if t > changed]
    assert max(before) == 6
    assert after and max(after) <= 2  # new ones wait until fewer than 2 are in flight


async def test_a_larger_share_mid_run_admits_more_at_once(upstream: Upstream) -> None:
    """An instance leaves: the survivors take the larger share without a restart."""
    upstream.hold, upstream.full_at = 0.1, 2
    async with client(upstream, concurrency=6, rate=1000, share=3) as c:
        run = asyncio.create_task(polls(c, 30))
        await asyncio.wait_for(upstream.full.wait(), 10)
        changed = upstream.loop.time()
        c.set_share(1)
        await run
    assert max(n for t, n in upstream.arrivals if t <= changed) == 2
    assert max(n for t, n in upstream.arrivals if t > changed) == 6


async def test_a_slower_rate_mid_run_spaces_the_waiting_requests(upstream: Upstream) -> None:
    """From 20/s to 5/s while requests wait: the next second holds at most 5 (plus one)."""
    upstream.full_at = 10**9
    async with client(upstream, concurrency=50, rate=20) as c:
        run = asyncio.create_task(polls(c, 40))
        while len(upstream.arrivals) < 20:  # the burst
            await asyncio.sleep(0.01)
        changed = upstream.loop.time()
        c.set_share(4)
        await asyncio.sleep(1.2)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    next_second = [t for t, _ in upstream.arrivals if changed < t <= changed + 1.0]
    # 20/s would send about 20 in that second; 5/s leaks 5 and a partly full bucket one more
    assert len(next_second) <= 6


async def test_share_must_count_this_instance(upstream: Upstream) -> None:
    async with client(upstream, concurrency=4, rate=5) as c:
        with pytest.raises(ValueError, match="at least one"):
            c.set_share(0)
        assert c.limits == (4, 5)


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = Gate(1)
    await gate.__aenter__()
    waiting = asyncio.create_task(gate.__aenter__())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await gate.__aexit__(None, None, None)
    assert gate.held == 0
    async with gate:  # entered at once: nobody waits ahead
        assert gate.held == 1


async def test_rate_gate_admits_in_arrival_order() -> None:
    gate = RateGate(50)
    order: list[int] = []

    async def one(i: int) -> Any:
        async with gate:
            order.append(i)

    await asyncio.gather(*(one(i) for i in range(80)))
    assert order == list(range(80))
