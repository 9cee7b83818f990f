"""The database layer on whichever backend the suite runs against (SQLite or PostgreSQL):
migrations, adopting a database made before them, the lock, and the indexes the hot
queries rely on."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect, text
from sqlmodel import SQLModel

from watcher.models import Alert, Product, Tracked
from watcher.store import PollWrite, Store, schema
from watcher.store.tables import SCHEMA_VERSION

from .support import WATCHER, run_watcher, sql

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SUPERGROUP = -1001234567890


def test_the_suite_runs_on_the_backend_it_was_asked_for(db_url, db_backend):
    """WATCHER_TEST_DB must really switch the backend, or the PostgreSQL run proves nothing."""
    store = Store(db_url)
    try:
        assert store.engine.dialect.name == db_backend
        assert store.ping()
    finally:
        store.close()
    engine = create_engine(db_url)
    assert engine.dialect.name == db_backend
    engine.dispose()


def test_migrations_build_exactly_the_schema_the_code_declares(db_url):
    assert schema.head() == schema.HEAD  # the fast path's idea of "current" is Alembic's
    store = Store(db_url)
    try:
        assert store.schema is not None and store.schema.current == schema.head()
        with store.engine.connect() as conn:
            # procrastinate's job queue (PostgreSQL) is its own schema, not our models'
            def ours(name, _type, _parent):
                return not (name or "").startswith("procrastinate")

            ctx = MigrationContext.configure(
                conn, opts={"compare_type": False, "include_name": ours}
            )
            diff = compare_metadata(ctx, SQLModel.metadata)
        assert diff == []
        assert sql(db_url, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(SCHEMA_VERSION),)
        ]
    finally:
        store.close()


def make_first_schema_database(url: str) -> None:
    """A database as watcher made it before migrations: revision 0001's tables, no
    alembic_version, and data in every table."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(schema._alembic_config(conn), schema.FIRST_REVISION)
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    rows = {
        "watch_state": "INSERT INTO watch_state VALUES ('goli', 'h', true, false, 0, 3, 0, false,"
        " NULL, :t, :t, false, false, 1)",
        "snapshot": "INSERT INTO snapshot VALUES ('goli', 'p1', 'Gummies', NULL, NULL, 'USD',"
        " '16.99', '19.99', 15, 100, '4.5', 10, NULL, NULL, NULL, true, 0, :t)",
        "history": "INSERT INTO history (watch_id, product_id, seq, at, price, original_price,"
        " discount_percent, rank, sold, present) VALUES ('goli', 'p1', 3, :t, '16.99', '19.99',"
        " 15, NULL, 100, true)",
        "alert": "INSERT INTO alert VALUES ('a1', 'price_drop', 'drop', 'goli', 'p1', :t,"
        ' \'goli:3\', \'{"product": {"id": "p1", "title": "Gummies", "price": "16.99"},'
        ' "previous": null, "message": "down", "channels": ["hook"]}\')',
        "delivery": "INSERT INTO delivery (alert_id, channel, target, status, held, claim,"
        " attempts, next_attempt_at, last_error, created_at, sent_at)"
        " VALUES ('a1', 'hook', '', 'pending', false, NULL, 0, :t, NULL, :t, NULL)",
        "credit": "INSERT INTO credit VALUES ('socialfetch', '2026-12-01', 7, 7)",
        "subscription": "INSERT INTO subscription VALUES ('deals', 5005, 'all', '', :t)",
        "mute": "INSERT INTO mute VALUES ('deals', 5005, :t)",
        "provider_state": "INSERT INTO provider_state VALUES ('keyapi', NULL, false)",
    }
    for statement in rows.values():
        sql(url, statement, t=T0)


