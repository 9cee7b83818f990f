"""The pipeline in-process: the real simulator over 127.0.0.1, a real SQLite file, real clients.

Each test builds a config from YAML, polls through ``Runtime.poll_all`` (or one watch through
``Runtime.pipeline.poll``) and asserts on what a user would see: the alerts and notices in the
outbox, their deliveries, and the stored watch state (spec sections 4, 6 and 9).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.config import Config, WatchConfig, load_config
from watcher.models import Alert, PollResult
from watcher.runtime import Runtime
from watcher.simulator import RunningSimulator, start_simulator
from watcher.simulator import demo as S
from watcher.simulator.world import Item, Search, Showcase
from watcher.store import DeliveryRow

from .support import sql

STORE_PATH = "/v1/tiktok/shop/products"
SEARCH_PATH = "/v1/tiktok/shop/products/search"

STORE_WATCH = {"id": "goli", "type": "store", "url": S.STORE_URL, "every": "1m", "max_pages": 10}
SHOWCASE_WATCH = {"id": "glow", "type": "showcase", "handle": S.HANDLE, "every": "1m"}
SEARCH_WATCH = {"id": "crocs", "type": "search", "query": S.QUERY, "every": "1m"}

# Every stock and presence rule, so a wrong removal, return or "new" burst shows up.
PRESENCE_RULES = [
    {"id": "sold-out", "when": "out_of_stock", "notify": ["console"]},
    {"id": "restocked", "when": "back_in_stock", "notify": ["console"]},
    {"id": "new", "when": "new_item", "notify": ["console"]},
]
DROP_RULE = {"id": "drop", "when": "price_drop", "notify": ["console"]}


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    s = await start_simulator()
    yield s
    await s.close()


@pytest.fixture
def db(db_url: str) -> str:
    return db_url


def make_config(
    tmp_path: Path,
    sim: RunningSimulator,
    watches: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    *,
    socialfetch: dict[str, Any] | None = None,
    name: str = "rules.yaml",
) -> Config:
    """Write a config for ``watches`` and ``rules`` against the simulator and load it."""
    doc = {
        "providers": {
            "socialfetch": {
                "api_key": "sfk_test",
                "base_url": sim.base_url,
                "requests_per_second": 100,
                **(socialfetch or {}),
            },
            "keyapi": {"api_key": "kk_test", "base_url": sim.base_url, "requests_per_second": 100},
        },
        "channels": {"console": {"type": "console"}},
        "watches": watches,
        "rules": rules,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


@asynccontextmanager
async def runtime(config: Config, db: str, **options: Any) -> AsyncIterator[Runtime]:
    rt = Runtime(config, db, **options)
    try:
        yield rt
    finally:
        await rt.close()


async def poll(rt: Runtime, watch_id: str):
    """Poll one watch; returns its outcome."""
    (outcome,) = await rt.poll_all([watch_id])
    return outcome


def stored(rt: Runtime) -> list[tuple[Alert, list[DeliveryRow]]]:
    return rt.store.recent_alerts(limit=10_000)


def kinds(rt: Runtime) -> list[str]:
    return sorted(a.kind for a, _ in stored(rt))


def rule_products(rt: Runtime) -> set[tuple[str | None, str | None]]:
    return {(a.rule_id, a.product.id if a.product else None) for a, _ in stored(rt)}


def snapshot(db: str, watch_id: str) -> dict[str, tuple[int, int]]:
    """product id → (present, missed) as stored."""
    rows = sql(
        db, "SELECT product_id, present, missed FROM snapshot WHERE watch_id = :w", w=watch_id
    )
    return {pid: (present, missed) for pid, present, missed in rows}


def history_rows(db: str) -> list[tuple[str, str | None]]:
    return sql(db, "SELECT product_id, price FROM history ORDER BY id")


def api_requests(sim: RunningSimulator, path: str | None = None) -> int:
    return sum(1 for r in sim.requests if path is None or r.path == path)


# ---------------------------------------------------------------- 1. not found


async def test_store_not_found_sends_one_notice_per_episode_and_removes_nothing(sim, db, tmp_path):
    watch = {**STORE_WATCH, "notify_failures_after": 1}
    cfg = make_config(tmp_path, sim, [watch], PRESENCE_RULES)
    store = sim.world.stores[S.STORE_URL]
    async with runtime(cfg, db) as rt:
        assert (await poll(rt, "goli")).status == "baseline"
        baseline = snapshot(db, "goli")
        assert len(baseline) == 32

        store.not_found = True
        for _ in range(3):
            outcome = await poll(rt, "goli")
            assert outcome.status == "not_found"
        assert kinds(rt) == ["watch_not_found"]
        (notice, deliveries) = stored(rt)[0]
        assert notice.watch_id == "goli" and notice.rule_id is None and notice.product is None
        assert S.STORE_URL in notice.message
        assert [(d.channel, d.status) for d in deliveries] == [("console", "pending")]
        # nothing removed, nothing counted missing, and not a failure (notify_failures_after 1)
        assert snapshot(db, "goli") == baseline
        state = rt.store.watch_state("goli")
        assert state.consecutive_failures == 0 and not state.failing_notified

        store.not_found = False
        assert (await poll(rt, "goli")).status == "ok"
        assert kinds(rt) == ["watch_not_found"]  # back: no back_in_stock, no new_item

        store.not_found = True
        for _ in range(2):
            assert (await poll(rt, "goli")).status == "not_found"
        assert kinds(rt) == ["watch_not_found", "watch_not_found"]
        assert snapshot(db, "goli") == baseline


# ---------------------------------------------------------------- 2. empty results


async def test_private_showcase_sends_one_empty_notice_and_keeps_its_products(sim, db, tmp_path):
    cfg = make_config(tmp_path, sim, [SHOWCASE_WATCH], PRESENCE_RULES)
    showcase = sim.world.showcases[S.HANDLE]
    async with runtime(cfg, db) as rt:
        assert (await poll(rt, "glow")).status == "baseline"
        baseline = snapshot(db, "glow")
        assert len(baseline) == 14

        showcase.private = True
        for _ in range(4):
            assert (await poll(rt, "glow")).status == "empty"
        assert kinds(rt) == ["watch_empty"]
        assert snapshot(db, "glow") == baseline  # nothing removed, `missed` not advanced

        showcase.private = False
        outcome = await poll(rt, "glow")
        assert outcome.status == "ok" and outcome.alerts == []
        assert kinds(rt) == ["watch_empty"]  # no out_of_stock, new_item or returned alert
        assert snapshot(db, "glow") == baseline

        showcase.private = True  # a second episode: a second notice
        assert (await poll(rt, "glow")).status == "empty"
        assert kinds(rt) == ["watch_empty", "watch_empty"]


async def test_empty_baseline_sends_the_notice_then_baselines_quietly(sim, db, tmp_path):
    watch = {**SHOWCASE_WATCH, "handle": "glowwithmiaa"}  # a typo: upstream answers empty
    cfg = make_config(tmp_path, sim, [watch], PRESENCE_RULES)
    async with runtime(cfg, db) as rt:
        for _ in range(2):
            assert (await poll(rt, "glow")).status == "empty"
        ((notice, _),) = stored(rt)
        assert notice.kind == "watch_empty" and "first poll" in notice.message
        assert snapshot(db, "glow") == {}

        # the handle starts to exist: the first non-empty poll is a quiet baseline
        items = list(sim.world.showcases[S.HANDLE].products)
        sim.world.showcases["glowwithmiaa"] = Showcase("glowwithmiaa", items)
        outcome = await poll(rt, "glow")
        assert outcome.status == "baseline" and outcome.alerts == []
        assert kinds(rt) == ["watch_empty"]
        assert len(snapshot(db, "glow")) == 14

        items[0].reprice("1.00")  # and from then on it is a normal watch
        sim.world.showcases["glowwithmiaa"].add(
            Item("1799999999999999999", "Fresh Lip Oil", Decimal("9.00"))
        )
        await poll(rt, "glow")
        assert rule_products(rt) - {(None, None)} == {("new", "1799999999999999999")}


# ---------------------------------------------------------------- 3. HTTP 402


async def test_402_pauses_the_provider_across_runs_then_one_probe_resumes(sim, db, tmp_path):
    watch = {**STORE_WATCH, "notify_failures_after": 1}
    cfg = make_config(tmp_path, sim, [watch], PRESENCE_RULES)
    async with runtime(cfg, db) as rt:
        assert (await poll(rt, "goli")).status == "baseline"
        sim.add_fault(STORE_PATH, status=402, times=None)
        before = api_requests(sim)
        outcome = await poll(rt, "goli")
        assert outcome.status == "skipped"
        assert api_requests(sim) == before + 1  # a 402 is never retried
        assert kinds(rt) == ["provider_paused"]
        (notice, deliveries) = stored(rt)[0]
        assert "socialfetch" in notice.message and deliveries
        paused = rt.store.provider_state("socialfetch")
        assert paused.paused_until > datetime.now(UTC) + timedelta(minutes=59)
        state = rt.store.watch_state("goli")
        assert state.consecutive_failures == 0 and not state.failing_notified

        assert (await poll(rt, "goli")).status == "skipped"
        assert api_requests(sim) == before + 1

    async with runtime(cfg, db) as rt:  # a restart: the pause was persisted
        assert (await poll(rt, "goli")).status == "skipped"
        assert api_requests(sim) == before + 1

        # the hour is over: one probe; still 402 → paused again, not told twice
        rt.store.set_provider_state("socialfetch", paused_until=datetime.now(UTC) - timedelta(1))
        assert (await poll(rt, "goli")).status == "skipped"
        assert api_requests(sim) == before + 2
        assert rt.store.provider_state("socialfetch").paused_until > datetime.now(UTC)
        assert kinds(rt) == ["provider_paused"]

        # next time the probe succeeds: polling resumes, the pause is cleared
        sim.simulator.clear_faults()
        sim.world.stores[S.STORE_URL].product(S.ACV).reprice("9.99")
        rt.store.set_provider_state("socialfetch", paused_until=datetime.now(UTC) - timedelta(1))
        assert (await poll(rt, "goli")).status == "ok"
        assert api_requests(sim) == before + 2 + 4
        pstate = rt.store.provider_state("socialfetch")
        assert pstate.paused_until is None and not pstate.pause_notified
        assert (await poll(rt, "goli")).status == "ok"
        assert kinds(rt) == ["provider_paused"]


async def test_402_probe_is_one_request_for_all_watches_of_the_provider(sim, db, tmp_path):
    watches = [STORE_WATCH, SHOWCASE_WATCH, SEARCH_WATCH]
    cfg = make_config(tmp_path, sim, watches, PRESENCE_RULES)
    async with runtime(cfg, db) as rt:
        await rt.poll_all()
        sim.add_fault(None, status=402, times=None)
        outcomes = await rt.poll_all()
        assert {o.status for o in outcomes} == {"skipped"}
        assert kinds(rt) == ["provider_paused"]  # one notice, however many watches hit it

        rt.store.set_provider_state("socialfetch", paused_until=datetime.now(UTC) - timedelta(1))
        before = api_requests(sim)
        outcomes = await rt.poll_all()
        assert {o.status for o in outcomes} == {"skipped"}
        assert api_requests(sim) == before + 1  # one probe, not one per watch
        assert kinds(rt) == ["provider_paused"]

        sim.simulator.clear_faults()  # credits topped up: the probe succeeds, all resume
        rt.store.set_provider_state("socialfetch", paused_until=datetime.now(UTC) - timedelta(1))
        outcomes = await asyncio.wait_for(rt.poll_all(), 10)
        assert {o.status for o in outcomes} == {"ok"}
        assert rt.store.provider_state("socialfetch").paused_until is None


# ---------------------------------------------------------------- 4. daily credit budget


async def test_daily_credit_budget_skips_polls_and_holds_across_runs(sim, db, tmp_path):
    watch = {**STORE_WATCH, "notify_failures_after": 1}
    # the store is 4 pages at 1 credit each: the baseline spends the whole budget
    cfg = make_config(tmp_path, sim, [watch], [DROP_RULE], socialfetch={"daily_credit_budget": 4})
    async with runtime(cfg, db) as rt:
        assert (await poll(rt, "goli")).status == "baseline"
        assert api_requests(sim) == 4
        sim.world.stores[S.STORE_URL].product(S.ACV).reprice("9.99")
        for _ in range(2):
            outcome = await poll(rt, "goli")
            assert outcome.status == "skipped"
            assert "budget" in " ".join(outcome.errors)
        assert api_requests(sim) == 4
        assert rt.meter.spent_today("socialfetch") == 4

    async with runtime(cfg, db) as rt:  # the same day, a new process: still spent
        assert (await poll(rt, "goli")).status == "skipped"
        assert api_requests(sim) == 4
        assert stored(rt) == []  # no alert, no failure notice
        assert rt.store.watch_state("goli").consecutive_failures == 0


async def test_budget_running_out_mid_poll_removes_nothing(sim, db, tmp_path):
    cfg = make_config(
        tmp_path, sim, [STORE_WATCH], PRESENCE_RULES, socialfetch={"daily_credit_budget": 6}
    )
    store = sim.world.stores[S.STORE_URL]
    async with runtime(cfg, db) as rt:
        await poll(rt, "goli")
        store.sell_out(S.SLEEP)  # on the last page, which this poll cannot afford
        for pid in (S.ACV, S.ASHWAGANDHA):
            store.sell_out(pid)  # absent from a page it did read
        outcome = await poll(rt, "goli")
        assert api_requests(sim) == 6
        assert outcome.status == "incomplete"
        assert stored(rt) == []
        assert all(present for present, _ in snapshot(db, "goli").values())


# ---------------------------------------------------------------- 5. definition change


async def test_changed_query_starts_a_quiet_new_baseline(sim, db, tmp_path):
    old_ids = {p.id for p in sim.world.searches[S.QUERY].products}
    kept = list(sim.world.searches[S.QUERY].products[:5])
    fresh = [
        Item(f"17000000000000000{i:02d}", f"Crocs Sandal {i}", Decimal("19.99")) for i in range(8)
    ]
    sim.world.searches["crocs sandals"] = Search("crocs sandals", fresh + kept)

    cfg = make_config(tmp_path, sim, [SEARCH_WATCH], [*PRESENCE_RULES, DROP_RULE])
    async with runtime(cfg, db) as rt:
        assert (await poll(rt, "crocs")).status == "baseline"
    assert set(snapshot(db, "crocs")) == old_ids

    changed = {**SEARCH_WATCH, "query": "crocs sandals"}
    cfg2 = make_config(tmp_path, sim, [changed], [*PRESENCE_RULES, DROP_RULE], name="b.yaml")
    async with runtime(cfg2, db) as rt:
        outcome = await poll(rt, "crocs")
        assert outcome.status == "baseline" and outcome.alerts == []
        assert stored(rt) == []  # no new_item burst, no removals of the old results
        assert set(snapshot(db, "crocs")) == {p.id for p in fresh + kept}

        fresh[0].reprice("9.99")
        outcome = await poll(rt, "crocs")
        assert outcome.status == "ok"
        assert rule_products(rt) == {("drop", fresh[0].id)}


async def test_changed_region_starts_a_quiet_new_baseline(sim, db, tmp_path):
    watch = {**SEARCH_WATCH, "region": "US"}
    cfg = make_config(tmp_path, sim, [watch], [*PRESENCE_RULES, DROP_RULE])
    async with runtime(cfg, db) as rt:
        await poll(rt, "crocs")
    sim.step(2)  # CLASSIC_CLOG 44.99 → 34.99: a drop under the old definition
    cfg2 = make_config(
        tmp_path, sim, [{**watch, "region": "GB"}], [*PRESENCE_RULES, DROP_RULE], name="b.yaml"
    )
    async with runtime(cfg2, db) as rt:
        outcome = await poll(rt, "crocs")
        assert outcome.status == "baseline" and outcome.alerts == []
        assert stored(rt) == []
        assert sim.requests[-1].query.get("region") == "GB"


async def test_lowest_price_ignores_history_from_an_earlier_definition(sim, db, tmp_path):
    """Prices recorded under region US are not the GB listing's history."""
    low = {"id": "low", "when": "lowest_price", "notify": ["console"], "cooldown": "1s"}
    watch = {**SEARCH_WATCH, "region": "US"}
    cfg = make_config(tmp_path, sim, [watch], [low])
    clog = sim.world.searches[S.QUERY].product(S.CLASSIC_CLOG)
    async with runtime(cfg, db) as rt:
        clog.reprice("19.99")
        await poll(rt, "crocs")  # baseline under US: 19.99 recorded
        clog.reprice("44.99")
        await poll(rt, "crocs")
    cfg2 = make_config(tmp_path, sim, [{**watch, "region": "GB"}], [low], name="b.yaml")
    async with runtime(cfg2, db) as rt:
        assert (await poll(rt, "crocs")).status == "baseline"  # GB: 44.99
        clog.reprice("39.99")
        outcome = await poll(rt, "crocs")
        # 39.99 is the lowest GB price; the US 19.99 must not hide it
        assert [(a.rule_id, a.product.id) for a in outcome.alerts] == [("low", S.CLASSIC_CLOG)]


