"""The benchmark's upstream: watcher's own simulator, N generated stores, a fixed latency.

Runs in its own process so its CPU never counts as watcher's. Besides the simulator's
endpoints it serves:

* ``POST /_bench/reprice`` ``{"stores": k}``: drop the price of one product (the next one
  at each call) of each of the first k stores by 20 %; the time each such store's
  changed page is first served is kept;
* ``POST /_bench/hook``: a webhook receiver (first arrival time per watch id);
* ``GET /_bench/report``: request times, changed-page serve times (by watch id) and webhook
  arrivals,
  all on the machine's monotonic clock (shared by every process on it).

    python bench/fakeapi.py --stores 200 --products 20 --page-size 20 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from decimal import Decimal

from aiohttp import web

from watcher.simulator.server import Simulator
from watcher.simulator.world import Item, Shop, Store, store_key


def store_url(i: int) -> str:
    return f"https://www.tiktok.com/shop/store/bench-{i:05d}/{7000000000000000000 + i}"


def build(args: argparse.Namespace) -> tuple[Simulator, web.Application]:
    sim = Simulator("quiet", page_size=args.page_size)
    world = sim.world
    world.stores.clear()
    by_key: dict[str, Store] = {}
    for i in range(args.stores):
        url = store_url(i)
        shop = Shop(id=str(7000000000000000000 + i), name=f"Bench {i}", logo_url=None,
                    store_url=url)  # fmt: skip
        items = [
            Item(
                id=f"{1729000000000000000 + i * 1000 + j}",
                title=f"Bench product {i}-{j}",
                price=Decimal("10.00") + Decimal(j),
                original=Decimal("20.00") + Decimal(j),
                sold=100 + j,
            )
            for j in range(args.products)
        ]
        store = Store(url=url, shop=shop, products=items)
        world.stores[url] = store
        by_key[store_key(url)] = store
    watch_of = {store_url(i): f"s{i:05d}" for i in range(args.stores)}
    world.find_store = lambda url: by_key.get(store_key(url))  # type: ignore[method-assign]

    served: list[float] = []  # monotonic time of every API answer
    changed: dict[str, float | None] = {}  # store url -> first serve of its changed page
    reprices = [0]
    hooks: dict[str, float] = {}  # watch id -> first alert of it

    @web.middleware
    async def latency(request: web.Request, handler):
        if request.path.startswith("/v1/"):
            await asyncio.sleep(args.latency)
            response = await handler(request)
            now = time.monotonic()
            served.append(now)
            wid = watch_of.get(request.query.get("url", ""))
            if wid in changed and changed[wid] is None and "cursor" not in request.query:
                changed[wid] = now
            return response
        return await handler(request)

    async def reprice(request: web.Request) -> web.Response:
        k = (await request.json())["stores"]
        nth = reprices[0] % args.products  # each call another product: no rule cooldown
        reprices[0] += 1
        for i in range(k):
            store = world.stores[store_url(i)]
            item = store.products[nth]
            assert item.price is not None
            item.reprice(f"{(item.price * Decimal('0.8')).quantize(Decimal('0.01'))}")
            changed[f"s{i:05d}"] = None  # the watch id bench_daemon gives store i
        return web.json_response({"ok": True})

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        now = time.monotonic()
        for alert in body.get("alerts", [body]):
            hooks.setdefault(str(alert.get("watch")), now)  # one change per store
        return web.json_response({"ok": True})

    async def report(request: web.Request) -> web.Response:
        return web.json_response({"served": served, "changed": changed, "hooks": hooks})

    async def clear(request: web.Request) -> web.Response:
        served.clear()
        changed.clear()
        hooks.clear()
        return web.json_response({"ok": True})

    sim.app.middlewares.insert(0, latency)
    sim.app.router.add_post("/_bench/reprice", reprice)
    sim.app.router.add_post("/_bench/hook", hook)
    sim.app.router.add_get("/_bench/report", report)
    sim.app.router.add_post("/_bench/clear", clear)
    return sim, sim.app


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stores", type=int, default=200)
    p.add_argument("--products", type=int, default=20)
    p.add_argument("--page-size", type=int, default=20)
    p.add_argument("--latency", type=float, default=0.05)
    args = p.parse_args()
    _sim, app = build(args)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
