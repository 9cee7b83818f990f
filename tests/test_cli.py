"""The command line as a user runs it: real ``watcher`` subprocesses (spec section 8).

Exit status 0 when a command ran, 2 on a config error (every issue as ``file:line:column:``,
nothing touched), 1 on any other failure, always without a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from watcher.simulator import DEMO_EXPECTED_ALERTS, start_simulator
from watcher.simulator import demo as S

from .support import WATCHER, WebhookReceiver, run_watcher

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "rules.example.yaml"
SECRETS = ("SOCIALFETCH_API_KEY", "KEYAPI_API_KEY", "TELEGRAM_BOT_TOKEN", "WEBHOOK_SECRET")
DUMMY = {
    "SOCIALFETCH_API_KEY": "sfk_dummy",
    "KEYAPI_API_KEY": "kk_dummy",
    "TELEGRAM_BOT_TOKEN": "123456:dummy-token",
    "WEBHOOK_SECRET": "dummy-secret",
}
ISSUE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): \S")

BAD_CONFIG = """\
providers:
  socialfetch:
    api_key: k
    requests_per_second: fast
channels:
  hook: {type: webhook}
watches:
  - {id: w1, type: store, every: 15x}
rules:
  - {id: r1, when: price_dropp, notify: [nope]}
"""

GOOD_CONFIG = """\
providers:
  socialfetch: {api_key: k, base_url: "http://127.0.0.1:9"}
channels:
  out: {type: console}
watches:
  - {id: w1, type: store, url: "https://www.tiktok.com/shop/store/x/1", every: 1m}
rules:
  - {id: r1, when: price_drop, notify: [out]}
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the config's four secrets (and no WATCHER_DB), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (*SECRETS, "WATCHER_DB")}
    return {**env, **extra}


def watcher(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [WATCHER, *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=cwd,
        timeout=60,
    )


def assert_no_traceback(r) -> None:
    assert "Traceback" not in r.stdout + r.stderr


# ---------------------------------------------------------------- check and config errors


def test_check_accepts_the_example_with_the_four_variables():
    r = watcher("check", "-c", str(EXAMPLE), env=clean_env(**DUMMY))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")
    assert_no_traceback(r)


@pytest.mark.parametrize("missing", SECRETS)
def test_check_names_a_missing_variable_with_its_position(missing):
    env = clean_env(**{k: v for k, v in DUMMY.items() if k != missing})
    r = watcher("check", "-c", str(EXAMPLE), env=env)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if missing in ln]
    assert lines, r.stderr
    m = ISSUE.match(lines[0])
    assert m and m["file"] == str(EXAMPLE), lines[0]
    # the position is where ${VAR} is written
    line = EXAMPLE.read_text().splitlines()[int(m["line"]) - 1]
    assert "${" + missing + "}" in line
    assert r.stdout == ""
    assert_no_traceback(r)


def test_check_reports_every_error_with_file_line_and_column(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BAD_CONFIG)
    r = watcher("check", "-c", str(cfg))
    assert r.returncode == 2
    assert_no_traceback(r)
    issues = [ln for ln in r.stderr.splitlines() if ISSUE.match(ln)]
    assert all(ISSUE.match(ln)["file"] == str(cfg) for ln in issues)
    text = "\n".join(issues)
    for needle in ("requests_per_second", "'url'", "15x", "price_dropp", "'nope'"):
        assert needle in text, f"{needle} not reported:\n{r.stderr}"
    lines = {int(ISSUE.match(ln)["line"]) for ln in issues}
    assert {4, 6, 8, 10} <= lines
    # everything else on stderr is the summary line
    others = [ln for ln in r.stderr.splitlines() if ln and not ISSUE.match(ln)]
    assert len(others) == 1 and f"{len(issues)} errors" in others[0]