# ---------------------------------------------------------------- 6. partial baseline


async def test_partial_baseline_stands_and_later_products_are_not_new(sim, db, tmp_path):
    cfg = make_config(tmp_path, sim, [STORE_WATCH], [*PRESENCE_RULES, DROP_RULE])
    async with runtime(cfg, db) as rt:
        sim.add_fault(STORE_PATH, page=2, status=503, times=3, retry_after=0)
        outcome = await poll(rt, "goli")
        assert outcome.status == "baseline" and outcome.errors
        assert len(snapshot(db, "goli")) == 10
        state = rt.store.watch_state("goli")
        assert state.baseline_done and state.baseline_partial

        sim.step()  # ACV (on page 1, seen at the baseline) drops 19.99 → 16.99
        outcome = await poll(rt, "goli")
        assert outcome.status == "ok"
        # the drop is alerted; the 22 products of pages 2-4 are silent additions, not new
        assert rule_products(rt) == {("drop", S.ACV), ("drop", S.ASHWAGANDHA)}
        assert len(snapshot(db, "goli")) == 32
        assert not rt.store.watch_state("goli").baseline_partial

        sim.step()  # MATCHA (page 2) drops: an ordinary poll now
        await poll(rt, "goli")
        assert rule_products(rt) == {
            ("drop", S.ACV),
            ("drop", S.ASHWAGANDHA),
            ("drop", S.MATCHA),
        }