def test_a_first_schema_database_with_data_is_adopted_and_upgraded(db_url, db_backend):
    make_first_schema_database(db_url)
    assert sql(db_url, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]
    store = Store(db_url)
    try:
        assert store.schema is not None
        assert (store.schema.current, store.schema.adopted) == (schema.head(), True)
        # everything that was there still is, and still works
        assert store.watch_state("goli").seq == 3  # type: ignore[union-attr]
        assert store.load_tracked("goli")["p1"].product.price == Decimal("16.99")
        assert store.credits_on("socialfetch", T0.date()) == 7
        assert store.subscribers("deals", "drop", "goli") == [5005]
        due = store.due_deliveries(T0 + timedelta(seconds=1))
        assert [(d.channel, a.alert_id, a.product.price) for d, a in due] == [  # type: ignore[union-attr]
            ("hook", "a1", Decimal("16.99"))
        ]
        assert {k: v.at for k, v in store.last_alerted("goli", ["p1"]).items()} == {
            ("drop", "p1"): T0
        }
        # what revision 0002 brought: 64-bit chat ids and the new indexes
        assert store.subscribe("deals", SUPERGROUP, "all")
        store.set_mute("deals", SUPERGROUP, T0 + timedelta(hours=1), now=T0)
        assert store.subscribers("deals", "drop", "goli") == [SUPERGROUP, 5005]
        assert store.mutes("deals")[("deals", SUPERGROUP)] == T0 + timedelta(hours=1)
        names = {
            i["name"]
            for table in ("alert", "delivery", "history")
            for i in inspect(store.engine).get_indexes(table)
        }
        assert {"ix_alert_cooldown", "ix_alert_detected_at", "ix_delivery_claim"} <= names
        assert "ix_alert_rule_watch_product" not in names
        assert sql(db_url, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(SCHEMA_VERSION),)
        ]
    finally:
        store.close()
    # opening it again is a no-op
    again = Store(db_url)
    assert again.schema is not None and not again.schema.adopted
    again.close()


async def test_processes_starting_together_migrate_once(db_url):
    """Four `watcher db upgrade` at once on an empty database: one migrates, the others
    wait for its lock and find the schema current; none fails."""
    results = await asyncio.gather(
        *(run_watcher("db", "upgrade", "--db", db_url, timeout=60) for _ in range(4))
    )
    for r in results:
        assert r.code == 0, r.stderr
        assert "Traceback" not in r.stderr
    upgraded = [r for r in results if f"upgraded schema none → {schema.head()}" in r.stdout]
    assert len(upgraded) == 1, [r.stdout for r in results]
    assert sum("(up to date)" in r.stdout for r in results) == 3
    assert sql(db_url, "SELECT version_num FROM alembic_version") == [(schema.head(),)]
    r = await run_watcher("db", "current", "--db", db_url)
    assert r.code == 0 and f"schema {schema.head()} (up to date)" in r.stdout


async def test_a_database_from_a_newer_watcher_is_refused_untouched(db_url, tmp_path):
    Store(db_url).close()
    sql(db_url, "UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(schema.SchemaError, match="newer than this watcher"):
        Store(db_url)
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(
        "providers:\n  socialfetch: {api_key: k, base_url: 'http://127.0.0.1:9'}\n"
        "channels:\n  out: {type: console}\n"
        "watches:\n  - {id: s, type: search, query: q, every: 1h}\n"
        "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
    )
    for args in (("once", "-c", str(cfg)), ("db", "current"), ("db", "upgrade")):
        r = await run_watcher(*args, "--db", db_url)
        assert r.code == 1, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "newer than this watcher" in lines[0], r.stderr
    assert sql(db_url, "SELECT version_num FROM alembic_version") == [("0099",)]


def test_db_current_on_a_missing_sqlite_file_creates_nothing(tmp_path):
    import subprocess

    path = tmp_path / "nope.db"
    r = subprocess.run(
        [WATCHER, "db", "current", "--db", f"sqlite:///{path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "no database at" in r.stderr
    assert not path.exists()


# ---------------------------------------------------------------- the hot queries use indexes


def plans(store: Store, call) -> list[str]:
    """The query plans of the SELECTs ``call`` makes, as the backend would run them
    (PostgreSQL with sequential scans disabled: the question is whether an index *can*
    serve the query, which a tiny test table would otherwise hide)."""
    captured: list[tuple[str, object]] = []

    def grab(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", grab)
    sqlite = store.engine.dialect.name == "sqlite"
    out = []
    with store.engine.connect() as conn:
        if not sqlite:
            conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, params in captured:
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(prefix + statement, params).all()  # type: ignore[arg-type]
            out.append(" | ".join(str(r[-1]) for r in rows))
    return out


def alert(i: int) -> Alert:
    return Alert(
        alert_id=f"a{i:04d}",
        kind="price_drop",
        watch_id=f"w{i % 7}",
        detected_at=T0 + timedelta(minutes=i),
        rule_id=f"r{i % 3}",
        product=Product(id=f"p{i % 50}", title="P", price=Decimal("9.99")),
        message="m",
        batch=f"w{i % 7}:{i}",
    )


@pytest.fixture
def busy_store(db_url):
    store = Store(db_url)
    store.add_alerts(
        [(alert(i), [("hook", ""), ("deals", str(SUPERGROUP))]) for i in range(400)], now=T0
    )
    # as in a long-running database: nearly everything sent, a few pending
    sent = [d.id for d, _ in store.due_deliveries(T0) if d.id is not None and d.id % 20]
    store.mark_sent(sent, T0)
    if store.engine.dialect.name == "sqlite":
        sql(db_url, "ANALYZE")
    else:
        sql(db_url, "ANALYZE alert; ANALYZE delivery")
    yield store
    store.close()


def test_the_cooldown_lookup_uses_its_index(busy_store):
    got = plans(busy_store, lambda: busy_store.last_alerted("w3", ["p1", "p2", "p3"]))
    assert len(got) == 1
    assert "ix_alert_cooldown" in got[0], got


def test_claiming_and_releasing_use_the_claim_and_due_indexes(busy_store):
    claimed: list = []
    got = plans(
        busy_store, lambda: claimed.extend(busy_store.claim_due(T0 + timedelta(hours=1), limit=10))
    )
    assert len(claimed) == 10
    assert any("ix_delivery_due" in p for p in got), got  # what is due
    assert any("ix_delivery_claim" in p for p in got), got  # what this claim took


def test_recent_alerts_use_the_detected_at_index(busy_store):
    got = plans(busy_store, lambda: busy_store.recent_alerts(limit=5))
    assert "ix_alert_detected_at" in got[0], got


# ---------------------------------------------------------------- retention


def test_retention_prunes_settled_alerts_in_small_batches_and_keeps_what_is_owed(db_url):
    store = Store(db_url)
    now = T0 + timedelta(days=200)
    # 5 old alerts sent, 1 old dead, 1 old still pending (owed!), 2 recent sent
    olds = [alert(i) for i in range(7)]
    recent = [replace(alert(100 + i), detected_at=now - timedelta(days=1)) for i in range(2)]
    store.add_alerts([(a, [("hook", "")]) for a in olds + recent], now=T0)
    rows = {a.alert_id: d.id for d, a in store.due_deliveries(now)}
    store.mark_sent([rows[a.alert_id] for a in olds[:5] + recent], T0)
    store.mark_failed([rows[olds[5].alert_id]], error="gone", dead=True, next_attempt_at=None)
    sql(
        db_url,
        "INSERT INTO history (watch_id, product_id, seq, at, price, present)"
        " VALUES ('w', 'p', 1, :old, '1', true), ('w', 'p', 2, :new, '2', true)",
        old=T0,
        new=now - timedelta(days=1),
    )
    batches = []
    while (got := store.prune_batch(now, timedelta(days=90), batch=2)) != (0, 0):
        batches.append(got)
    assert batches == [(2, 0), (2, 0), (2, 0)]  # 6 settled old alerts, two at a time
    left = {a.alert_id for a, _ in store.recent_alerts(limit=100)}
    assert left == {olds[6].alert_id, *(a.alert_id for a in recent)}
    assert sql(db_url, "SELECT count(*) FROM delivery") == [(3,)]
    assert sql(db_url, "SELECT count(*) FROM history") == [(2,)]  # kept: no history_retention
    assert store.prune_batch(now, timedelta(days=90), timedelta(days=30)) == (0, 1)
    assert sql(db_url, "SELECT price FROM history") == [("2",)]
    store.close()


def test_retention_options_are_read_and_checked(tmp_path):
    from watcher.config import load_config
    from watcher.errors import ConfigError

    base = (
        "providers:\n  socialfetch: {api_key: k}\n"
        "channels:\n  out: {type: console}\n"
        "watches:\n  - {id: s, type: search, query: q, every: 1h}\n"
        "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
    )
    path = tmp_path / "rules.yaml"
    path.write_text(base)
    cfg = load_config(path)
    assert (cfg.retention, cfg.history_retention) == (timedelta(days=90), None)
    path.write_text("retention: 30d\nhistory_retention: 400d\n" + base)
    cfg = load_config(path)
    assert (cfg.retention, cfg.history_retention) == (timedelta(days=30), timedelta(days=400))
    path.write_text("retention: forever\nretension: 1d\n" + base)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    messages = [str(i) for i in caught.value.issues]
    assert messages[0].startswith(f"{path}:1:12: 'retention': expected a duration")
    assert messages[1].startswith(f"{path}:2:1: unknown top-level section 'retension'")
    assert "did you mean 'retention'?" in messages[1]


def test_an_in_memory_sqlite_database_is_migrated_in_place():
    """The migration lock must not open a second (and so different) in-memory database."""
    store = Store("sqlite://")
    try:
        assert store.schema is not None and store.schema.current == schema.head()
        assert store.subscribe("deals", SUPERGROUP, "all")
        assert store.subscribers("deals", None, None) == [SUPERGROUP]
    finally:
        store.close()


async def test_watcher_once_applies_retention_too(db_url, tmp_path):
    """A cron-driven `watcher once` (no daemon ever runs) must prune as well."""
    store = Store(db_url)
    now = datetime.now(UTC)
    old = replace(alert(1), detected_at=now - timedelta(days=60))
    recent = replace(alert(2), detected_at=now - timedelta(days=1))
    store.add_alerts([(old, [("hook", "")]), (recent, [("hook", "")])], now=T0)
    store.mark_sent([d.id for d, _ in store.due_deliveries(datetime.now(UTC))], T0)
    store.close()
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(
        "retention: 30d\n"
        "providers:\n  socialfetch: {api_key: k, base_url: 'http://127.0.0.1:9'}\n"
        "channels:\n  out: {type: console}\n"
        "watches:\n  - {id: s, type: search, query: q, every: 1h}\n"
        "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
    )
    r = await run_watcher("once", "-c", str(cfg), "--db", db_url)
    assert r.code == 0, r.stderr
    assert sql(db_url, "SELECT alert_id FROM alert") == [(recent.alert_id,)]


def test_history_rows_keep_prices_exactly_and_nulls_as_null(db_url):
    store = Store(db_url)
    state = store.ensure_watch("w")
    kept = Product(id="p", price=Decimal("19.90"), original_price=None, rank=3, sold=7)
    write = PollWrite(
        watch_id="w", expected_seq=state.seq, now=T0, state={}, history=[(Tracked(kept), True)]
    )
    assert store.commit_poll(write)
    rows = sql(db_url, "SELECT price, original_price, discount_percent, rank, sold FROM history")
    assert rows == [("19.90", None, None, 3, 7)]
    (point,) = store.product_history("p")
    assert (point.price, point.original_price, point.rank, point.sold) == (
        Decimal("19.90"),
        None,
        3,
        7,
    )
    store.close()


def test_last_alerted_is_the_latest_alert_in_the_cooldown_window_and_not_a_tracks(db_url):
    """What the cooldown compares a repeat with: the product as the latest alert of that
    rule showed it; ties broken the same way every time; alerts older than ``since`` and
    the tracks' own alerts left out."""
    store = Store(db_url)
    try:

        def at(aid: str, minutes: int, price: str, rule: str = "drop") -> Alert:
            return Alert(
                alert_id=aid,
                kind="price_drop",
                watch_id="w",
                detected_at=T0 + timedelta(minutes=minutes),
                rule_id=rule,
                product=Product(id="p", price=Decimal(price)),
                batch=f"w:{minutes}",
            )

        store.add_alerts(
            [
                (at("a1", 0, "20"), [("hook", "")]),
                (at("a2", 60, "18"), [("hook", "")]),
                (at("a3", 60, "17"), [("hook", "")]),  # the same instant as a2
                (at("a4", 90, "10", rule="track:1"), [("tg", "42")]),
            ],
            now=T0,
        )
        got = store.last_alerted("w", ["p"])
        assert list(got) == [("drop", "p")]  # the track's alert is not a rule's
        last = got[("drop", "p")]
        assert (last.at, last.product.price) == (T0 + timedelta(minutes=60), Decimal("17"))
        assert store.last_alerted("w", ["p"], since=T0 + timedelta(minutes=61)) == {}
    finally:
        store.close()
