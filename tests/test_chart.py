"""Price charts: real PNG bytes of the promised size, for odd inputs too, and what the chart
says (its title, axis, lines and marks read back from the figure, and from the PNG's text)."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from matplotlib.text import Annotation
from PIL import Image

from watcher.chart import (
    chart_metadata,
    extremes,
    history_summary,
    price_figure,
    render_history_chart,
    render_price_chart,
    render_price_chart_async,
    shorten,
)
from watcher.models import HistoryPoint, Product, ProductHistory

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZE = (1200, 675)  # 16:9, below Telegram's 1280 px: sent as is
CLOG = "Crocs Unisex-Adult Classic Clogs, Lightweight Slip-On Water Shoes"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def png_text(data: bytes) -> dict[str, str]:
    """The PNG's tEXt/iTXt chunks, as an image viewer or a script would read them."""
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.text)  # type: ignore[attr-defined]


def row(
    hours: float,
    price: str | None,
    *,
    present: bool = True,
    watch: str = "w",
    listed: str | None = None,
) -> HistoryPoint:
    return HistoryPoint(
        watch_id=watch,
        product_id="1729",
        at=T0 + timedelta(hours=hours),
        price=None if price is None else Decimal(price),
        original_price=None if listed is None else Decimal(listed),
        present=present,
    )


# a month of the demo's clog: two drops to a low, gone for two days, back dearer
MONTH = [
    row(0, "44.99", listed="54.99"),
    row(24 * 5, "39.99", listed="54.99"),
    row(24 * 9, "44.99", listed="54.99"),
    row(24 * 15, "34.99", listed="54.99"),
    row(24 * 17 + 6, "29.99", listed="54.99"),
    row(24 * 20, "29.99", listed="54.99", present=False),
    row(24 * 22, "32.99", listed="49.99"),
    row(24 * 26, "36.99", listed="49.99"),
]


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([row(0, "19.99"), row(5, "17.50"), row(9, "14.96")], id="steps"),
        pytest.param([row(0, "19.99")], id="one-point"),
        pytest.param([row(0, None), row(2, None)], id="no-prices"),
        pytest.param([row(0, "20"), row(3, None), row(6, "18")], id="gap"),
        pytest.param([row(0, "20"), row(4, "20", present=False), row(8, "19")], id="removal"),
        pytest.param([row(0, "20", watch="a"), row(1, "21", watch="b")], id="two-watches"),
        pytest.param([row(0, "20", listed="25"), row(30, "20", listed="25")], id="flat"),
        pytest.param(MONTH, id="month"),
        pytest.param([], id="empty"),
    ],
)
def test_png_has_the_telegram_size(rows):
    data = render_price_chart(rows, "Gummies <b> & more", "USD")
    assert png_size(data) == SIZE
    assert len(data) < 100_000


def test_a_rank_known_only_while_gone_is_no_rank_chart():
    # no price, and the only rank is of a poll the product was missing from
    rows = [SimpleNamespace(at=datetime(2026, 1, 1), price=None, rank=5, present=False)]
    assert png_size(render_price_chart(rows, "x")) == SIZE


def test_naive_times_and_plain_objects_work():
    rows = [
        SimpleNamespace(at=datetime(2026, 1, 1), price="1,5", present=True, watch_id="w"),
        SimpleNamespace(at=datetime(2026, 1, 2), price="2.5", present=True, watch_id="w"),
    ]
    assert png_size(render_price_chart(rows, "x")) == SIZE


async def test_async_variant_runs_in_a_thread():
    data = await render_price_chart_async([row(0, "9.99"), row(1, "8.99")], "t")
    assert png_size(data) == SIZE


def lines_by_label(fig) -> dict[str, object]:
    (ax,) = fig.axes
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def annotations(fig) -> list[str]:
    (ax,) = fig.axes
    return [t.get_text() for t in ax.texts if isinstance(t, Annotation)]


def test_the_figure_says_what_the_product_is_and_what_it_cost():
    until = T0 + timedelta(days=28)
    fig = price_figure(MONTH, CLOG, "usd", until=until)
    (ax,) = fig.axes
    assert ax.get_title(loc="left") == CLOG  # short enough to stay whole
    assert ax.get_ylabel() == "Price (USD)"

    lines = lines_by_label(fig)
    assert set(lines) == {"price", "list price", "gone (removed)"}
    price, listed = lines["price"], lines["list price"]
    # step lines: a price holds until the next change, and the last one until the last poll
    assert price.get_drawstyle() == listed.get_drawstyle() == "steps-post"
    assert listed.get_linestyle() == "--" and price.get_linestyle() == "-"
    assert list(price.get_ydata())[:5] == [44.99, 39.99, 44.99, 34.99, 29.99]
    assert list(price.get_ydata())[-1] == 36.99
    assert price.get_xdata()[-1] == until
    assert list(listed.get_ydata())[-1] == 49.99
    gone = lines["gone (removed)"]
    assert list(gone.get_ydata()) == [29.99]  # the ✕ sits at the last price

    # the lowest and highest points, each with its value and the date it was first reached
    # and the price now, at the right end of the line
    assert annotations(fig) == ["lowest $29.99\n18 Nov", "highest $44.99\n1 Nov", "now $36.99"]
    assert ax.get_ylim()[0] < 29.99 and ax.get_ylim()[1] > 54.99  # room for both lines


def test_the_x_axis_names_dates_a_reader_understands():
    fig = price_figure(MONTH, CLOG, "USD", until=T0 + timedelta(days=28))
    (ax,) = fig.axes
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels == ["2 Nov", "9 Nov", "16 Nov", "23 Nov"]  # Mondays, with their month
    assert ax.get_xlabel() == "UTC"


