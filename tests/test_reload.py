"""SIGHUP re-reads the config of a running ``watcher run`` (a real subprocess against the
simulator and a webhook receiver): a valid file is applied without a restart, an invalid
one is logged issue by issue and the running config stays. On PostgreSQL (``.ci/with-
postgres``) the same tests run the cluster's scheduler (procrastinate jobs)."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from watcher.simulator import demo as S
from watcher.simulator import start_simulator

from .fakebot import TOKEN, FakeBotAPI
from .support import DaemonProcess, WebhookReceiver, run_watcher, sql, wait_until
from .test_daemon import free_port

HEAD = """\
providers:
  socialfetch: {api_key: sfk, base_url: "${SIM_URL}", requests_per_second: 100}
  keyapi: {api_key: kk, base_url: "${SIM_URL}", requests_per_second: 100}
channels:
  hook: {type: webhook, url: "${HOOK_URL}", max_attempts: 20}
"""
STORE = f'  - {{id: goli-store, type: store, url: "{S.STORE_URL}", every: 1s, max_pages: 10}}\n'
SEARCH = f'  - {{id: crocs-search, type: search, query: "{S.QUERY}", every: 1s}}\n'
SHOWCASE = f"  - {{id: mia-showcase, type: showcase, handle: {S.HANDLE}, every: 1s}}\n"

# before: a 50 % drop rule (step 1 and 2 have none) and an all-time-low rule
BEFORE = (
    HEAD
    + "watches:\n"
    + STORE
    + SEARCH
    + """\
rules:
  - {id: big-drop, when: price_drop, min_percent: 50, notify: [hook], cooldown: 1s}
  - {id: low, when: lowest_price, notify: [hook], cooldown: 1s}
"""
)
# after: the search removed, a showcase added, the drop rule at 10 %, the low rule gone
AFTER = (
    HEAD
    + "watches:\n"
    + STORE
    + SHOWCASE
    + """\
rules:
  - {id: big-drop, when: price_drop, min_percent: 10, notify: [hook], cooldown: 1s}
