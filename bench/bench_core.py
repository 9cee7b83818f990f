"""Benchmarks of the hot paths, each against a baseline measured in the same run.

The machines are shared and noisy, so absolute numbers mean little; the ratio to a baseline
that does the physically necessary part of the same work (parse the JSON; copy the rows into
a dict; write the rows with raw sqlite3) is what to watch.

    .venv/bin/python bench/bench_core.py [--products 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from watcher.diff import diff
from watcher.models import PollResult, Product, Tracked
from watcher.sources.normalise import assign_ranks
from watcher.sources.socialfetch import parse_store_page
from watcher.store import PollWrite, Store, snapshot_values


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def store_page(n: int) -> bytes:
    products = [
        {
            "id": str(1729000000000000000 + i),
            "title": f"Product {i} with a realistic, fairly long title for a TikTok Shop card",
            "description": None,
            "url": f"https://www.tiktok.com/shop/pdp/{1729000000000000000 + i}",
            "imageUrl": f"https://p16.example.com/{i}.webp",
            "image": {"width": 500, "height": 500, "url": f"https://p16.example.com/{i}.webp"},
            "shipFrom": None,
            "trustLabel": None,
            "labels": [],
            "price": {
                "currencyCode": "USD",
                "currencySymbol": "$",
                "current": f"{10 + i % 50}.99",
                "original": f"{20 + i % 50}.99",
                "discountText": "40%",
                "savingText": "10.00",
            },
            "metrics": {"sold": 1000 + i, "reviews": 50 + i, "rating": 4.5},
            "shop": {"id": "7495794203056835079", "name": "Goli Nutrition", "logoUrl": None},
        }
        for i in range(n)
    ]
    body = {
        "data": {
            "lookupStatus": "found",
            "shop": {"id": "7495794203056835079", "name": "Goli Nutrition"},
            "products": products,
            "page": {"nextCursor": None, "hasMore": False},
        },
        "meta": {"requestId": "req_bench", "creditsCharged": 1, "version": "v1"},
    }
    return json.dumps(body).encode()


def report(name: str, ours: float, base: float, n: int) -> None:
    print(
        f"{name:<22} ours {n / ours:>11,.0f} items/s   baseline {n / base:>11,.0f} items/s   "
        f"ratio {ours / base:5.2f}x the baseline's time"
    )


def bench_normalise(n: int, repeat: int) -> None:
    raw = store_page(n)
    base = best_of(lambda: json.loads(raw), repeat)
    ours = best_of(lambda: assign_ranks([parse_store_page(json.loads(raw)).products]), repeat)
    report("normalise (page)", ours, base, n)


def products(n: int, shift: int = 0) -> tuple[Product, ...]:
    return tuple(
        Product(
            id=str(i),
            title=f"P{i}",
            price=Decimal(f"{10 + (i + shift) % 50}.99"),
            discount_percent=(i + shift) % 60,
            sold=1000 + i + shift,
            rank=i + 1,
        )
        for i in range(n)
    )


def bench_diff(n: int, repeat: int) -> None:
    before = {p.id: Tracked(p) for p in products(n)}
    after = PollResult(products=products(n, shift=1), complete=True, exhausted=True)
    base = best_of(lambda: {p.id: Tracked(p) for p in after.products}, repeat)
    ours = best_of(lambda: diff(before, after, missing_after=2), repeat)
    report("diff (every changed)", ours, base, n)


def bench_commit(n: int, repeat: int) -> None:
    now = datetime.now(UTC)
    rows = [Tracked(p) for p in products(n)]
    changed = [Tracked(replace(t.product, price=t.product.price + 1)) for t in rows]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        seq = [0]

        def ours() -> None:
            store.ensure_watch("w")
            state = store.watch_state("w")
            assert state is not None
            ok = store.commit_poll(
                PollWrite(
                    watch_id="w",
                    expected_seq=state.seq,
                    now=now,
                    state={},
                    upserts=changed if seq[0] else rows,
                    existing_ids={t.product.id for t in rows} if seq[0] else set(),
                    history=[(t, True) for t in changed],
                )
            )
            assert ok
            seq[0] += 1

        ours_t = best_of(ours, repeat)
        store.close()

        con = sqlite3.connect(Path(tmp) / "raw.db")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        cols = list(snapshot_values("w", rows[0], now))
        con.execute(f"CREATE TABLE snap ({', '.join(cols)}, PRIMARY KEY (watch_id, product_id))")
        con.execute("CREATE TABLE hist (watch_id, product_id, at, price, rank, sold)")
        sql = f"INSERT OR REPLACE INTO snap VALUES ({', '.join('?' * len(cols))})"
        values = [
            tuple(str(v) if v is not None else None for v in snapshot_values("w", t, now).values())
            for t in changed
        ]
        hist = [("w", t.product.id, str(now), str(t.product.price), 1, 1) for t in changed]

        def raw() -> None:
            with con:
                con.executemany(sql, values)
                con.executemany("INSERT INTO hist VALUES (?, ?, ?, ?, ?, ?)", hist)

        base_t = best_of(raw, repeat)
        con.close()
    report("commit (snap+history)", ours_t, base_t, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{args.products} products, median of {args.repeat} runs")
    bench_normalise(args.products, args.repeat)
    bench_diff(args.products, args.repeat)
    bench_commit(args.products, args.repeat)


if __name__ == "__main__":
    main()