def test_a_short_history_marks_its_times_and_a_flat_one_says_so():
    hours = [row(0, "19.99"), row(3, "17.50"), row(7, "21.00"), row(9, "14.96")]
    assert annotations(price_figure(hours, "t", "EUR")) == [
        "lowest €14.96\n1 Nov 09:00 UTC",
        "highest €21.00\n1 Nov 07:00 UTC",
    ]
    flat = [row(0, "20", listed="25"), row(30, "20", listed="25")]
    assert annotations(price_figure(flat, "t", "USD")) == [
        "$20.00 throughout\nsince 1 Nov 00:00 UTC"
    ]


def test_without_a_list_price_or_a_currency_there_is_one_plain_line():
    fig = price_figure([row(0, "19.99"), row(5, "17.50")], "t")
    assert set(lines_by_label(fig)) == {"price"}
    assert fig.axes[0].get_ylabel() == "Price"


def test_no_price_at_all_says_so_instead_of_an_empty_axis():
    fig = price_figure([row(0, None), row(2, None)], "Teeth Whitening")
    (ax,) = fig.axes
    assert "no known price" in [t.get_text() for t in ax.texts]
    assert annotations(fig) == []


def test_several_watches_get_a_line_each():
    rows = [row(0, "20", watch="a"), row(1, "21", watch="b"), row(20, "18", watch="a")]
    assert set(lines_by_label(price_figure(rows, "t", "USD"))) == {"price (a)", "price (b)"}


def test_a_long_title_is_shortened_at_a_word():
    title = (
        "Goli Nutrition Ashwagandha Gummies — Vegan, Non-GMO, Gluten-Free & Gelatin-Free, "
        "60 Count, Mixed Berry Flavour, Pack of 2 Bottles"
    )
    shown = price_figure([row(0, "1")], title).axes[0].get_title(loc="left")
    assert shown == "Goli Nutrition Ashwagandha Gummies — Vegan, Non-GMO, Gluten-Free…"
    assert len(shown) <= 70
    assert shorten("a  b\nc", 70) == "a b c"
    assert shorten("x" * 100, 10) == "x" * 9 + "…"  # no space to cut at


def test_extremes_skip_gone_rows_and_keep_the_first_time():
    low, high = extremes([row(0, "20"), row(1, "10", present=False), row(2, "15"), row(3, "20")])
    assert (low.value, low.at) == (Decimal("15"), T0 + timedelta(hours=2))
    assert (high.value, high.at) == (Decimal("20"), T0)
    assert extremes([row(0, None)]) == (None, None)


def test_the_png_carries_its_text_as_metadata():
    record = ProductHistory(
        product_id="1730213444857467838",
        points=tuple(MONTH),
        product=Product(id="1730213444857467838", title=CLOG, currency="USD"),
        polled_until=T0 + timedelta(days=28),
    )
    data = render_history_chart(record)
    text = png_text(data)
    assert text["Title"] == CLOG
    assert text["Currency"] == "USD"
    assert text["Lowest"] == "29.99 2026-11-18T06:00:00Z"
    assert text["Highest"] == "44.99 2026-11-01T00:00:00Z"
    assert text["Description"] == (
        "Price history: lowest $29.99 on 2026-11-18, highest $44.99 on 2026-11-01 (UTC)"
    )
    # a title no Latin-1 chunk can hold goes into an international one, whole
    data = render_price_chart([row(0, "1")], "Kem chống nắng ✓ SPF 50+")
    assert png_text(data)["Title"] == "Kem chống nắng ✓ SPF 50+"
    assert "Currency" not in png_text(data)
    assert chart_metadata([], "t", None)["Description"] == "Price history: no known price"


def test_summary_reads_decimal_prices_and_the_span():
    rows = [row(0, "19.99", listed="24.99"), row(5, None), row(9, "14.96", listed="24.99")]
    assert history_summary(rows, "Gummies", "USD").splitlines() == [
        "Gummies",
        "now $14.96 (list $24.99) · lowest $14.96 · highest $19.99",
        "3 changes, 2026-11-01 00:00 – 2026-11-01 09:00 UTC",
    ]
    gone = [row(0, "19.99"), row(9, "14.96", present=False)]
    assert history_summary(gone, "Gummies", "USD").splitlines()[1] == (
        "now gone · lowest $19.99 · highest $19.99"
    )


def test_a_ranking_row_without_prices_gets_a_rank_chart():
    """KeyAPI categories have no price: the chart follows the rank, #1 on top."""
    rows = [
        HistoryPoint("beauty-top", "601602", T0, rank=17),
        HistoryPoint("beauty-top", "601602", T0 + timedelta(hours=5), rank=3),
        HistoryPoint("beauty-top", "601602", T0 + timedelta(hours=9), rank=6),
    ]
    fig = price_figure(rows, "Lip Gloss")
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Rank (#1 is the top)"
    assert ax.yaxis_inverted()
    assert set(lines_by_label(fig)) == {"rank"}
    assert annotations(fig) == [
        "best #3\n1 Nov 05:00 UTC",
        "worst #17\n1 Nov 00:00 UTC",
        "now #6",
    ]
    text = png_text(render_price_chart(rows, "Lip Gloss"))
    assert text["Best"] == "#3 2026-11-01T05:00:00Z" and text["Worst"].startswith("#17 ")
    assert "Lowest" not in text
    assert history_summary(rows, "Lip Gloss").splitlines()[1] == "now #6 · best #3 · worst #17"