"""
)


@pytest.fixture
async def world(tmp_path: Path, db_url: str):
    sim = await start_simulator()
    hook = WebhookReceiver()
    await hook.start()
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(BEFORE)
    port = free_port()
    env = {"SIM_URL": sim.base_url, "HOOK_URL": hook.url}
    d = DaemonProcess("-c", str(cfg), "--db", db_url, "--http", f"127.0.0.1:{port}", env=env)
    yield sim, hook, cfg, d, f"http://127.0.0.1:{port}/healthz"
    await d.kill()
    await hook.close()
    await sim.close()


def searched(sim) -> int:
    """Requests the simulator got for the crocs search."""
    return sum(1 for r in sim.requests if S.QUERY in r.query.values())


def polls(d: DaemonProcess, watch: str, since: int = 0) -> int:
    return sum(f"event=poll watch={watch} " in line for line in d.lines[since:])


async def healthz(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        return await r.json()


async def past(stamp: str) -> None:
    """Until the clock shows a later second than ``stamp`` (the times shown are to the
    second), so a time taken from now on differs from it."""
    from watcher.util import iso_utc

    await wait_until(lambda: iso_utc(datetime.now(UTC)) > stamp, what=f"a second after {stamp}")


async def hup(d: DaemonProcess, event: str) -> int:
    """SIGHUP, then wait for ``event`` (one more of it); the log index before the signal."""
    assert d.proc is not None
    mark, seen = len(d.lines), d.count(event)
    d.proc.send_signal(signal.SIGHUP)
    await d.wait_log(event, count=seen + 1)
    return mark


def by_rule(hook: WebhookReceiver) -> list[tuple[str, str]]:
    return sorted((a["rule"], a["product"]["id"]) for a in hook.alerts())


async def test_a_valid_reload_adds_removes_and_changes_without_losing_pending(world, db_url):
    sim, hook, cfg, d, health = world
    await d.start()
    await d.wait_log("event=poll watch=goli-store status=baseline")
    await d.wait_log("event=poll watch=crocs-search status=baseline")
    loaded = (await healthz(health))["config_loaded_at"]
    assert loaded

    # step 1 under the old rules: two all-time lows, pending while the receiver refuses
    hook.fail_next, hook.retry_after = 2, "6"
    sim.step()
    await wait_until(lambda: len(hook.requests) >= 1, what="the refused send")
    assert hook.alerts() == []

    cfg.write_text(AFTER)
    await past(loaded)
    mark = await hup(d, "event=config_reloaded")
    reloaded = next(line for line in d.lines[mark:] if "event=config_reloaded" in line)
    assert "watches=2 added=mia-showcase removed=crocs-search" in reloaded
    assert "rules=low,big-drop" in reloaded
    assert hook.alerts() == []  # the old rule's alerts were still pending at the reload

    # the added watch polls (a baseline), the removed one no more
    await d.wait_log("event=poll watch=mia-showcase status=baseline")
    store_polls = polls(d, "goli-store")
    await wait_until(lambda: polls(d, "goli-store") >= store_polls + 2, what="two more polls")
    searches, search_polls = searched(sim), polls(d, "crocs-search")
    await wait_until(lambda: polls(d, "goli-store") >= store_polls + 4, what="two more polls")
    assert searched(sim) == searches
    assert polls(d, "crocs-search") == search_polls

    # nothing pending was lost: the removed rule's alerts arrive once the receiver is back
    low = sorted([("low", S.ACV), ("low", S.ASHWAGANDHA)])
    await wait_until(lambda: by_rule(hook) == low, timeout=30, what="the pending alerts")

    # step 2 under the new rules: MATCHA fell 15 %, over the new 10 % (under the old 50 %);
    # the removed low rule says nothing of it
    sim.step()
    expected = sorted([*low, ("big-drop", S.MATCHA)])
    await wait_until(lambda: by_rule(hook) == expected, what="the new rule's alert")
    await d.wait_log("event=poll watch=goli-store status=ok", count=3)
    assert by_rule(hook) == expected  # once
    ids = [a["alert_id"] for a in hook.alerts()]
    assert len(ids) == len(set(ids))

    # when the running config was loaded: /healthz and `watcher status --json`
    assert (await healthz(health))["config_loaded_at"] > loaded
    env = {"SIM_URL": sim.base_url, "HOOK_URL": hook.url}
    status = await run_watcher("status", "--json", "-c", str(cfg), "--db", db_url, env=env)
    assert status.code == 0, status.stderr
    report = json.loads(status.stdout)
    mine = [i for i in report["instances"] if i["command"] == "run"]
    assert [i["config_loaded_at"] for i in mine] == [(await healthz(health))["config_loaded_at"]]
    assert [w["id"] for w in report["watches"]] == ["goli-store", "mia-showcase"]

    code, _took = await d.stop()
    assert code == 0, d.log()


async def test_an_invalid_reload_keeps_the_running_config(world):
    _sim, _hook, cfg, d, health = world
    await d.start()
    await d.wait_log("event=poll watch=crocs-search status=baseline")
    loaded = (await healthz(health))["config_loaded_at"]

    # a YAML error (an unclosed list on line 6, found where the next entry starts): one
    # issue, at its line
    cfg.write_text(AFTER.replace("watches:\n", "watches:\n  - {id: [broken\n", 1))
    mark = await hup(d, "event=config_kept")
    failed = [line for line in d.lines[mark:] if "event=reload_failed" in line]
    assert len(failed) == 1, d.log()
    assert f"{cfg}:8:5: invalid YAML" in failed[0]
    assert "WARNING" in failed[0] or "ERROR" in failed[0]

    # a schema error and a missing ${VAR}: one line each, with file:line
    bad = AFTER.replace("max_pages: 10}", "max_pages: 10, colour: red}").replace(
        "${HOOK_URL}", "${NO_SUCH_VAR}"
    )
    cfg.write_text(bad)
    mark = await hup(d, "event=config_kept")
    failed = [line for line in d.lines[mark:] if "event=reload_failed" in line]
    assert len(failed) == 2, d.log()
    assert any(f"{cfg}:5:" in line and "NO_SUCH_VAR" in line for line in failed), failed
    assert any(f"{cfg}:7:" in line and "colour" in line for line in failed), failed
    info = await healthz(health)
    assert info["config_loaded_at"] == loaded
    assert info["config_reload_error"] == f"2 errors in {cfg}"

    # still polling, with the old config: the search too
    search_polls = polls(d, "crocs-search")
    await wait_until(lambda: polls(d, "crocs-search") >= search_polls + 2, what="old config")
    assert d.count("event=poll watch=mia-showcase") == 0

    # a valid file later applies
    cfg.write_text(AFTER)
    await past(loaded)
    await hup(d, "event=config_reloaded")
    await d.wait_log("event=poll watch=mia-showcase status=baseline")
    info = await healthz(health)
    assert info["config_loaded_at"] > loaded
    assert info["config_reload_error"] is None
    code, _took = await d.stop()
    assert code == 0, d.log()


def _ignores_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


async def test_sighup_during_start_up_does_not_kill_the_daemon(world):
    _sim, _hook, _cfg, d, _health = world
    await d.start()
    assert d.proc is not None
    # from the moment `watcher run` ignores SIGHUP (before its imports and the config's
    # read) until it has started, a SIGHUP every 20 ms
    await wait_until(lambda: _ignores_sighup(d.proc.pid), what="SIGHUP ignored")
    sent = 0
    while d.count("event=started") == 0:
        assert d.proc.returncode is None, d.log()
        d.proc.send_signal(signal.SIGHUP)
        sent += 1
        await asyncio.sleep(0.02)
    assert sent > 3
    await d.wait_log("event=poll watch=goli-store status=baseline")
    if d.count("event=reloading"):  # a SIGHUP during the start: applied once started
        await d.wait_log("event=config_reloaded")
    d.proc.send_signal(signal.SIGHUP)
    await d.wait_log("event=config_reloaded")
    assert d.proc.returncode is None
    code, _took = await d.stop()
    assert code == 0, d.log()
    assert "Traceback" not in d.log()


async def test_a_new_interval_reschedules_and_a_new_definition_takes_a_baseline(world):
    _sim, _hook, cfg, d, _health = world
    hourly = BEFORE.replace("every: 1s, max_pages: 10", "every: 1h, max_pages: 10")
    assert hourly != BEFORE
    cfg.write_text(hourly)
    await d.start()
    await d.wait_log("event=poll watch=goli-store status=baseline")
    await d.wait_log("event=poll watch=crocs-search status=baseline")
    searches = polls(d, "crocs-search")
    await wait_until(lambda: polls(d, "crocs-search") >= searches + 2, what="search polls")
    assert polls(d, "goli-store") == 1  # hourly: not again so soon

    # the store every second from now on; the search in another region: a new baseline
    cfg.write_text(BEFORE.replace(f'query: "{S.QUERY}"', f'query: "{S.QUERY}", region: GB'))
    mark = await hup(d, "event=config_reloaded")
    line = next(x for x in d.lines[mark:] if "event=config_reloaded" in x)
    assert "changed=goli-store,crocs-search" in line
    await d.wait_log("event=watch_redefined watch=crocs-search")
    await wait_until(lambda: polls(d, "goli-store", mark) >= 2, what="the store every second")
    await d.wait_log("event=poll watch=crocs-search status=baseline", count=2)
    await wait_until(lambda: polls(d, "crocs-search", mark) >= 2, what="search after it")
    assert polls(d, "goli-store", mark) and d.count("watch=goli-store status=baseline") == 1
    code, _took = await d.stop()
    assert code == 0, d.log()


TG = """\
  tg: {type: telegram, token: "${TG_TOKEN}", base_url: "${TG_URL}", chat_ids: [111],
       admins: [@ADMINS@]}