async def test_a_page_that_always_fails_does_not_block_alerts_or_grow_history(sim, db, tmp_path):
    cfg = make_config(tmp_path, sim, [STORE_WATCH], [*PRESENCE_RULES, DROP_RULE])
    sim.add_fault(STORE_PATH, page=3, status=500, times=None, retry_after=0)
    async with runtime(cfg, db) as rt:
        await poll(rt, "goli")  # pages 1-2 read, page 3 fails: a partial baseline
        for _ in range(3):
            sim.step()
            outcome = await poll(rt, "goli")
            assert outcome.status == "partial"  # not a baseline taken again and again
        # drops on pages 1-2 still alerted; nothing removed, nothing "new"; one failing notice
        got = rule_products(rt)
        assert {("drop", S.ACV), ("drop", S.MATCHA)} <= got
        assert {rule for rule, _ in got} == {"drop", None}
        assert kinds(rt).count("watch_failing") == 1


# ---------------------------------------------------------------- 7. re-processing


class _Gate:
    """Wraps a source so that concurrent polls all fetch before any of them commits."""

    def __init__(self, source, barrier: asyncio.Barrier) -> None:
        self.source, self.barrier = source, barrier

    async def poll(self, watch: WatchConfig) -> PollResult:
        result = await self.source.poll(watch)
        await self.barrier.wait()
        return result


