"""End to end over real sockets: the simulator on 127.0.0.1, a real ``watcher once``
subprocess against a temp SQLite file, and a local webhook receiver checking signatures.

The simulator's scripted timeline (``watcher.simulator``) says which alerts each step must
produce; these tests assert that exactly those arrive, with their fields, each ``alert_id``
once.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from watcher.simulator import demo as sim_ids
from watcher.simulator import start_simulator
from watcher.store import DeliveryRow

from .support import WebhookReceiver, run_watcher, sql, table_rows

SECRET = "e2e-secret"

CONFIG = """\
providers:
  socialfetch:
    api_key: ${SF_KEY}
    base_url: ${SIM_URL}
    requests_per_second: 100
  keyapi:
    api_key: kk
    base_url: ${SIM_URL}
    requests_per_second: 100
channels:
  hook:
    type: webhook
    url: ${HOOK_URL}
    secret: ${HOOK_SECRET}
    group_over: 50
watches:
  - {id: goli-store, type: store, url: "@STORE@", region: US, every: 1m, max_pages: 10}
  - {id: glow-showcase, type: showcase, handle: @HANDLE@, every: 1m}
  - {id: crocs-search, type: search, query: "@QUERY@", every: 1m}
  - {id: beauty-top, type: top_products, category_id: "@CATEGORY@", every: 1m}
rules:
  - {id: price-drop-10, when: price_drop, min_percent: 10, notify: [hook], cooldown: 1s}
  - id: cheap-classic-clog
    when: price_below
    target: "30.00"
    watches: [crocs-search]
    match: {title: "(?i)classic clog"}
    notify: [hook]
  - id: deep-discount
    when: discount_at_least
    percent: 40
    watches: [goli-store]
    notify: [hook]
  - {id: new-in-showcase, when: new_item, watches: [glow-showcase], notify: [hook]}
  - {id: climbers, when: rank_jump, min_positions: 5, top: 10, notify: [hook]}
  - {id: sold-out, when: out_of_stock, notify: [hook]}
  - {id: restocked, when: back_in_stock, notify: [hook]}
  - id: all-time-low
    when: lowest_price
    watches: [goli-store, crocs-search]
    notify: [hook]
    cooldown: 1s