"""


async def test_the_bot_answers_from_the_reloaded_config(world):
    """A new admin, a new watch: /status from the new config, with when it was loaded; a
    changed token needs a restart (logged), the bot keeps answering."""
    _sim, _hook, cfg, d, _health = world
    bot = FakeBotAPI()
    d.env.update({"TG_TOKEN": TOKEN, "TG_URL": await bot.start()})
    try:
        cfg.write_text(BEFORE.replace("watches:\n", TG.replace("@ADMINS@", "9001") + "watches:\n"))
        await d.start()
        await d.wait_log("event=bot_started")
        bot.command(9002, 9002, "/status")
        assert "for this bot's admins" in (await bot.wait_reply(9002)).body

        after = AFTER.replace("watches:\n", TG.replace("@ADMINS@", "9001, 9002") + "watches:\n")
        cfg.write_text(after)
        mark = await hup(d, "event=config_reloaded")
        line = next(x for x in d.lines[mark:] if "event=config_reloaded" in x)
        assert "channels=tg" in line
        bot.command(9002, 9002, "/status")
        status = (await bot.wait_reply(9002, count=2)).body
        assert "mia-showcase" in status and "crocs-search" not in status
        assert "config loaded" in status

        cfg.write_text(after.replace("${TG_TOKEN}", "123:other"))
        await hup(d, "event=config_reloaded")
        await d.wait_log("event=restart_needed channel=tg")
        bot.command(9001, 9001, "/status")
        assert "mia-showcase" in (await bot.wait_reply(9001)).body

        # the channel removed: its bot stops; back: a bot starts for it
        cfg.write_text(AFTER)
        await hup(d, "event=config_reloaded")
        await d.wait_log("event=bot_deposed channel=tg")
        cfg.write_text(after)
        await hup(d, "event=config_reloaded")
        await d.wait_log("event=bot_started channel=tg", count=2)
        bot.command(9002, 9002, "/status")
        assert "mia-showcase" in (await bot.wait_reply(9002, count=3)).body
        code, _took = await d.stop()
        assert code == 0, d.log()
    finally:
        await d.kill()
        await bot.close()


async def test_a_removed_channels_deliveries_wait_for_it_to_come_back(world, db_url):
    """Decided: deliveries of a channel no longer configured stay pending (never claimed,
    never dead), and go out if a channel of that id comes back."""
    sim, hook, cfg, d, _health = world
    closed = free_port()  # nothing listens: every send to it fails and is retried
    spare = f'  spare: {{type: webhook, url: "http://127.0.0.1:{closed}/hook"}}\n'
    two = BEFORE.replace("watches:\n", spare + "watches:\n").replace(
        "id: low, when: lowest_price, notify: [hook]",
        "id: low, when: lowest_price, notify: [hook, spare]",
    )
    cfg.write_text(two)
    await d.start()
    await d.wait_log("event=poll watch=goli-store status=baseline")
    sim.step()
    await d.wait_log("event=retry attempts=1 channel=spare", count=2)
    await wait_until(lambda: len(hook.alerts()) == 2, what="the alerts on hook")

    cfg.write_text(BEFORE)  # spare removed
    await hup(d, "event=config_reloaded")
    await d.wait_log("event=channel_removed channel=spare")
    store_polls = polls(d, "goli-store")
    await wait_until(lambda: polls(d, "goli-store") >= store_polls + 2, what="polls go on")
    rows = sql(db_url, "SELECT status FROM delivery WHERE channel = 'spare'")
    assert rows == [("pending",), ("pending",)]

    # back, at a receiver that answers: what waited goes out (the same alerts, by id)
    cfg.write_text(two.replace(f"127.0.0.1:{closed}/hook", hook.url.removeprefix("http://")))
    await hup(d, "event=config_reloaded")
    await wait_until(lambda: len(hook.alerts()) == 4, timeout=30, what="spare's deliveries")
    ids = [a["alert_id"] for a in hook.alerts()]
    assert sorted(ids[:2]) == sorted(ids[2:])
    code, _took = await d.stop()
    assert code == 0, d.log()


def test_what_a_reload_changes_by_id(tmp_path):
    """Pure: moving an entry in the file changes nothing; a definition key is a new baseline,
    a schedule key a new schedule."""
    from watcher.config import load_config
    from watcher.runtime import ConfigChanges

    env = {"SIM_URL": "http://127.0.0.1:1", "HOOK_URL": "http://127.0.0.1:1/hook"}

    def load(text: str):
        path = tmp_path / "rules.yaml"
        path.write_text(text)
        return load_config(path, env=env)

    old = load(BEFORE)
    moved = load(HEAD + "watches:\n" + SEARCH + STORE + BEFORE.split(SEARCH, 1)[1])
    assert old.watches["goli-store"].line != moved.watches["goli-store"].line
    assert ConfigChanges.between(old, moved) == ConfigChanges()

    new = load(
        AFTER.replace("every: 1s, max_pages: 10", "every: 5m, max_pages: 10").replace(
            "max_attempts: 20", "max_attempts: 3"
        )
    )
    c = ConfigChanges.between(old, new)
    assert (c.added, c.removed, c.changed) == (
        ("mia-showcase",),
        ("crocs-search",),
        ("goli-store",),
    )
    assert (c.rescheduled, c.redefined) == (("goli-store",), ())
    assert c.rules == ("low", "big-drop")
    assert c.channels_changed == ("hook",) and not c.providers_changed
    redefined = load(BEFORE.replace(f'query: "{S.QUERY}"', 'query: "other"'))
    c = ConfigChanges.between(old, redefined)
    assert (c.changed, c.redefined, c.rescheduled) == (("crocs-search",), ("crocs-search",), ())


def test_the_unit_reloads_with_sighup():
    """``systemctl reload watcher`` sends the daemon SIGHUP (the unit itself is verified by
    systemd-analyze in test_daemon)."""
    unit = (Path(__file__).parents[1] / "systemd" / "watcher.service").read_text()
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit
