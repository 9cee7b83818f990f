"""Price charts: real PNG bytes of the promised size, for odd inputs too."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from watcher.chart import history_summary, render_price_chart, render_price_chart_async
from watcher.models import HistoryPoint

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def row(
    hours: float, price: str | None, *, present: bool = True, watch: str = "w"
) -> HistoryPoint:
    return HistoryPoint(
        watch_id=watch,
        product_id="1729",
        at=T0 + timedelta(hours=hours),
        price=None if price is None else Decimal(price),
        present=present,
    )


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([row(0, "19.99"), row(5, "17.50"), row(9, "14.96")], id="steps"),
        pytest.param([row(0, "19.99")], id="one-point"),
        pytest.param([row(0, None), row(2, None)], id="no-prices"),
        pytest.param([row(0, "20"), row(3, None), row(6, "18")], id="gap"),
        pytest.param([row(0, "20"), row(4, "20", present=False), row(8, "19")], id="removal"),
        pytest.param([row(0, "20", watch="a"), row(1, "21", watch="b")], id="two-watches"),
        pytest.param([], id="empty"),
    ],
)
def test_png_is_800_by_400(rows):
    data = render_price_chart(rows, "Gummies <b> & more")
    assert png_size(data) == (800, 400)


def test_naive_times_and_plain_objects_work():
    rows = [
        SimpleNamespace(at=datetime(2026, 1, 1), price="1,5", present=True, watch_id="w"),
        SimpleNamespace(at=datetime(2026, 1, 2), price="2.5", present=True, watch_id="w"),
    ]
    assert png_size(render_price_chart(rows, "x")) == (800, 400)


async def test_async_variant_runs_in_a_thread():
    data = await render_price_chart_async([row(0, "9.99"), row(1, "8.99")], "t")
    assert png_size(data) == (800, 400)


def test_summary_reads_decimal_prices_and_the_span():
    rows = [row(0, "19.99"), row(5, None), row(9, "14.96", present=False)]
    assert history_summary(rows, "Gummies", "USD").splitlines() == [
        "Gummies",
        "now $14.96 · lowest $14.96 · highest $19.99",
        "3 changes, 2026-11-01 00:00 – 2026-11-01 09:00 UTC",
    ]
