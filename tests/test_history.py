"""``watcher history``: the product's title, what changed in each row, and why a rank is blank.

The table's words are pure (``watcher.historyview``, tested on rows); the command is the real
console script over a history the real pipeline recorded from the simulator's demo world.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from PIL import Image

from watcher.config import load_config
from watcher.historyview import history_table, price_summary, what_changed
from watcher.models import HistoryPoint, Product, ProductHistory
from watcher.runtime import Runtime
from watcher.simulator import demo as S
from watcher.simulator import start_simulator

from .support import run_watcher

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def point(
    minutes: float,
    price: str | None = "24.99",
    *,
    listed: str | None = None,
    discount: int | None = None,
    rank: int | None = 9,
    sold: int | None = 100,
    present: bool = True,
    watch: str = "w",
) -> HistoryPoint:
    return HistoryPoint(
        watch_id=watch,
        product_id="1729",
        at=T0 + timedelta(minutes=minutes),
        price=None if price is None else Decimal(price),
        original_price=None if listed is None else Decimal(listed),
        discount_percent=discount,
        rank=rank,
        sold=sold,
        present=present,
    )


# ---------------------------------------------------------------- what changed (pure)


@pytest.mark.parametrize(
    ("before", "after", "watch_type", "expected"),
    [
        pytest.param(None, point(0), "store", "first seen", id="first"),
        pytest.param(
            point(0, "24.99", discount=20),
            point(1, "19.99", discount=40),
            "store",
            "price $24.99 → $19.99 (-20%), discount 20% → 40%",
            id="price-and-discount",
        ),
        pytest.param(
            point(0, "19.99"), point(1, "21.99"), "store", "price $19.99 → $21.99 (+10%)", id="up"
        ),
        pytest.param(point(0, rank=9), point(1, rank=3), "search", "rank #9 → #3", id="rank"),
        pytest.param(point(0, sold=100), point(1, sold=160), "store", "sold +60", id="sold"),
        pytest.param(point(0), point(1), "store", "no change", id="nothing"),
        pytest.param(
            point(0, listed="54.99"),
            point(1, listed="49.99"),
            "store",
            "list price $54.99 → $49.99 (-9%)",
            id="list-price",
        ),
        pytest.param(point(0), point(1, present=False), "store", "out of stock", id="sold-out"),
        pytest.param(
            point(0), point(1, present=False), "search", "left the results", id="left-results"
        ),
        pytest.param(point(0), point(1, present=False), None, "gone", id="gone-untyped"),
        pytest.param(
            point(0, present=False, rank=None),
            point(1, rank=17, sold=130),
            "showcase",
            "back in stock, ranked #17, sold +30",
            id="back-in-stock",
        ),
        pytest.param(
            point(0, present=False, rank=None),
            point(1, rank=4),
            "search",
            "back in the results, ranked #4",
            id="back-in-results",
        ),
        pytest.param(point(0), point(1, rank=None), "store", "not listed", id="unlisted"),
        pytest.param(point(0), point(1, rank=None), "search", "not in the results", id="unranked"),
        pytest.param(point(0, "9.99"), point(1, None), "store", "price unknown", id="unknown"),
    ],
)
def test_what_changed(before, after, watch_type, expected):
    assert what_changed(before, after, watch_type, "USD") == expected


def test_the_table_has_the_title_the_changes_and_why_a_rank_is_blank():
    record = ProductHistory(
        product_id="1729",
        points=(
            point(0, "24.99", listed="29.99", discount=17, rank=9, sold=1000),
            point(60, "19.99", listed="29.99", discount=33, rank=3, sold=1200),
            point(120, "19.99", listed="29.99", discount=33, rank=None, sold=1200),
            point(180, "19.99", listed="29.99", discount=33, rank=None, present=False, sold=1200),
            point(240, "19.99", listed="29.99", discount=33, rank=5, sold=1300),
        ),
        product=Product(id="1729", title="Goli ACV Gummies", currency="USD"),
    )
    lines = history_table(record, {"w": "store"}).splitlines()
    assert lines[:3] == [
        "Goli ACV Gummies",
        "product 1729 · USD · seen by w (store)",
        "now $19.99 (list $29.99) · lowest $19.99 · highest $24.99",
    ]
    header = lines[4]
    assert " ".join(header.split()) == "when (UTC) watch price disc rank sold what changed"
    rows = lines[5:10]
    assert rows[0].endswith("first seen") and "$24.99" in rows[0] and "#9" in rows[0]
    assert rows[1].endswith(
        "price $24.99 → $19.99 (-20%), discount 17% → 33%, rank #9 → #3, sold +200"
    )
    assert "—¹" in rows[2] and rows[2].endswith("not listed")
    assert "—²" in rows[3] and rows[3].endswith("out of stock")
    assert rows[4].endswith("back in stock, ranked #5, sold +100")
    assert lines[10] == ""
    assert lines[11] == (
        "—¹ rank blank: not listed in that poll (out of stock after missing_after such polls), "
        "or new in a poll with a failed page: only complete polls rank"
    )
    assert lines[12] == "—² rank blank: out of stock then: only listed products have a position"
    # the columns line up: every row's "what changed" starts where the header's does
    start = header.index("what changed")
    assert all(r[start - 2 : start] == "  " and r[start] != " " for r in rows)


def test_without_the_config_the_words_stay_generic():
    record = ProductHistory(
        "1729", (point(0), point(1, rank=None), point(2, rank=None, present=False))
    )
    text = history_table(record)
    assert text.splitlines()[0] == "Product 1729"  # no snapshot: no title
    assert "seen by w" in text and "(store)" not in text
    assert "not seen" in text and text.rstrip().endswith("no position")
    assert "now gone" in text


def test_price_summary_ignores_rows_without_a_price():
    assert price_summary([point(0, None, rank=None)], "USD") == ""
    ranked = [point(0, None, rank=17), point(1, None, rank=3), point(2, None, rank=None)]
    assert price_summary(ranked, None) == "now unranked · best #3 · worst #17"
    rows = [point(0, "10"), point(1, None), point(2, "12")]
    assert price_summary(rows, None) == "now 12.00 · lowest 10.00 · highest 12.00"


# ---------------------------------------------------------------- the command, end to end

CONFIG = """\
providers:
  socialfetch: {api_key: demo-key, base_url: "${SIM_URL}", requests_per_second: 100}
watches:
  - {id: goli-store, type: store, url: "@STORE@", region: US, every: 1m, max_pages: 10}
  - {id: crocs-search, type: search, query: "crocs clogs", region: US, every: 1m, max_pages: 5}
""".replace("@STORE@", S.STORE_URL)


@pytest.fixture
async def recorded(tmp_path, db_url):
    """The demo world polled by the real pipeline: a baseline, then steps 1–6 (the clog drops
    twice and climbs to #2; the restore kit sells out in step 3 and is back in step 6)."""
    sim = await start_simulator()
    cfg_path = tmp_path / "rules.yaml"
    cfg_path.write_text(CONFIG)
    env = {"SIM_URL": sim.base_url}
    monkey = pytest.MonkeyPatch()
    monkey.setenv("SIM_URL", sim.base_url)
    try:
        rt = Runtime(load_config(cfg_path), db_url, command="once")
        try:
            await rt.poll_all()
            for _ in range(6):
                sim.step()
                await rt.poll_all()
        finally:
            await rt.close()

        async def cli(*args: str):
            return await run_watcher("history", *args, "--db", db_url, env=env, timeout=30)

        yield cli, str(cfg_path)
    finally:
        monkey.undo()
        await sim.close()


async def test_history_names_the_product_and_says_what_changed(recorded):
    cli, cfg = recorded
    r = await cli(S.CLASSIC_CLOG, "-c", cfg)
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Crocs Unisex-Adult Classic Clogs, Lightweight Slip-On Water Shoes"
    assert lines[1] == f"product {S.CLASSIC_CLOG} · USD · seen by crocs-search (search)"
    assert lines[2] == "now $29.99 (list $54.99) · lowest $29.99 · highest $44.99"
    assert "what changed" in lines[4]
    rows = [ln for ln in lines[5:] if ln.startswith("20")]
    assert len(rows) == 7  # the baseline and six steps: sold grows in each
    assert rows[0].endswith("first seen")
    changes = "\n".join(rows)
    assert "price $44.99 → $34.99 (-22%), discount 18% → 36%" in changes  # step 2
    assert "rank #9 → #10" in changes  # step 3: BAYA climbed past it
    assert "price $34.99 → $29.99 (-14%), discount 36% → 45%" in changes  # step 4
    assert "rank #10 → #2" in changes  # step 6
    assert "—" not in r.stdout  # always ranked: no footnote


async def test_history_explains_a_blank_rank_in_the_words_of_the_watch(recorded):
    cli, cfg = recorded
    r = await cli(S.RESTORE_KIT, "-c", cfg)
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Goli Restore Kit - 1 Silk Pillow Case & 1 Silk Eye Mask"
    rows = [ln for ln in lines if ln.startswith("20")]
    # step 3: missing once (not yet out of stock: missing_after is 2), step 4: out of stock,
    # step 6: back; step 5 (still missing) changed nothing, so it wrote no row
    missing, gone = rows[3], rows[4]
    assert "—¹" in missing and missing.endswith("not listed")
    assert "—²" in gone and gone.endswith("out of stock")
    assert "back in stock" in rows[5]
    notes = [ln for ln in lines if ln.startswith("—")]
    assert notes[0].startswith("—¹ rank blank: not listed in that poll")
    assert notes[1] == "—² rank blank: out of stock then: only listed products have a position"

    r = await cli(S.RESTORE_KIT)  # no config: the same rows, in words that fit any watch
    assert r.code == 0, r.stderr
    assert "seen by goli-store\n" in r.stdout and "back in stock" not in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("20")]
    assert rows[3].endswith("not seen") and rows[4].endswith("gone")
    assert "back, ranked #17" in rows[5]
    assert "rank blank: not among the products that poll read" in r.stdout


async def test_history_png_is_the_chart_the_bot_sends(recorded, tmp_path):
    cli, _cfg = recorded
    png = tmp_path / "clog.png"
    r = await cli(S.CLASSIC_CLOG, "--png", str(png))
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == f"wrote {png} (7 recorded changes)"
    with Image.open(io.BytesIO(png.read_bytes())) as image:
        assert image.size == (1200, 675)
        text = dict(image.text)  # type: ignore[attr-defined]
    assert text["Title"] == "Crocs Unisex-Adult Classic Clogs, Lightweight Slip-On Water Shoes"
    assert text["Currency"] == "USD"
    assert text["Lowest"].startswith("29.99 ") and text["Highest"].startswith("44.99 ")


async def test_history_of_an_unknown_product_or_with_a_bad_config_fails_cleanly(
    recorded, tmp_path
):
    cli, _cfg = recorded
    r = await cli("999")
    assert r.code == 1
    assert r.stderr.strip() == "watcher: no history for product 999"
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("type: search", "type: serach"))
    r = await cli(S.CLASSIC_CLOG, "-c", str(bad))
    assert r.code == 2 and r.stdout == ""
    assert r.stderr.startswith(f"{bad}:5:") and "serach" in r.stderr
