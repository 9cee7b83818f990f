"""Property tests (hypothesis): the config loader on mutations of rules.example.yaml, and
diff + rules on arbitrary product lists.

Each property is one a user relies on: a config is either valid or rejected with
file:line:column, never a traceback; a baseline never alerts; the same transition gives the
same alert_id; a partial poll never says out_of_stock; duplicated or reordered products
never alert.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher import identity, render
from watcher.config import Config, RuleConfig, WatchConfig, load_config
from watcher.diff import diff
from watcher.errors import ConfigError
from watcher.models import PollResult, PricePoint, Product
from watcher.rules import RuleContext, evaluate
from watcher.sources.normalise import assign_ranks

EXAMPLE = Path(__file__).resolve().parents[1] / "rules.example.yaml"
ENV = {
    "SOCIALFETCH_API_KEY": "sfk_dummy",
    "KEYAPI_API_KEY": "ka_dummy",
    "TELEGRAM_BOT_TOKEN": "123:dummy",
    "WEBHOOK_SECRET": "whsec_dummy",
}
POSITION = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): \S")
LINES = EXAMPLE.read_text().splitlines()

# what a careless edit puts where a value was
_junk_scalar = st.one_of(
    st.sampled_from(
        [
            "", "~", "null", "-1", "0", "1e999", "99999999999999999999", "0x10", "1.5h", "15x",
            "[]", "{}", "[1, [2]]", "{a: 1}", "yes", "no", "!!binary aGk=", "&a x", "*a",
            '"\\x00"', '"a\\r\\nb"', '"\\u202e"', "${NOPE}", "${SOCIALFETCH_API_KEY}", "'",
            '"', "::", "- x", "? x", "|", ">", "%TAG", "@x", "`x`", "25:99-07:00", "Mars/Base",
            "*/0 * * * *", "99d", "100000000d", "[-100123456789012]", "-1001234567890",
        ]
    ),
    st.text(max_size=12),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)  # fmt: skip


@st.composite
def mutated_example(draw) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "delete", "duplicate", "indent", "insert", "key"]))
        line = lines[i]
        code, _, _comment = line.partition(" #")
        if op == "value" and ":" in code:
            key, _, _ = code.partition(":")
            lines[i] = f"{key}: {draw(_junk_scalar)}"
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = " " * draw(st.integers(0, 8)) + line.lstrip()
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=30)))
        elif op == "key" and ":" in code:
            indent = len(code) - len(code.lstrip())
            lines[i] = (
                " " * indent
                + draw(st.text(min_size=1, max_size=10))
                + ":"
                + code.partition(":")[2]
            )
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=mutated_example())
def test_a_mutated_example_is_valid_or_rejected_with_positions(tmp_path, text: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path, env=ENV)
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            line = str(issue)
            m = POSITION.match(line)
            assert m and m["file"] == str(path), line
            assert 1 <= int(m["line"]) <= max(1, text.count("\n") + 1), line
            for secret in ENV.values():
                assert secret not in line, line
        return
    assert isinstance(config, Config)
    assert config.watches and config.rules


# ---------------------------------------------------------------- diff + rules


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WATCH = WatchConfig(id="w", type="store", url="https://www.tiktok.com/shop/store/x/1")
RULES = [
    RuleConfig(id="drop", when="price_drop", notify=("c",), params={"min_percent": Decimal(1)}),
    RuleConfig(id="below", when="price_below", notify=("c",), params={"target": Decimal(50)}),
    RuleConfig(id="disc", when="discount_at_least", notify=("c",), params={"percent": 20}),
    RuleConfig(id="new", when="new_item", notify=("c",)),
    RuleConfig(id="rank", when="rank_jump", notify=("c",), params={"min_positions": 1}),
    RuleConfig(id="oos", when="out_of_stock", notify=("c",)),
    RuleConfig(id="bis", when="back_in_stock", notify=("c",)),
    RuleConfig(id="low", when="lowest_price", notify=("c",)),
]

_money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(200), places=2)
_product = st.builds(
    Product,
    id=st.sampled_from([f"p{i}" for i in range(12)]),
    title=st.sampled_from(["A", "B", None]),
    price=st.none() | _money,
    original_price=st.none() | _money,
    discount_percent=st.none() | st.integers(0, 100),
    sold=st.none() | st.integers(0, 10**6),
)
_products = st.lists(_product, max_size=12)


def poll(products, *, complete: bool = True, exhausted: bool = True) -> PollResult:
    return PollResult(
        products=assign_ranks([tuple(products)]), complete=complete, exhausted=exhausted
    )


def alerts(previous, result: PollResult, history=None, seq: int = 1) -> list[str]:
    d = diff(previous, result, missing_after=1)
    ctx = RuleContext(now=NOW, watch=WATCH, history=history or {}, last_alerted={})
    drafts = evaluate(RULES, WATCH, d.changes, ctx)
    out = []
    for draft in drafts:
        old, new = render.transition_values(draft)
        out.append(
            identity.alert_id(
                draft.rule_id, draft.watch_id, draft.product.id, draft.kind, old, new, seq
            )
        )
    return out


def stored(products) -> dict:
    return diff(None, poll(products)).tracked


PROPS = settings(max_examples=300, deadline=None)


@PROPS
@given(products=_products)
def test_a_baseline_never_alerts(products) -> None:
    d = diff(None, poll(products))
    assert d.changes == ()
    assert alerts(None, poll(products)) == []


@PROPS
@given(before=_products, after=_products, seq=st.integers(0, 10**6))
def test_the_same_transition_gives_the_same_alert_ids(before, after, seq) -> None:
    previous = stored(before)
    first = alerts(previous, poll(after), seq=seq)
    again = alerts(previous, poll(after), seq=seq)
    assert first == again
    assert len(set(first)) == len(first)  # one transition, one id


@PROPS
@given(before=_products, after=_products)
def test_a_partial_poll_never_says_out_of_stock(before, after) -> None:
    previous = stored(before)
    for complete, exhausted in ((False, True), (True, False), (False, False)):
        d = diff(previous, poll(after, complete=complete, exhausted=exhausted), missing_after=1)
        ctx = RuleContext(now=NOW, watch=WATCH, history={}, last_alerted={})
        kinds = {draft.kind for draft in evaluate(RULES, WATCH, d.changes, ctx)}
        assert "out_of_stock" not in kinds
        assert all(d.tracked[pid].present for pid, t in previous.items() if t.present)


@PROPS
@given(products=_products, data=st.data())
def test_repeated_products_never_alert(products, data) -> None:
    """The same products again, with repeats of any of them anywhere after their first
    occurrence (a list that shifted between page requests): nothing happened."""
    previous = stored(products)
    unique = list({p.id: p for p in reversed(products)}.values())[::-1]  # first occurrences
    shown = list(products)
    for _ in range(data.draw(st.integers(0, 5))):
        if not unique:
            break
        dup = data.draw(st.sampled_from(unique))
        first = next(i for i, p in enumerate(shown) if p.id == dup.id)
        at = data.draw(st.integers(first + 1, len(shown)))
        changed = replace(dup, price=data.draw(st.none() | _money), rank=None)
        shown.insert(at, changed)  # a stale or different copy: the first one wins
    assert alerts(previous, poll(shown)) == []
    assert alerts(previous, poll(products)) == []


@PROPS
@given(products=_products, order=st.randoms())
def test_reordered_products_alert_only_about_rank(products, order) -> None:
    previous = stored(products)
    unique = list({p.id: p for p in reversed(products)}.values())[::-1]
    shuffled = list(unique)
    order.shuffle(shuffled)
    d = diff(previous, poll(shuffled), missing_after=1)
    ctx = RuleContext(now=NOW, watch=WATCH, history={}, last_alerted={})
    kinds = {draft.kind for draft in evaluate(RULES, WATCH, d.changes, ctx)}
    assert kinds <= {"rank_jump"}


@PROPS
@given(products=_products, data=st.data())
def test_the_same_amount_written_differently_is_no_change(products, data) -> None:
    """19.9 and 19.90 (a JSON number, a string, trailing zeros) are one price."""
    previous = stored(products)
    respelled = [
        replace(p, price=None if p.price is None else p.price.quantize(Decimal("0.0001")))
        for p in products
    ]
    history = {
        p.id: [PricePoint(at=NOW - timedelta(days=1), price=p.price)]
        for p in products
        if p.price is not None
    }
    assert alerts(previous, poll(respelled), history=history) == []


# ---------------------------------------------------------------- money in upstream JSON


@PROPS
@given(
    amount=st.decimals(min_value=0, max_value=Decimal("999999.9999"), places=4),
    zeros=st.integers(0, 3),
)
def test_a_json_number_in_a_money_field_is_read_exactly(amount, zeros) -> None:
    """The rule: a JSON number is read from its text, exactly (never through a float), so
    "14.96", 14.96 and 14.9600 are one price and no representation change is a change."""
    import json

    from watcher.sources.responses import decode_json as _decode
    from watcher.sources.socialfetch import parse_showcase_page

    text = f"{amount:f}" + ("0" * zeros if "." in f"{amount:f}" else "")

    def page(price_json: str) -> Product:
        head = '{"data": {"products": [{"id": "c1", "price": {"salePrice": '
        raw = head + price_json + '}}], "page": {"hasMore": false, "nextCursor": null}}}'

        (product,) = parse_showcase_page(_decode(raw.encode())).products
        return product

    as_number, as_string = page(text), page(json.dumps(text))
    assert as_number.price == as_string.price == amount
    previous = stored([as_string])
    assert alerts(previous, poll([as_number])) == []