# A valid config; each case below edits it to make exactly one mistake. "@@" marks the
# character the error must point at (removed before the file is written).
ONE_ERROR_BASE = """\
providers:
  socialfetch:
    api_key: sfk
  keyapi:
    api_key: kk
channels:
  deals:
    type: console
  hook:
    type: webhook
    url: http://127.0.0.1:9/hook
watches:
  - id: shop
    type: store
    url: https://www.tiktok.com/shop/store/x/1
    every: 15m
rules:
  - id: drop
    when: price_drop
    notify: [deals]
"""
UNSET_VAR = "WATCHER_TEST_UNSET_KEYAPI_KEY"
TOP_WATCH = '  - id: beauty\n    type: top_products\n    category_id: "601450"\n    every: 6h\n'


def edit(*pairs: str) -> str:
    """ONE_ERROR_BASE with each (old, new) pair replaced; every ``old`` occurs exactly once."""
    text = ONE_ERROR_BASE
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def _regex_error(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    raise AssertionError(f"{pattern!r} compiles")


ONE_ERROR_CASES = [
    pytest.param(
        edit("    every: 15m\n", "    every: 15m\n    @@max_page: 5\n"),
        ["unknown key 'max_page' in watch 'shop'", "did you mean 'max_pages'?"],
        id="unknown-key",
    ),
    pytest.param(
        edit("    every: 15m\n", "    every: 15m\n    region: @@us\n"),
        ["'region' in watch 'shop'", "got 'us'", "did you mean 'US'?"],
        id="bad-region",
    ),
    pytest.param(
        edit("    notify: [deals]\n", '    notify: [deals]\n    match:\n      title: @@"(oops"\n'),
        ["'title' in 'match' of rule 'drop'", _regex_error("(oops")],
        id="bad-regex",
    ),
    pytest.param(
        edit(
            "rules:\n",
            "  - id: @@shop\n    type: store\n    url: https://www.tiktok.com/shop/store/y/2\n"
            "    every: 1h\nrules:\n",
        ),
        ["duplicate watch id 'shop' (first at line 13)"],
        id="duplicate-watch-id",
    ),
    pytest.param(
        edit("  - id: drop\n", "  - id: @@shop\n"),
        ["rule id 'shop' is also the id of the watch at line 13"],
        id="rule-id-is-a-watch-id",
    ),
    pytest.param(
        edit("    notify: [deals]\n", "    notify: [@@deal]\n"),
        ["rule 'drop' names unknown channel 'deal'", "did you mean 'deals'?"],
        id="rule-names-a-missing-channel",
    ),
    pytest.param(
        edit(
            "rules:\n",
            TOP_WATCH + "rules:\n",
            "    notify: [deals]\n",
            "    notify: [deals]\n    watches: [shop, @@beauty]\n",
        ),
        [
            "rule 'drop' (price_drop) names watch 'beauty' of type top_products",
            "price_drop applies only to watches of type store, showcase, search",
        ],
        id="price-drop-on-top-products",
    ),
    pytest.param(
        edit("    every: 15m\n", "    every: @@1.5h\n"),
        ["'every' in watch 'shop': expected a duration", "got '1.5h'"],
        id="bad-duration",
    ),
    pytest.param(
        edit("    every: 15m\n", '    every: 15m\n    @@cron: "0 * * * *"\n'),
        ["watch 'shop' sets both 'every' and 'cron'; keep exactly one"],
        id="every-and-cron",
    ),
    pytest.param(
        edit("    every: 15m\n", '    cron: @@"61 * * * *"\n'),
        ["'cron' in watch 'shop'", "got '61 * * * *'", "higher than the maximum value (59)"],
        id="bad-cron",
    ),
    pytest.param(
        edit(
            "    url: http://127.0.0.1:9/hook\n",
            '    url: http://127.0.0.1:9/hook\n    quiet_hours: @@"25:00-07:00"\n',
        ),
        ["'quiet_hours' in channel 'hook'", 'expected a time range "HH:MM-HH:MM"'],
        id="bad-quiet-hours",
    ),
    pytest.param(
        edit(
            "    url: http://127.0.0.1:9/hook\n",
            "    url: http://127.0.0.1:9/hook\n    timezone: @@Europe/Berln\n",
        ),
        ["'timezone' in channel 'hook'", "did you mean 'Europe/Berlin'?"],
        id="bad-timezone",
    ),
    pytest.param(
        edit("    every: 15m\n", "    every: 15m\n    max_pages: @@many\n"),
        ["'max_pages' in watch 'shop': expected a whole number >= 1, got 'many'"],
        id="wrong-type",
    ),
    pytest.param(
        edit("    api_key: kk\n", "    api_key: @@${" + UNSET_VAR + "}\n"),
        [f"environment variable '{UNSET_VAR}' is not set ('api_key' in provider 'keyapi')"],
        id="missing-env-var",
    ),
    pytest.param(
        edit(
            "    url: https://www.tiktok.com/shop/store/x/1\n",
            "    url: https://www.tiktok.com/shop/store/x/1 shop@@: x\n",
        ),
        ["invalid YAML: mapping values are not allowed here"],
        id="yaml-syntax",
    ),
    pytest.param(
        edit("    every: 15m\n", "    every: 15m\n    @@every: 1h\n"),
        ["duplicate key 'every' (first at line 16)"],
        id="duplicate-yaml-key",
    ),
]


def test_the_one_error_base_config_is_valid(tmp_path):
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(ONE_ERROR_BASE)
    r = watcher("check", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"ok: {cfg}: 1 watches, 1 rules, 2 channels"), r.stdout


@pytest.mark.parametrize(("marked", "fragments"), ONE_ERROR_CASES)
def test_check_reports_each_kind_of_error_at_its_position(tmp_path, marked, fragments):
    at = marked.index("@@")
    line = marked.count("\n", 0, at) + 1
    column = at - (marked.rfind("\n", 0, at) + 1) + 1
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(marked.replace("@@", ""))
    env = clean_env()
    env.pop(UNSET_VAR, None)

    r = watcher("check", "-c", str(cfg), env=env)

    assert r.returncode == 2, r.stdout + r.stderr
    assert_no_traceback(r)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[-1] == "1 error in config; nothing was run", r.stderr
    assert len(lines) == 2, r.stderr  # exactly the one mistake, then the summary
    prefix = f"{cfg}:{line}:{column}: "
    assert lines[0].startswith(prefix), f"expected {prefix!r}:\n{r.stderr}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in:\n{lines[0]}"


@pytest.mark.parametrize("command", ["once", "run"])
def test_a_bad_config_runs_nothing_and_creates_no_database(tmp_path, command):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BAD_CONFIG)
    db = tmp_path / "w.db"
    r = watcher(command, "-c", str(cfg), "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert r.returncode == 2
    assert "price_dropp" in r.stderr
    assert_no_traceback(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("command", ["check", "once"])
def test_a_missing_config_file_is_a_config_error(tmp_path, command):
    r = watcher(command, cwd=tmp_path)  # -c defaults to ./rules.yaml, which is not there
    assert r.returncode == 2
    assert "rules.yaml" in r.stderr and "not found" in r.stderr
    assert_no_traceback(r)
    assert list(tmp_path.iterdir()) == []

    r = watcher(command, "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert r.returncode == 2
    assert "nope.yaml" in r.stderr and "not found" in r.stderr


def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path):
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(GOOD_CONFIG)
    r = watcher("once", "-c", str(cfg), "--db", "sqlite:////nonexistent-dir/x.db")
    assert r.returncode == 1
    assert_no_traceback(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("watcher: error:") and "nonexistent-dir" in lines[0]


@pytest.mark.parametrize("flags", [(), ("-q",), ("-v",)], ids=["default", "quiet", "verbose"])
def test_a_failed_page_is_reported_once_at_any_log_level(tmp_path, flags):
    """`once` prints a watch's errors itself unless the log has just shown them: one line
    either way (the log's at the default level, the CLI's under -q)."""
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(GOOD_CONFIG)  # its provider is 127.0.0.1:9: nothing listens there
    r = watcher("once", *flags, "-c", str(cfg), "--db", f"sqlite:///{tmp_path / 'w.db'}")
    assert r.returncode == 0, r.stderr
    assert_no_traceback(r)
    assert "w1: failed" in r.stderr
    told = [ln for ln in r.stderr.splitlines() if "event=page_failed" in ln or "page 1:" in ln]
    assert len(told) == 1 and "Connect call failed" in told[0], r.stderr
    if flags != ("-v",):  # -v adds a line for each retry, which names the attempt's error
        assert r.stderr.count("Connect call failed") == 1, r.stderr
    assert ("INFO" in r.stderr) == (flags == ("-v",)), r.stderr


@pytest.mark.parametrize("command", ["check", "run", "once", "demo", "history", "alerts", "db"])
def test_every_command_takes_q_and_v(command):
    r = watcher(command, "--help")
    assert r.returncode == 0, r.stderr
    for flag in ("-q, --quiet", "-v, --verbose"):
        assert flag in r.stdout, r.stdout


def test_log_levels_step_from_each_commands_default():
    import logging

    from watcher import logs

    assert logs.level_for(0, 0, logging.INFO) == logging.INFO  # run
    assert logs.level_for(1, 0, logging.INFO) == logging.DEBUG
    assert logs.level_for(0, 1, logging.INFO) == logging.WARNING
    assert logs.level_for(0, 0) == logging.WARNING  # every other command
    assert logs.level_for(2, 0) == logging.DEBUG
    assert logs.level_for(5, 0) == logging.DEBUG
    assert logs.level_for(0, 9) == logging.CRITICAL
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = (*logs.LIBRARIES, *logs.URL_LOGGERS)
    libraries = {name: logging.getLogger(name).level for name in names}
    try:
        logs.setup(logging.DEBUG)
        assert logging.getLogger("apscheduler").getEffectiveLevel() == logging.WARNING
        logs.setup(logging.DEBUG, libraries=True)  # -vv
        assert logging.getLogger("apscheduler").getEffectiveLevel() == logging.DEBUG
        # httpx logs each request's URL at INFO, and a Bot API URL holds the bot token
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        logs.setup(logging.ERROR)  # -q never makes a library louder than watcher itself
        assert logging.getLogger("apscheduler").getEffectiveLevel() == logging.ERROR
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, was in libraries.items():  # e.g. httpx, quieted where it is imported
            logging.getLogger(name).setLevel(was)


def test_python_dash_m_watcher_help():
    r = subprocess.run(
        [sys.executable, "-m", "watcher", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: watcher")
    for command in ("check", "once", "run", "demo", "history", "alerts"):
        assert command in r.stdout


# ---------------------------------------------------------------- history and alerts


CONFIG = """\
providers:
  socialfetch: {api_key: "${SF_KEY}", base_url: "${SIM_URL}", requests_per_second: 100}
channels:
  good: {type: webhook, url: "${GOOD_URL}"}
  gone: {type: webhook, url: "${GONE_URL}"}
watches:
  - {id: goli-store, type: store, url: "@STORE@", every: 1m, max_pages: 10}
rules:
  - {id: price-drop-10, when: price_drop, min_percent: 10, notify: [gone]}
  - {id: all-time-low, when: lowest_price, notify: [good]}
""".replace("@STORE@", S.STORE_URL)


SF_KEY = "sfk_live_7c1d0e55"


@pytest.fixture
async def world(tmp_path, db_url):
    """The simulator, a webhook that accepts and one that answers 404, and a `once` runner."""
    sim = await start_simulator()
    good, gone = WebhookReceiver(), WebhookReceiver()
    gone.fail_next, gone.fail_status = 1000, 404
    await good.start()
    await gone.start()
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(CONFIG)
    db = db_url
    env = clean_env(SIM_URL=sim.base_url, GOOD_URL=good.url, GONE_URL=gone.url, SF_KEY=SF_KEY)

    async def cli(*args: str):
        if args[0] == "once":
            args = (*args, "-c", str(cfg))
        return await run_watcher(*args, "--db", db, env=env, timeout=30)

    # a baseline, then step 1: ACV 19.99 → 16.99 (price_drop + lowest_price),
    # ASHWAGANDHA 21.99 → 20.99 (lowest_price only)
    assert (await cli("once")).code == 0
    sim.step()
    r = await cli("once")
    assert r.code == 0, r.stderr
    yield cli, good, gone
    await good.close()
    await gone.close()
    await sim.close()


async def test_history_shows_the_price_change(world, tmp_path):
    cli, _good, _gone = world
    r = await cli("history", S.ACV)
    assert r.code == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("20")]
    assert len(rows) == 2
    assert "19.99" in rows[0] and "16.99" in rows[1]
    assert "price $19.99 → $16.99 (-15%)" in rows[1]  # what changed
    assert "price" in r.stdout.splitlines()[4]  # under the title, id and prices

    png = tmp_path / "acv.png"
    r = await cli("history", S.ACV, "--png", str(png))
    assert r.code == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    r = await cli("history", "999")
    assert r.code == 1
    assert "999" in r.stderr and "Traceback" not in r.stderr


async def test_alerts_list_their_delivery_state(world):
    cli, good, gone = world
    assert len(gone.requests) == 1  # the 404 made it dead at once: no retries
    assert {a["product"]["id"] for a in good.alerts()} == {S.ACV, S.ASHWAGANDHA}

    r = await cli("alerts")
    assert r.code == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    drop = [ln for ln in lines if "[price_drop]" in ln]
    low = [ln for ln in lines if "[lowest_price]" in ln]
    assert len(drop) == 1 and len(low) == 2
    assert S.ACV in drop[0] and "gone=dead" in drop[0] and "404" in drop[0]
    assert all("good=sent" in ln for ln in low)

    r = await cli("alerts", "--failed")
    assert r.code == 0, r.stderr
    assert r.stdout.strip().splitlines() == drop


# ---------------------------------------------------------------- demo


# a console entry: "[kind] rule · watch", or "[kind, kind] rule, rule · watch" for the alerts
# of one product in one poll (one message listing each reason)
ALERT_HEAD = re.compile(
    r"^\[(?P<kinds>\w+(?:, \w+)*)\] (?P<rules>\S+(?:, \S+)*) · (?P<watch>\S+)$"
)
PDP_ID = re.compile(r"https://www\.tiktok\.com/shop/pdp/(?:\S+/)?(?P<id>\d+)$")


def console_messages(stdout: str) -> list[tuple[list[str], str, str | None, list[str]]]:
    """(rules, watch, product id from the link or None, lines) of each message printed."""
    out: list[tuple[list[str], str, str | None, list[str]]] = []
    for ln in stdout.splitlines():
        if m := ALERT_HEAD.match(ln):
            out.append((m["rules"].split(", "), m["watch"], None, []))
        elif out and ln.startswith("  "):
            rules, watch, _, lines = out[-1]
            lines.append(ln.strip())
            if link := PDP_ID.search(ln.strip()):
                out[-1] = (rules, watch, link["id"], lines)
    return out


def console_alerts(stdout: str) -> list[tuple[str, str, str | None]]:
    """(rule, watch, product id from the link or None) of each alert the console printed."""
    return [(r, watch, pid) for rules, watch, pid, _ in console_messages(stdout) for r in rules]


async def test_demo_prints_exactly_the_documented_alerts_and_stops_after_its_cycles():
    env = clean_env()
    env.pop("WATCHER_SIM_URL", None)
    r = await run_watcher("demo", "--cycles", "9", "--interval", "1", env=env, timeout=60)
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stdout.rstrip().splitlines()[-1] == "--- demo finished after 9 poll cycles"

    printed = console_alerts(r.stdout)
    assert len(DEMO_EXPECTED_ALERTS) == 29
    assert len(printed) == len(DEMO_EXPECTED_ALERTS), r.stdout
    assert Counter(rule for rule, _, _ in printed) == Counter(e.rule for e in DEMO_EXPECTED_ALERTS)
    assert Counter((rule, watch) for rule, watch, _ in printed) == Counter(
        (e.rule, e.watch) for e in DEMO_EXPECTED_ALERTS
    )
    # each alert names its product by its link (KeyAPI's top-products rows have no link):
    # with the counts above this makes the printed alerts exactly the documented ones
    assert all(pid for _, watch, pid in printed if watch != "beauty-top"), r.stdout
    expected = Counter((e.rule, e.watch, e.product_id) for e in DEMO_EXPECTED_ALERTS)
    linked = Counter(a for a in printed if a[2] is not None)
    assert linked <= expected, linked - expected

    # one message per product per poll: the 29 alerts are 19 messages, the rules that fire
    # together for one product listed in one of them, its title and values once
    messages = console_messages(r.stdout)
    per_poll = Counter((e.step, e.watch, e.product_id) for e in DEMO_EXPECTED_ALERTS)
    assert len(messages) == len(per_poll) == 19, r.stdout
    clog = [m for m in messages if m[2] == S.CLASSIC_CLOG and len(m[0]) > 1]
    assert [rules for rules, *_ in clog] == [
        ["price-drop-10", "all-time-low"],  # step 2: 44.99 → 34.99
        ["price-drop-10", "cheap-classic-clog", "all-time-low"],  # step 4: 34.99 → 29.99
    ]
    _, _, _, lines = clog[0]
    assert lines[0].startswith("Price drop · Lowest price: Crocs Unisex-Adult Classic Clogs")
    assert [ln for ln in lines if "→" in ln] == ["$44.99 → $34.99 (-22%) · 36% off"]


LEAKY = """\
providers:
  socialfetch: {api_key: "${SOCIALFETCH_API_KEY}", max_concurrency: "${SOCIALFETCH_API_KEY}",
                base_url: "${SOCIALFETCH_API_KEY}"}
channels:
  out: {type: webhook, url: "${WEBHOOK_SECRET}", secret: "${WEBHOOK_SECRET}",
        headers: {"X-Key": "${WEBHOOK_SECRET}"}}
  tg: {type: telegram, token: "${TELEGRAM_BOT_TOKEN}", chat_ids: "${TELEGRAM_BOT_TOKEN}",
       timezone: "${WEBHOOK_SECRET}"}
watches:
  - {id: s, type: search, query: q, every: "${KEYAPI_API_KEY}", region: "${WEBHOOK_SECRET}"}
rules:
  - {id: r, when: new_item, notify: [out], cooldown: "${WEBHOOK_SECRET}"}
  - {id: r2, when: "${WEBHOOK_SECRET}", notify: ["${TELEGRAM_BOT_TOKEN}"]}
"""
LOUD = {k: f"{k.lower()}_VALUE_9f3b2" for k in SECRETS}


def test_no_secret_value_appears_in_check_output(tmp_path):
    """Every secret put where it does not belong: each is reported, by position, and no
    message shows the value (it is written as ${NAME})."""
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(LEAKY)
    r = watcher("check", "-c", str(cfg), env=clean_env(**LOUD))
    assert r.returncode == 2
    assert_no_traceback(r)
    assert len(r.stderr.splitlines()) >= 9, r.stderr
    for value in LOUD.values():
        assert value not in r.stdout + r.stderr
    assert "${WEBHOOK_SECRET}" in r.stderr


async def test_no_secret_value_appears_in_a_verbose_once(world, tmp_path):
    """A run with failing deliveries, at debug level: the logs name things, never secrets."""
    cli, good, gone = world
    sent = await cli("once", "-v", "-v")
    assert sent.code == 0
    assert "DEBUG" in sent.stderr  # it really was verbose
    assert SF_KEY not in sent.stdout + sent.stderr
    for request in good.requests + gone.requests:  # the receivers are other hosts
        assert SF_KEY not in repr(request["headers"]) + request["raw"].decode()