async def test_concurrent_polls_of_one_change_commit_once(sim, db, tmp_path):
    cfg = make_config(tmp_path, sim, [STORE_WATCH], [DROP_RULE])
    async with runtime(cfg, db) as rt1, runtime(cfg, db) as rt2:
        await poll(rt1, "goli")
        sim.step()  # ACV drops
        barrier = asyncio.Barrier(2)
        for rt in (rt1, rt2):
            rt.pipeline.sources = {"socialfetch": _Gate(rt.clients["socialfetch"], barrier)}
        watch = cfg.watches["goli"]
        outcomes = await asyncio.wait_for(
            asyncio.gather(rt1.pipeline.poll(watch), rt2.pipeline.poll(watch)), 10
        )
        assert sorted(o.status for o in outcomes) == ["conflict", "ok"]
        winner = next(o for o in outcomes if o.status == "ok")
        loser = next(o for o in outcomes if o.status == "conflict")
        assert loser.alerts == []
        # step 1: ACV 19.99 → 16.99 and ASHWAGANDHA 21.99 → 20.99 (min_percent 0)
        assert sorted(a.product.id for a in winner.alerts) == sorted([S.ACV, S.ASHWAGANDHA])

        rows = stored(rt1)
        assert sorted(a.alert_id for a, _ in rows) == sorted(a.alert_id for a in winner.alerts)
        assert [len(deliveries) for _, deliveries in rows] == [1, 1]
        assert rt1.store.watch_state("goli").seq == 2
        acv = [r for r in history_rows(db) if r[0] == S.ACV]
        assert acv == [(S.ACV, "19.99"), (S.ACV, "16.99")]  # the change recorded once