"""
for _name, _value in {
    "@STORE@": sim_ids.STORE_URL,
    "@HANDLE@": sim_ids.HANDLE,
    "@QUERY@": sim_ids.QUERY,
    "@CATEGORY@": sim_ids.CATEGORY_ID,
}.items():
    CONFIG = CONFIG.replace(_name, _value)

S = sim_ids
# step → the (rule, product id) pairs that poll must deliver (from the simulator's timeline)
TIMELINE: dict[int, list[tuple[str, str]]] = {
    1: [("price-drop-10", S.ACV), ("all-time-low", S.ACV), ("all-time-low", S.ASHWAGANDHA)],
    2: [
        ("price-drop-10", S.MATCHA),
        ("all-time-low", S.MATCHA),
        ("price-drop-10", S.CLASSIC_CLOG),
        ("all-time-low", S.CLASSIC_CLOG),
        ("new-in-showcase", "*"),
        ("new-in-showcase", "*"),
    ],
    3: [
        ("price-drop-10", S.SUPERGREENS),
        ("deep-discount", S.SUPERGREENS),
        ("all-time-low", S.SUPERGREENS),
        ("climbers", S.BAYA),
    ],
    4: [
        ("price-drop-10", S.CERAVE),
        ("sold-out", S.RESTORE_KIT),
        ("price-drop-10", S.CLASSIC_CLOG),
        ("cheap-classic-clog", S.CLASSIC_CLOG),
        ("all-time-low", S.CLASSIC_CLOG),
    ],
    5: [("price-drop-10", S.PREBIOTIC), ("all-time-low", S.PREBIOTIC), ("climbers", S.LIP_GLOSS)],
    6: [("price-drop-10", S.MATCHA), ("restocked", S.RESTORE_KIT), ("climbers", S.CLASSIC_CLOG)],
    7: [("climbers", S.TEETH_WHITENING)],
    8: [("price-drop-10", S.SLEEP), ("all-time-low", S.SLEEP), ("new-in-showcase", "*")],
}


@pytest.fixture
async def env(tmp_path: Path, db_url: str):
    sim = await start_simulator()
    hook = WebhookReceiver(secret=SECRET)
    await hook.start()
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(CONFIG)
    db = db_url
    e = {
        "SIM_URL": sim.base_url,
        "HOOK_URL": hook.url,
        "HOOK_SECRET": SECRET,
        "SF_KEY": "sfk_test",
    }

    async def once(*extra: str):
        return await run_watcher("once", "-c", str(cfg), "--db", db, *extra, env=e)

    yield sim, hook, once, db
    await hook.close()
    await sim.close()


def pairs(alerts: list[dict]) -> Counter:
    return Counter(
        (a["rule"], "*" if a["rule"] == "new-in-showcase" else a["product"]["id"]) for a in alerts
    )


async def test_scenario_delivers_each_alert_once_with_its_fields(env):
    sim, hook, once, _db = env
    r = await once()
    assert r.code == 0, r.stderr
    assert "baseline" in r.stderr
    assert hook.requests == []  # the first poll is quiet

    seen = 0
    for step in range(1, 9):
        sim.step()
        r = await once()
        assert r.code == 0, r.stderr
        fresh = hook.alerts()[seen:]
        seen += len(fresh)
        assert pairs(fresh) == Counter(TIMELINE[step]), f"step {step}: {r.stderr}"

    # polling again with nothing changed delivers nothing
    r = await once()
    assert r.code == 0
    assert len(hook.alerts()) == seen

    alerts = hook.alerts()
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert_id arrived twice"
    assert hook.bad_signatures == 0

    acv = next(a for a in alerts if a["rule"] == "price-drop-10" and a["product"]["id"] == S.ACV)
    assert acv["kind"] == "price_drop"
    assert acv["watch"] == "goli-store"
    assert acv["product"]["price"] == "16.99"
    assert acv["previous"]["price"] == "19.99"
    assert acv["product"]["currency"] == "USD"
    assert acv["product"]["shop_name"] == "Goli Nutrition"
    assert acv["detected_at"].endswith("Z")
    assert "19.99" in acv["message"] and "16.99" in acv["message"]
    assert set(acv) == {
        "alert_id",
        "rule",
        "kind",
        "watch",
        "detected_at",
        "product",
        "previous",
        "message",
    }
    gone = next(a for a in alerts if a["rule"] == "sold-out")
    assert gone["kind"] == "out_of_stock" and gone["product"]["id"] == S.RESTORE_KIT
    climb = next(a for a in alerts if a["product"]["id"] == S.LIP_GLOSS)
    assert (climb["previous"]["rank"], climb["product"]["rank"]) == (17, 3)
    assert climb["product"]["price"] is None  # KeyAPI rows have no price


async def test_failing_webhook_still_gets_every_alert_exactly_once(env):
    sim, hook, once, _db = env
    assert (await once()).code == 0
    sim.step()
    hook.fail_next = 2  # 503 twice, no Retry-After: the dispatcher backs off and retries
    r = await once()
    assert r.code == 0, r.stderr
    assert len(hook.requests) == 2 + 3
    assert pairs(hook.alerts()) == Counter(TIMELINE[1])


async def test_webhook_down_for_a_whole_run_delivers_on_the_next(env):
    sim, hook, once, db = env
    assert (await once()).code == 0
    sim.step()
    hook.fail_next, hook.retry_after = 1000, "120"  # down; asks to come back in 2 minutes
    r = await once()
    assert r.code == 0
    assert "still pending" in r.stderr
    assert hook.alerts() == []
    sql(db, update(DeliveryRow).values(next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC)))
    hook.fail_next = 0
    sim.step()
    r = await once()
    assert r.code == 0, r.stderr
    got = pairs(hook.alerts())
    assert got == Counter(TIMELINE[1]) + Counter(TIMELINE[2])
    assert len({a["alert_id"] for a in hook.alerts()}) == len(hook.alerts())


async def test_dry_run_prints_and_stores_nothing_but_credits(env):
    sim, hook, once, db = env
    assert (await once()).code == 0
    before = table_rows(db)
    # the baseline stored what the dry run must leave alone
    assert before["snapshot"] and before["history"]
    assert (before["alert"], before["delivery"]) == ([], [])
    sim.step()
    r = await once("--dry-run")
    assert r.code == 0, r.stderr
    assert "would fire [price_drop] price-drop-10" in r.stdout
    assert "would fire [lowest_price] all-time-low" in r.stdout
    assert "dry run: 3 alerts would fire; nothing stored" in r.stderr
    assert hook.requests == []
    after = table_rows(db)
    for table in ("snapshot", "history", "alert", "delivery"):
        assert len(after[table]) == len(before[table]), table
        assert after[table] == before[table], f"the dry run changed table {table}"
    assert {t: rows for t, rows in after.items() if t != "credit"} == {
        t: rows for t, rows in before.items() if t != "credit"
    }
    [(credits,)] = sql(db, "SELECT sum(credits) FROM credit")
    # baseline: 4+2+3 Social Fetch pages (1 credit each) and 2 KeyAPI pages (2 each) = 13;
    # the dry run spent as much again
    assert credits == 26
    # the dry run stored nothing, so the real poll fires the same alerts
    r = await once()
    assert r.code == 0, r.stderr
    assert pairs(hook.alerts()) == Counter(TIMELINE[1])
    assert sql(db, "SELECT count(*) FROM alert") == [(3,)]
    sent = sql(db, "SELECT status, count(*) FROM delivery GROUP BY status")
    assert sent == [("sent", 3)]


async def test_upstream_garbage_never_crashes_and_never_removes(env):
    sim, hook, once, _db = env
    assert (await once()).code == 0
    sim.step()
    sim.step()
    sim.step()  # step 3: RESTORE_KIT is gone from the store listing
    for body in ("html", "truncated", "garbage", "wrong_types"):
        sim.add_fault("/v1/tiktok/shop/products", body=body, page=2, times=1)
        r = await once()
        assert r.code == 0, r.stderr
        assert "goli-store" in r.stderr and "partial" in r.stderr
    # four partial polls: never a removal, although RESTORE_KIT was absent each time
    assert not [a for a in hook.alerts() if a["rule"] == "sold-out"]
    r = await once()
    assert "goli-store: ok" in r.stderr
    r = await once()
    assert [a["product"]["id"] for a in hook.alerts() if a["rule"] == "sold-out"] == [
        S.RESTORE_KIT
    ]


async def test_failed_polls_send_one_failing_and_one_recovered_notice(env):
    sim, hook, once, _db = env
    assert (await once()).code == 0
    sim.add_fault("/v1/tiktok/profiles/*", status=503, times=None, retry_after=0)
    for _ in range(5):
        r = await once()
        assert r.code == 0
        assert "glow-showcase: failed" in r.stderr
    sim.simulator.clear_faults()
    r = await once()
    assert "glow-showcase: ok" in r.stderr
    notices = [a for a in hook.alerts() if a["kind"].startswith("watch_")]
    assert [n["kind"] for n in notices] == ["watch_failing", "watch_recovered"]
    assert all(n["rule"] is None and n["product"] is None for n in notices)
    assert notices[0]["watch"] == "glow-showcase"
    assert "503" in notices[0]["message"]
