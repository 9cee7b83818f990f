"""Tests for watcher.render: alert ids, webhook bodies (spec section 6), text, HTML, splitting."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.identity import alert_id
from watcher.models import Alert, AlertDraft, Product
from watcher.render import (
    by_product,
    custom_message,
    digest_body,
    format_money,
    previous_dict,
    product_dict,
    render_digest_html,
    render_digest_text,
    render_html,
    render_product_html,
    render_product_text,
    render_text,
    sort_best_first,
    split_message,
    transition_values,
    webhook_body,
)

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
NEW = Product(
    id="1729",
    title="Goli Apple Cider Vinegar Gummies",
    url="https://shop.tiktok.com/view/product/1729",
    image_url="https://img.example/1729.jpg",
    currency="USD",
    price=Decimal("14.96"),
    original_price=Decimal("24.99"),
    discount_percent=40,
    sold=1283012,
    rating=Decimal("4.8"),
    reviews=1200,
    rank=3,
    shop_id="s1",
    shop_name="Goli Nutrition",
)
OLD = replace(NEW, price=Decimal("19.99"), discount_percent=20, rank=9, sold=1000000)


def alert(kind: str = "price_drop", **over: Any) -> Alert:
    values: dict[str, Any] = {
        "alert_id": "a" * 32,
        "kind": kind,
        "watch_id": "goli-store",
        "detected_at": AT,
        "rule_id": "price-drop-10",
        "product": NEW,
        "previous": OLD,
    }
    return Alert(**(values | over))


def notice(message: str = "Watch goli-store returned no products.") -> Alert:
    return Alert("n" * 32, "watch_empty", "goli-store", AT, message=message)


# --- alert_id ---------------------------------------------------------------------------------

BASE_ID = ("price-drop-10", "goli-store", "1729", "price_drop", "19.99", "14.96", 7)


def test_alert_id_is_deterministic_hex() -> None:
    first = alert_id(*BASE_ID)
    assert first == alert_id(*BASE_ID)
    assert re.fullmatch(r"[0-9a-f]{32}", first)


@pytest.mark.parametrize(
    ("position", "other"),
    [
        pytest.param(0, "price-drop-20", id="rule"),
        pytest.param(1, "other-store", id="watch"),
        pytest.param(2, "1730", id="product"),
        pytest.param(3, "price_below", id="kind"),
        pytest.param(4, "20.00", id="old-value"),
        pytest.param(5, "14.95", id="new-value"),
        pytest.param(6, 8, id="seq"),
        pytest.param(4, None, id="old-none"),
        pytest.param(0, None, id="notice-no-rule"),
    ],
)
def test_alert_id_changes_with_every_input(position: int, other: Any) -> None:
    changed = list(BASE_ID)
    changed[position] = other
    assert alert_id(*changed) != alert_id(*BASE_ID)


def test_alert_id_fields_do_not_run_together() -> None:
    assert alert_id("ab", "c", None, "k", None, None, 1) != alert_id(
        "a", "bc", None, "k", None, None, 1
    )


def test_alert_id_canonicalises_decimals() -> None:
    with_decimals = alert_id("r", "w", "p", "price_drop", Decimal("20.00"), Decimal("15.0"), 1)
    assert with_decimals == alert_id("r", "w", "p", "price_drop", "20", "15", 1)


def draft(kind: str, previous: Product | None = OLD, product: Product = NEW) -> AlertDraft:
    return AlertDraft("r", kind, "w", product, previous)


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        pytest.param(draft("price_drop"), ("19.99", "14.96"), id="price_drop"),
        pytest.param(draft("price_below", None), (None, "14.96"), id="price_below-new-item"),
        pytest.param(draft("lowest_price"), ("19.99", "14.96"), id="lowest_price"),
        pytest.param(draft("discount_at_least"), (20, 40), id="discount"),
        pytest.param(draft("rank_jump"), (9, 3), id="rank_jump"),
        pytest.param(draft("rank_jump", None), (None, 3), id="rank_jump-from-absent"),
        pytest.param(draft("new_item", None), (None, "present"), id="new_item"),
        pytest.param(draft("out_of_stock"), ("present", "absent"), id="out_of_stock"),
        pytest.param(draft("back_in_stock"), ("absent", "present"), id="back_in_stock"),
        pytest.param(draft("sold_spike"), (1000000, 1283012), id="sold_spike"),
        pytest.param(draft("sold_spike", None), (None, 1283012), id="sold_spike-no-previous"),
    ],
)
def test_transition_values(d: AlertDraft, expected: tuple[Any, Any]) -> None:
    assert transition_values(d) == expected


# --- webhook bodies ---------------------------------------------------------------------------

SPEC_BODY_KEYS = [
    "alert_id", "rule", "kind", "watch", "detected_at", "product", "previous", "message",
]  # fmt: skip
SPEC_PRODUCT_KEYS = [
    "id", "title", "url", "image_url", "currency", "price", "original_price",
    "discount_percent", "rank", "sold", "shop_id", "shop_name",
]  # fmt: skip


def test_webhook_body_is_exactly_spec_section_6() -> None:
    body = webhook_body(alert())
    assert list(body) == SPEC_BODY_KEYS
    assert list(body["product"]) == SPEC_PRODUCT_KEYS
    assert body | {"message": None} == {
        "alert_id": "a" * 32,
        "rule": "price-drop-10",
        "kind": "price_drop",
        "watch": "goli-store",
        "detected_at": "2026-11-24T10:00:00Z",
        "product": {
            "id": "1729",
            "title": "Goli Apple Cider Vinegar Gummies",
            "url": "https://shop.tiktok.com/view/product/1729",
            "image_url": "https://img.example/1729.jpg",
            "currency": "USD",
            "price": "14.96",
            "original_price": "24.99",
            "discount_percent": 40,
            "rank": 3,
            "sold": 1283012,
            "shop_id": "s1",
            "shop_name": "Goli Nutrition",
        },
        "previous": {"price": "19.99", "discount_percent": 20, "rank": 9},
        "message": None,
    }
    assert body["message"] == render_text(alert())
    json.dumps(body)  # serialisable as is


def test_webhook_message_is_the_stored_text_or_the_rendered_one() -> None:
    stored = alert(message="custom from template")
    assert webhook_body(stored)["message"] == "custom from template"
    assert webhook_body(alert(), template="{title}!")["message"] == f"{NEW.title}!"


def test_webhook_body_keeps_nones() -> None:
    bare = Product("x")
    body = webhook_body(alert("new_item", product=bare, previous=None))
    assert body["product"] == dict.fromkeys(SPEC_PRODUCT_KEYS) | {"id": "x"}
    assert body["previous"] is None


def test_notice_body() -> None:
    body = webhook_body(notice())
    assert list(body) == SPEC_BODY_KEYS
    assert body["rule"] is None and body["product"] is None and body["previous"] is None
    assert (body["kind"], body["watch"]) == ("watch_empty", "goli-store")
    assert body["message"] == "Watch goli-store returned no products."


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        pytest.param(AT, "2026-11-24T10:00:00Z", id="utc"),
        pytest.param(
            datetime(2026, 11, 24, 11, 0, 0, 999, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-24T10:00:00Z",
            id="other-offset-and-microseconds",
        ),
        pytest.param(datetime(2026, 11, 24, 10, 0), "2026-11-24T10:00:00Z", id="naive-is-utc"),
    ],
)
def test_detected_at_format(at: datetime, expected: str) -> None:
    assert webhook_body(alert(detected_at=at))["detected_at"] == expected


def test_digest_body() -> None:
    alerts = [alert(), notice()]
    body = digest_body(alerts)
    assert body == {"alerts": [webhook_body(a) for a in alerts], "count": 2, "kind": "digest"}


def test_product_and_previous_dicts_of_none() -> None:
    assert product_dict(None) is None
    assert previous_dict(None) is None
    assert previous_dict(Product("x")) == {"price": None, "discount_percent": None, "rank": None}


# --- plain text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        pytest.param("19.99", "USD", "$19.99", id="usd"),
        pytest.param("5", "EUR", "€5.00", id="eur-whole"),
        pytest.param("1250.5", "GBP", "£1,250.50", id="gbp-thousands"),
        pytest.param("17.991", "USD", "$17.991", id="no-rounding-away-of-precision"),
        pytest.param("99.90", "MYR", "MYR 99.90", id="code-before-with-a-space"),
        # per currency (babel, English): no decimals where the currency has none
        pytest.param("1250", "JPY", "¥1,250", id="jpy-no-decimals"),
        pytest.param("1250.00", "JPY", "¥1,250", id="jpy-zero-cents-dropped"),
        pytest.param("1250.5", "JPY", "¥1,250.5", id="jpy-fraction-kept"),
        pytest.param("150000", "IDR", "IDR 150,000", id="idr-no-decimals"),
        pytest.param("250000.00", "VND", "₫250,000", id="vnd-no-decimals"),
        pytest.param("19.9", "eur", "€19.90", id="lower-case-code"),
        pytest.param("-2.5", "MYR", "-MYR 2.50", id="negative-code"),
        pytest.param("3", "US dollar", "3.00 US DOLLAR", id="not-a-code-after"),
        pytest.param("3", None, "3.00", id="no-currency"),
        pytest.param("-2.5", "USD", "-$2.50", id="negative"),
        pytest.param(None, "USD", "?", id="unknown"),
        # never raises: what cannot be formatted as money falls back to str(amount)
        pytest.param("1e30", "USD", "$1E+30", id="huge"),
        pytest.param("-1e30", "USD", "-$1E+30", id="huge-negative"),
        pytest.param("1E+999999", "MYR", "MYR 1E+999999", id="giant-exponent"),
        pytest.param("1e30", "JPY", "¥1E+30", id="huge-jpy"),
        pytest.param("1E-999999", None, "1E-999999", id="tiny-exponent"),
        pytest.param("123456789012345678901234567890", None, "123456789012345678901234567890",
                     id="30-digits"),
        pytest.param("NaN", "USD", "$NaN", id="nan"),
        pytest.param("sNaN", "EUR", "€sNaN", id="signaling-nan"),
        pytest.param("-Infinity", "USD", "-$Infinity", id="minus-infinity"),
        pytest.param("999999999.9999", "USD", "$999,999,999.9999", id="normaliser-bound"),
        pytest.param("1E+2", "USD", "$100.00", id="exponent-in-range"),
        pytest.param("12345678901234567890123.123456789012", "USD",
                     "$12,345,678,901,234,567,890,123.123456789012", id="36-digits-in-full"),
        pytest.param("-0", "EUR", "€0.00", id="negative-zero"),
        pytest.param("-0.00", "USD", "$0.00", id="negative-zero-cents"),
    ],
)  # fmt: skip
def test_format_money(amount: str | None, currency: str | None, expected: str) -> None:
    assert format_money(None if amount is None else Decimal(amount), currency) == expected


@pytest.mark.parametrize(
    ("a", "lines"),
    [
        pytest.param(
            alert(),
            [
                "Price drop: Goli Apple Cider Vinegar Gummies",
                "$19.99 → $14.96 (-25%) · 40% off",
                "#9 → #3",
                "https://shop.tiktok.com/view/product/1729",
            ],
            id="price_drop",
        ),
        pytest.param(
            alert("rank_jump", previous=replace(OLD, price=NEW.price)),
            ["Rank jump: Goli Apple Cider Vinegar Gummies", "$14.96 · 40% off", "#9 → #3"],
            id="rank_jump",
        ),
        pytest.param(
            alert("rank_jump", previous=None),
            ["Rank jump: Goli Apple Cider Vinegar Gummies", "$14.96 · 40% off", "unranked → #3"],
            id="rank_jump-from-absent",
        ),
        pytest.param(
            alert("discount_at_least"),
            ["Discount: Goli Apple Cider Vinegar Gummies", "20% → 40% off · $14.96"],
            id="discount",
        ),
        pytest.param(
            alert("new_item", previous=None, product=replace(NEW, title=None, currency="EUR")),
            ["New item: Product 1729", "€14.96 · 40% off"],
            id="new_item-untitled",
        ),
        pytest.param(
            alert("out_of_stock", product=replace(OLD, rank=None)),
            [
                "Out of stock: Goli Apple Cider Vinegar Gummies",
                "No longer listed (last price $19.99)",
            ],
            id="out_of_stock",
        ),
        pytest.param(
            alert("sold_spike"),
            [
                "Sales spike: Goli Apple Cider Vinegar Gummies",
                "1,000,000 → 1,283,012 sold (+283,012 since the last poll)",
                "$19.99 → $14.96 (-25%) · 40% off",
                "#9 → #3",
            ],
            id="sold_spike",
        ),
        pytest.param(
            alert(
                "sold_spike", previous=replace(OLD, sold=None), product=replace(NEW, price=None)
            ),
            ["Sales spike: Goli Apple Cider Vinegar Gummies", "? → 1,283,012 sold", "#9 → #3"],
            id="sold_spike-unknown-before-and-no-price",
        ),
        pytest.param(
            alert(
                "price_drop",
                previous=Product("1729", price=Decimal("20")),
                product=Product("1729", price=Decimal("19.95"), currency="USD"),
            ),
            ["Price drop: Product 1729", "$20.00 → $19.95 (-0.3%)"],
            id="small-drop-keeps-a-decimal",
        ),
        pytest.param(
            alert("price_drop", product=replace(NEW, price=None)),
            ["Price drop: Goli Apple Cider Vinegar Gummies", "price unknown · 40% off"],
            id="price-unknown",
        ),
    ],
)
def test_render_text(a: Alert, lines: list[str]) -> None:
    text = render_text(a)
    for line in lines:
        assert line in text.splitlines(), text
    if a.product and a.product.url:
        assert text.splitlines()[-1] == a.product.url


def test_notice_text_is_its_message() -> None:
    assert render_text(notice("Watch x is failing: HTTP 500")) == "Watch x is failing: HTTP 500"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            "{title} now {price} (was {old_price}), {discount}% off",
            "Goli Apple Cider Vinegar Gummies now $14.96 (was $19.99), 40% off",
            id="fields",
        ),
        pytest.param(
            "#{old_rank}→#{rank} {rule}@{watch} {shop} {url}",
            "#9→#3 price-drop-10@goli-store Goli Nutrition https://shop.tiktok.com/view/product/1729",
            id="every-other-field",
        ),
        pytest.param(
            "{title} {nope}", "Goli Apple Cider Vinegar Gummies {nope}", id="missing-key-kept"
        ),
        pytest.param("{price:>8}", "  $14.96", id="format-spec"),
    ],
)
def test_template(template: str, expected: str) -> None:
    assert render_text(alert(), template) == expected


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("{", id="unbalanced"),
        pytest.param("{0}", id="positional"),
        pytest.param("{}", id="auto-positional"),
        pytest.param("{title.__class__}", id="attribute-access"),
        pytest.param("{title[0]}", id="index-access"),
        pytest.param("{rank:d}", id="bad-format-spec"),
        pytest.param("{price:{x}}", id="nested-spec"),
        pytest.param("{title!z}", id="bad-conversion"),
    ],
)
def test_bad_template_falls_back_to_default(template: str) -> None:
    assert render_text(alert(), template) == render_text(alert())
    assert render_html(alert(), template) == render_html(alert())


def test_template_none_values_render_empty() -> None:
    a = alert("new_item", previous=None, product=Product("x", title="T"))
    assert render_text(a, "[{price}|{old_price}|{rank}|{shop}]") == "[|||]"


# --- HTML -------------------------------------------------------------------------------------

EVIL = replace(
    NEW,
    title="<script>alert(1)</script> & co",
    url='https://x.test/p?a=1&b="2"',
    currency="<b>",
)


def test_html_escapes_every_dynamic_value() -> None:
    html_text = render_html(alert(product=EVIL, previous=replace(EVIL, price=Decimal("20"))))
    assert "<script>" not in html_text
    assert "<b>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</b>" in html_text
    assert '<a href="https://x.test/p?a=1&amp;b=&quot;2&quot;">' in html_text
    assert "&lt;B&gt;" in html_text  # the unknown currency code, escaped
    tags = re.findall(r"</?([a-z]+)", html_text)
    assert set(tags) <= {"b", "a"}


def test_html_template_output_is_escaped() -> None:
    out = render_html(alert(product=EVIL), "<i>{title}</i>")
    assert out == "&lt;i&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; co&lt;/i&gt;"


def test_html_links_only_http_urls() -> None:
    out = render_html(alert(product=replace(NEW, url="javascript:alert(1)")))
    assert "<a " not in out and "javascript" not in out


def test_html_notice_is_escaped_message() -> None:
    assert render_html(notice("a <b> & c")) == "a &lt;b&gt; &amp; c"


# --- digests ----------------------------------------------------------------------------------


def priced(pid: str, old: str | None, new: str, discount: int | None = None) -> Alert:
    before = None if old is None else Product(pid, price=Decimal(old), currency="USD")
    after = Product(
        pid, title=f"T{pid}", price=Decimal(new), currency="USD", discount_percent=discount
    )
    return alert(product=after, previous=before, alert_id=pid * 32)


def test_best_first_order() -> None:
    small = priced("1", "10", "9")  # -10%
    big = priced("2", "10", "5")  # -50%
    disc = priced("3", None, "5", discount=60)
    disc_small = priced("4", None, "5", discount=10)
    tie = priced("5", "20", "18")  # -10%, after "1" (stable)
    got = sort_best_first([notice(), small, disc_small, big, disc, tie])
    assert [a.alert_id[0] for a in got] == ["2", "1", "5", "3", "4", "n"]


def test_digest_text_lists_every_alert_best_first() -> None:
    text = render_digest_text([priced("1", "10", "9"), priced("2", "10", "5"), notice()])
    assert text.startswith("3 alerts\n\n")
    assert text.index("T2") < text.index("T1") < text.index("no products")
    assert "1. Price drop: T2\n$10.00 → $5.00 (-50%)" in text


# --- one product, several rules, one poll -----------------------------------------------------

POLL = "goli-store:7"


def reasons(*kinds: str, batch: str = POLL, product: Product = NEW) -> list[Alert]:
    """One alert per kind about ``product`` in the poll ``batch``, as the pipeline makes them."""
    return [
        alert(k, alert_id=f"{n}" * 32, rule_id=f"rule-{k}", batch=batch, product=product)
        for n, k in enumerate(kinds)
    ]


def test_one_product_lists_each_reason_with_title_and_values_once() -> None:
    text = render_product_text(reasons("price_drop", "lowest_price"))
    assert text.splitlines() == [
        "Price drop · Lowest price: Goli Apple Cider Vinegar Gummies",
        "$19.99 → $14.96 (-25%) · 40% off",
        "#9 → #3",
        "https://shop.tiktok.com/view/product/1729",
    ]


def test_each_distinct_value_line_of_the_reasons_once_in_order() -> None:
    text = render_product_text(reasons("price_drop", "discount_at_least", "rank_jump"))
    lines = text.splitlines()
    assert lines[0] == "Price drop · Discount · Rank jump: Goli Apple Cider Vinegar Gummies"
    assert lines[1:-1] == ["$19.99 → $14.96 (-25%) · 40% off", "#9 → #3", "20% → 40% off · $14.96"]
    assert text.count("Goli Apple Cider Vinegar Gummies") == 1


def test_one_product_html_escapes_and_has_one_title_and_one_link() -> None:
    evil = reasons("price_drop", "lowest_price", product=EVIL)
    out = render_product_html(evil)
    assert out.startswith("Price drop · Lowest price: <b>&lt;script&gt;alert(1)&lt;/script&gt;")
    assert "<script>" not in out
    assert out.count("<b>") == 1 and out.count("<a href=") == 1


def test_one_alert_renders_as_before() -> None:
    [one] = reasons("price_drop")
    assert render_product_text([one]) == render_text(one)
    assert render_product_html([one]) == render_html(one)
    assert render_product_html([notice("a <b>")]) == render_html(notice("a <b>"))


def test_a_templated_reason_keeps_its_text_on_a_line_of_its_own() -> None:
    drop, low = reasons("price_drop", "lowest_price")
    custom = replace(drop, message="Deal <now>: {$14.96}")  # the rule's template, as stored
    assert custom_message(custom) == "Deal <now>: {$14.96}"
    assert custom_message(replace(drop, message=render_text(drop))) is None  # the default
    assert render_product_text([custom, low]).splitlines() == [
        "Deal <now>: {$14.96}",
        "Lowest price: Goli Apple Cider Vinegar Gummies",
        "$19.99 → $14.96 (-25%) · 40% off",
        "#9 → #3",
        "https://shop.tiktok.com/view/product/1729",
    ]
    html_text = render_product_html([custom, low])
    assert html_text.splitlines()[0] == "Deal &lt;now&gt;: {$14.96}"
    both = replace(low, message="Lowest ever")
    assert render_product_text([custom, both]) == "Deal <now>: {$14.96}\nLowest ever"


def test_by_product_groups_one_poll_and_product_only() -> None:
    drop, low = reasons("price_drop", "lowest_price")
    other = alert(alert_id="o" * 32, batch=POLL, product=replace(NEW, id="1730"))
    later = replace(drop, alert_id="l" * 32, batch="goli-store:8")
    elsewhere = replace(low, alert_id="e" * 32, watch_id="other-store")
    unknown = replace(drop, alert_id="u" * 32, batch="")
    n1, n2 = notice(), replace(notice(), alert_id="m" * 32, batch=POLL)
    got = by_product([drop, other, n1, later, low, elsewhere, unknown, n2, unknown])
    assert got == [
        (drop, low),
        (other,),
        (n1,),
        (later,),
        (elsewhere,),
        (unknown,),
        (n2,),
        (unknown,),
    ]


def test_a_digest_lists_each_product_once_with_its_reasons_best_first() -> None:
    small_drop = priced("1", "10", "9")  # -10%
    big_drop = priced("2", "10", "5")  # -50%
    small_low = replace(small_drop, alert_id="3" * 32, kind="lowest_price")
    big_low = replace(big_drop, alert_id="4" * 32, kind="lowest_price")
    alerts = [replace(a, batch=POLL) for a in (small_drop, big_drop, small_low, big_low)]
    text = render_digest_text([*alerts, notice()])
    assert text.startswith("5 alerts on 2 products and 1 notice\n\n")
    entries = text.split("\n\n")[1:]
    assert entries[0] == "1. Price drop · Lowest price: T2\n$10.00 → $5.00 (-50%)"
    assert entries[1] == "2. Price drop · Lowest price: T1\n$10.00 → $9.00 (-10%)"
    assert entries[2] == "3. Watch goli-store returned no products."
    assert render_digest_html(alerts).startswith("<b>4 alerts on 2 products</b>")
    # alerts of the same product in different polls are different events: not merged
    text = render_digest_text([alerts[0], replace(alerts[2], batch="goli-store:8")])
    assert text.startswith("2 alerts\n\n") and text.count("T1") == 2


# --- never raises -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param("1e30", "1", id="huge-old"),
        pytest.param("1E-999999", "1E+999999", id="overflowing-change"),
        pytest.param("1e-20", "1e20", id="change-too-long-to-round"),
        pytest.param("NaN", "5", id="nan-old"),
        pytest.param("5", "sNaN", id="snan-new"),
        pytest.param("Infinity", "5", id="infinite-old"),
        pytest.param("-0", "5", id="minus-zero-old"),
    ],
)
def test_extreme_prices_render(before: str, after: str) -> None:
    old = Product("x", price=Decimal(before))
    new = Product(
        "x",
        title="T",
        price=Decimal(after),
        currency="USD",
        discount_percent=10**5000,
        sold=10**5000,
    )
    for kind in ("price_drop", "discount_at_least", "out_of_stock", "rank_jump", "sold_spike"):
        a = alert(kind, product=new, previous=old)
        assert render_text(a).split("\n")[0].endswith(": T")
        assert "<b>T</b>" in render_html(a)
        assert webhook_body(a, "{price} {old_price} {discount}")["message"].endswith(" ?")
    assert render_digest_text([alert(product=new, previous=old), alert()]).startswith("2 alerts")
    assert len(sort_best_first([alert(product=new, previous=old), alert()])) == 2


def test_huge_drop_shows_both_prices() -> None:
    old = Product("x", price=Decimal("1e30"))
    new = Product("x", title="T", price=Decimal("1"), currency="USD")
    assert (
        render_text(alert(product=new, previous=old))
        .splitlines()[1]
        .startswith("$1E+30 → $1.00 (")
    )


_DECIMALS = st.none() | st.decimals(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [Decimal(t) for t in ("1e30", "-1e30", "1E+999999", "1E-999999", "sNaN", "-NaN", "-0", "0",
                          "0.00", "1e-30", "123456789012345678901234567890.123", "999999999.9999")]
)  # fmt: skip
_INTS = st.none() | st.integers() | st.sampled_from([0, -1, 10**40, -(10**40), 10**4000])
_TEXT = st.none() | st.text(max_size=12)
_PRODUCTS = st.builds(
    Product,
    id=st.text(min_size=1, max_size=8),
    title=_TEXT,
    url=_TEXT | st.just('https://x.test/<p>?a=1&b="2"'),
    image_url=_TEXT,
    currency=st.none() | st.sampled_from(["USD", "EUR", "GBP", "MYR", "", "usd"]) | _TEXT,
    price=_DECIMALS,
    original_price=_DECIMALS,
    discount_percent=_INTS,
    sold=_INTS,
    rating=_DECIMALS,
    reviews=_INTS,
    rank=_INTS,
    shop_id=_TEXT,
    shop_name=_TEXT,
)
_KINDS = st.sampled_from(
    ["price_drop", "price_below", "lowest_price", "discount_at_least", "new_item", "rank_jump",
     "out_of_stock", "back_in_stock", "sold_spike", "watch_failing", "watch_empty",
     "provider_paused"]
) | st.text(min_size=1, max_size=10)  # fmt: skip
_ALERTS = st.builds(
    Alert,
    alert_id=st.just("a" * 32),
    kind=_KINDS,
    watch_id=_TEXT,
    detected_at=st.datetimes(timezones=st.none() | st.just(UTC)),
    rule_id=st.none() | st.just("rule"),
    product=st.none() | _PRODUCTS,
    previous=st.none() | _PRODUCTS,
    message=st.text(max_size=12),
    batch=st.sampled_from(["", "w:1"]),  # one poll: alerts of one product are merged
)
_TEMPLATES = st.none() | st.text(max_size=12) | st.sampled_from(
    ["{title} {price} {old_price} {discount}% {rank} {old_rank} {url} {rule} {watch} {shop}",
     "{price:>12}", "{discount:d}", "{rank!r}", "{0}", "{title.upper}", "{unknown}", "{"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alerts=st.lists(_ALERTS, min_size=1, max_size=4), template=_TEMPLATES)
def test_rendering_never_raises(alerts: list[Alert], template: str | None) -> None:
    for a in alerts:
        assert isinstance(render_text(a, template), str)
        assert isinstance(render_html(a, template), str)
        assert set(webhook_body(a, template)) == set(SPEC_BODY_KEYS)
        assert isinstance(render_text(a), str) and isinstance(render_html(a), str)
        if a.product is not None:
            transition_values(AlertDraft("r", a.kind, "w", a.product, a.previous))
    assert render_digest_text(alerts).startswith(f"{len(alerts)} alerts")
    assert isinstance(render_product_text(alerts), str)
    assert isinstance(render_product_html(alerts), str)
    assert render_digest_html(alerts).startswith(f"<b>{len(alerts)} alerts")
    assert len(sort_best_first(alerts)) == len(alerts)


# --- split_message ----------------------------------------------------------------------------


def check_chunks(text: str, chunks: list[str], limit: int) -> None:
    assert all(0 < len(c) <= limit for c in chunks), [len(c) for c in chunks]
    assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(
        " ", ""
    )


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("", 10, [], id="empty"),
        pytest.param("short", 10, ["short"], id="fits"),
        pytest.param("x" * 10, 10, ["x" * 10], id="exactly-the-limit"),
        pytest.param("aaaa\nbbbb\ncccc", 9, ["aaaa\nbbbb", "cccc"], id="line-boundaries"),
        pytest.param("aa\n\nbb\ncc", 7, ["aa", "bb\ncc"], id="prefers-blank-line-blocks"),
        pytest.param("x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5], id="hard-split-long-line"),
        pytest.param("aaa bbb ccc ddd", 8, ["aaa bbb", "ccc ddd"], id="long-line-at-spaces"),
        pytest.param("xxxxxx<b>y</b>", 8, ["xxxxxx", "<b>y</b>"], id="not-inside-a-tag"),
        pytest.param("xxxxx&amp;yy", 8, ["xxxxx", "&amp;yy"], id="not-inside-an-entity"),
    ],
)
def test_split_message(text: str, limit: int, expected: list[str]) -> None:
    assert split_message(text, limit) == expected


def test_split_message_telegram_limit_on_a_big_digest() -> None:
    alerts = [priced(str(n), "10", "9") for n in range(400)]
    text = render_digest_text(alerts)
    assert len(text) > 4096
    chunks = split_message(text)
    check_chunks(text, chunks, 4096)
    assert all(not c.startswith("\n") and not c.endswith("\n") for c in chunks)


def test_split_message_html_keeps_tags_whole() -> None:
    line = " ".join(f'<a href="https://x.test/{n}">item&amp;{n}</a>' for n in range(200))
    chunks = split_message(line, 100)
    check_chunks(line, chunks, 100)
    for c in chunks:
        assert c.count("<") == c.count(">")
        assert not re.search(r"&[a-z]*$", c)


def test_split_message_rejects_bad_limit() -> None:
    with pytest.raises(ValueError):
        split_message("x", 0)