async def test_a_process_whose_memory_is_stale_loses_its_commit_then_reads_the_winners(
    sim, db, tmp_path
):
    """Each process remembers what its own last commit left; another process's commit
    makes that memory stale, and the seq guard is what catches it."""
    cfg = make_config(tmp_path, sim, [STORE_WATCH], [{**DROP_RULE, "cooldown": "1s"}])
    acv = sim.world.stores[S.STORE_URL].product(S.ACV)
    async with runtime(cfg, db) as a, runtime(cfg, db) as b:
        assert (await poll(a, "goli")).status == "baseline"
        assert (await poll(b, "goli")).status == "ok"  # b remembers the baseline
        acv.reprice("15.00")
        # b's quiet poll wrote the watch's state (no seq change): a's memory is stale too
        assert (await poll(a, "goli")).status == "conflict"
        first = await poll(a, "goli")  # read again from the database
        assert [x.product.id for x in first.alerts] == [S.ACV]
        before = api_requests(sim)
        stale = await poll(b, "goli")  # b still knows ACV at 19.99: its commit is refused
        assert stale.status == "conflict" and stale.alerts == []
        assert api_requests(sim) > before  # it did poll (the refusal is at the commit)
        again = await poll(b, "goli")  # read from the database: the drop is old news
        assert again.status == "ok" and again.alerts == []
        acv.reprice("12.00")
        await asyncio.sleep(1.1)  # past the rule's cooldown of the first drop
        nxt = await poll(b, "goli")
        assert [(x.product.id, x.previous.price) for x in nxt.alerts] == [
            (S.ACV, Decimal("15.00"))
        ]
        assert len(stored(a)) == 2  # 19.99 → 15.00 once, 15.00 → 12.00 once


# ---------------------------------------------------------------- 8. alert_id


async def test_alert_id_is_deterministic_per_transition_and_seq(sim, db, tmp_path):
    cfg = make_config(tmp_path, sim, [STORE_WATCH], [DROP_RULE])
    acv = sim.world.stores[S.STORE_URL].product(S.ACV)
    async with runtime(cfg, db) as rt:
        await poll(rt, "goli")
    acv.reprice("15.00")  # 19.99 → 15.00

    async with runtime(cfg, db, dry_run=True) as dry:
        first = [a.alert_id for a in (await poll(dry, "goli")).alerts]
        second = [a.alert_id for a in (await poll(dry, "goli")).alerts]
        assert len(first) == 1 and first == second
        assert stored(dry) == []

    async with runtime(cfg, db) as rt:
        outcome = await poll(rt, "goli")
        assert [a.alert_id for a in outcome.alerts] == first
        assert [a.alert_id for a, _ in stored(rt)] == first

        acv.reprice("19.99")  # back up: no alert, the seq moves on
        assert (await poll(rt, "goli")).alerts == []
        acv.reprice("15.00")  # the same 19.99 → 15.00 drop again, later
        rt.pipeline.clock = lambda: datetime.now(UTC) + timedelta(hours=7)  # past the cooldown
        outcome = await poll(rt, "goli")
        (again,) = outcome.alerts
        assert (again.previous.price, again.product.price) == (Decimal("19.99"), Decimal("15.00"))
        assert again.alert_id != first[0]
        assert len(stored(rt)) == 2


# ---------------------------------------------------------------- 9. cooldown


async def test_cooldown_suppresses_a_repeat_drop_but_never_a_new_low(sim, db, tmp_path):
    rule = {**DROP_RULE, "cooldown": "1h"}
    cfg = make_config(tmp_path, sim, [STORE_WATCH], [rule])
    store = sim.world.stores[S.STORE_URL]

    def fired(outcome) -> list[tuple[str, Decimal]]:
        return [(a.product.id, a.product.price) for a in outcome.alerts]

    async with runtime(cfg, db) as rt:
        await poll(rt, "goli")
        store.product(S.ACV).reprice("17.99")
        assert fired(await poll(rt, "goli")) == [(S.ACV, Decimal("17.99"))]
        assert (await poll(rt, "goli")).alerts == []
        store.product(S.ACV).reprice("18.99")
        assert (await poll(rt, "goli")).alerts == []  # a rise
        store.product(S.ACV).reprice("17.99")  # the same price as at its alert: dropped
        store.product(S.MATCHA).reprice("9.99")  # another product is not held back
        assert fired(await poll(rt, "goli")) == [(S.MATCHA, Decimal("9.99"))]
        store.product(S.ACV).reprice("15.99")  # lower than at its alert: a new low alerts
        assert fired(await poll(rt, "goli")) == [(S.ACV, Decimal("15.99"))]
        prices = sorted((a.product.id, a.product.price) for a, _ in stored(rt) if a.product)
        assert prices == sorted(
            [(S.ACV, Decimal("17.99")), (S.ACV, Decimal("15.99")), (S.MATCHA, Decimal("9.99"))]
        )

        store.product(S.ACV).reprice("16.99")
        assert (await poll(rt, "goli")).alerts == []
        store.product(S.ACV).reprice("15.99")  # equal again, but the hour has passed
        rt.pipeline.clock = lambda: datetime.now(UTC) + timedelta(hours=1, minutes=1)
        assert fired(await poll(rt, "goli")) == [(S.ACV, Decimal("15.99"))]


# ---------------------------------------------------------------- 10. missing_after


async def test_missing_after_three_removes_on_the_third_complete_poll(sim, db, tmp_path):
    watch = {**STORE_WATCH, "missing_after": 3}
    cfg = make_config(tmp_path, sim, [watch], PRESENCE_RULES)
    store = sim.world.stores[S.STORE_URL]
    async with runtime(cfg, db) as rt:
        await poll(rt, "goli")
        store.sell_out(S.RESTORE_KIT)
        for missed in (1, 2):
            assert (await poll(rt, "goli")).alerts == []
            assert snapshot(db, "goli")[S.RESTORE_KIT] == (1, missed)
        (gone,) = (await poll(rt, "goli")).alerts
        assert (gone.kind, gone.product.id) == ("out_of_stock", S.RESTORE_KIT)
        assert snapshot(db, "goli")[S.RESTORE_KIT][0] == 0

        store.restock(S.RESTORE_KIT)
        (back,) = (await poll(rt, "goli")).alerts
        assert (back.kind, back.product.id) == ("back_in_stock", S.RESTORE_KIT)
        assert snapshot(db, "goli")[S.RESTORE_KIT] == (1, 0)


# ---------------------------------------------------------------- 11. 401 and 400


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, "check the api_key of provider socialfetch"), (400, "HTTP 400")],
)
async def test_client_errors_fail_the_poll_without_retrying(sim, db, tmp_path, status, expected):
    cfg = make_config(tmp_path, sim, [STORE_WATCH], PRESENCE_RULES)
    async with runtime(cfg, db) as rt:
        await poll(rt, "goli")
        sim.add_fault(STORE_PATH, status=status, times=None)
        before = api_requests(sim)
        outcome = await poll(rt, "goli")
        assert outcome.status == "failed"
        assert api_requests(sim) == before + 1
        assert any(expected in e for e in outcome.errors), outcome.errors
        state = rt.store.watch_state("goli")
        assert state.consecutive_failures == 1 and expected in state.last_error
        assert all(present for present, _ in snapshot(db, "goli").values())


# ---------------------------------------------------------------- 12. history growth


async def test_history_grows_with_changes_not_with_polls(sim, db, tmp_path):
    cfg = make_config(tmp_path, sim, [STORE_WATCH], [DROP_RULE])
    sim.step(9)  # past the script: from here on nothing changes by itself
    async with runtime(cfg, db) as rt:
        await poll(rt, "goli")
        baseline = len(history_rows(db))
        assert baseline == 33

        sim.step()
        assert (await poll(rt, "goli")).status == "ok"
        assert len(history_rows(db)) == baseline

        sim.world.stores[S.STORE_URL].product(S.SLEEP).reprice("19.99")
        await poll(rt, "goli")
        assert history_rows(db)[baseline:] == [(S.SLEEP, "19.99")]

        sim.world.stores[S.STORE_URL].product(S.MATCHA).sold += 5  # a sales change counts
        await poll(rt, "goli")
        assert [pid for pid, _ in history_rows(db)[baseline + 1 :]] == [S.MATCHA]


async def test_daily_credit_budget_holds_between_two_live_processes(sim, db, tmp_path):
    """A daemon and a `watcher once` sharing the database share one budget."""
    cfg = make_config(
        tmp_path, sim, [STORE_WATCH], [DROP_RULE], socialfetch={"daily_credit_budget": 8}
    )
    async with runtime(cfg, db) as daemon, runtime(cfg, db) as once:
        assert (await poll(daemon, "goli")).status == "baseline"  # 4 credits
        assert (await poll(once, "goli")).status == "ok"  # 4 more: the budget is spent
        assert api_requests(sim) == 8
        assert (await poll(daemon, "goli")).status == "skipped"
        assert api_requests(sim) == 8


async def test_a_bug_in_a_poll_is_a_failed_poll_with_notices_not_a_crash(
    sim, db, tmp_path, monkeypatch
):
    """Whatever goes wrong inside a poll, the watch records it and the admins hear of it."""
    from watcher.pipeline import decision

    cfg = make_config(tmp_path, sim, [SEARCH_WATCH], [DROP_RULE])
    async with runtime(cfg, db) as rt:
        await poll(rt, "crocs")

        def broken(*args, **kwargs):
            raise ZeroDivisionError("boom")

        monkeypatch.setattr(decision, "diff", broken)
        for _ in range(3):
            outcome = await poll(rt, "crocs")
            assert outcome.status == "failed"
        state = rt.store.watch_state("crocs")
        assert state.consecutive_failures == 3
        assert state.last_error == "internal error: ZeroDivisionError: boom"
        assert kinds(rt) == ["watch_failing"]
        monkeypatch.undo()
        await poll(rt, "crocs")
        assert kinds(rt) == ["watch_failing", "watch_recovered"]


# ---------------------------------------------------------------- alert ids and quiet polls


async def test_quiet_polls_do_not_change_the_alert_id_of_the_next_transition(
    sim, db_factory, tmp_path
):
    """SPEC section 6: the seq advances only when a poll writes a change, so one transition
    on one history has one alert_id, however many quiet polls ran before it."""
    cfg = make_config(tmp_path, sim, [STORE_WATCH], [DROP_RULE, *PRESENCE_RULES])
    item = sim.world.stores[S.STORE_URL].product(S.ACV)
    price = item.price
    ids: list[list[str]] = []
    seqs: list[int] = []
    for quiet in (0, 3):
        item.reprice(str(price))
        url = db_factory()
        async with runtime(cfg, url) as rt:
            assert (await poll(rt, "goli")).status == "baseline"
            for _ in range(quiet):
                assert (await poll(rt, "goli")).status == "ok"
            seqs.append(rt.store.watch_state("goli").seq)
            item.reprice(str(price - 3))
            assert (await poll(rt, "goli")).alerts
            ids.append(sorted(a.alert_id for a, _ in stored(rt)))
    assert seqs == [1, 1]  # the baseline wrote; the quiet polls did not
    assert ids[0] == ids[1] and ids[0]


async def test_a_failing_notice_sent_by_another_process_still_gets_its_recovered(
    sim, db, tmp_path
):
    """A daemon (a) remembers the watch healthy; a `watcher once` (b) fails it and sends
    watch_failing without moving the seq. a must not go on believing its memory: the
    recovery that follows is announced once, by whichever process sees it."""
    watch = {**STORE_WATCH, "notify_failures_after": 1}
    cfg = make_config(tmp_path, sim, [watch], [DROP_RULE])
    async with runtime(cfg, db) as a, runtime(cfg, db) as b:
        assert (await poll(a, "goli")).status == "baseline"
        sim.add_fault("/v1/tiktok/shop/products", status=404, times=None)
        assert (await poll(b, "goli")).status == "failed"
        assert kinds(a) == ["watch_failing"]
        sim.simulator.clear_faults()
        outcomes = [(await poll(a, "goli")).status for _ in range(2)]
        assert outcomes == ["conflict", "ok"]  # b's write caught, then read again
        assert kinds(a) == ["watch_failing", "watch_recovered"]
        assert (await poll(b, "goli")).status == "ok"  # b reads what a left
        assert kinds(a) == ["watch_failing", "watch_recovered"]
