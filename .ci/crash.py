"""The crash test: a real `watcher run` SIGKILLed again and again while prices move.

    .venv/bin/python .ci/crash.py [--kills 24] [--steps 12] [--seed 7] [--db URL]

A local simulator serves a 32-product store and a local webhook receiver records what
arrives. The driver lowers the prices of five products per step (a price_drop transition
each), waits until the daemon has committed the step, then takes the next. Meanwhile it
SIGKILLs the daemon at seeded random moments and starts it again at once. At the end a clean
daemon drains the outbox and stops on SIGTERM, and the driver checks what a user would:

* every transition arrived at the webhook;
* no transition arrived under two alert_ids (repeats of one alert_id are allowed: at-least-
  once, receivers drop them);
* nothing arrived that was not a transition;
* the database is sound (SQLite: PRAGMA integrity_check) and no log has a traceback.

Exit 0 when all holds, 1 otherwise, with the figures on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402

from tests.support import WATCHER, WebhookReceiver  # noqa: E402
from watcher.simulator import demo as S  # noqa: E402
from watcher.simulator import start_simulator  # noqa: E402

CONFIG = """\
providers:
  socialfetch: {api_key: sfk_crash, base_url: "${SIM_URL}", requests_per_second: 200}
channels:
  hook: {type: webhook, url: "${HOOK_URL}", secret: crash-secret, group_over: 100}
watches:
  - {id: goli, type: store, url: "@STORE@", every: 1s, max_pages: 10}
rules:
  - {id: drop, when: price_drop, min_percent: 1, cooldown: 1s, notify: [hook]}
""".replace("@STORE@", S.STORE_URL)


def log(message: str) -> None:
    print(f"[crash {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Daemon:
    def __init__(self, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.args, self.env, self.logs = args, env, logs
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        err = open(self.logs / f"daemon-{self.starts:03d}.log", "wb")  # noqa: SIM115
        self.proc = await asyncio.create_subprocess_exec(
            WATCHER, "run", *self.args, "-v",
            stdout=asyncio.subprocess.DEVNULL, stderr=err, env=self.env,
        )  # fmt: skip
        err.close()

    async def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM once the process can take it: before its first line of Python runs
        (a few ms after exec), no program can."""
        assert self.proc is not None
        await wait_for(lambda: catches_sigterm(self.proc.pid), timeout=10)
        self.proc.terminate()
        return await asyncio.wait_for(self.proc.wait(), 15)


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone already: terminate() and wait() will say how
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return True


def snapshot_prices(engine, ids: list[str]) -> dict[str, Decimal]:
    try:
        with engine.connect() as con:
            rows = con.execute(
                text("SELECT product_id, price FROM snapshot WHERE watch_id = 'goli'")
            ).all()
    except DBAPIError:  # not created yet: the first daemon is still migrating
        return {}
    return {pid: Decimal(price) for pid, price in rows if pid in ids and price is not None}


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kills", type=int, default=24)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    opts = p.parse_args()
    rng = random.Random(opts.seed)
    work = Path(tempfile.mkdtemp(prefix="watcher-crash-"))
    db = opts.db or f"sqlite:///{work / 'crash.db'}"
    sim = await start_simulator(scenario="quiet")
    hook = WebhookReceiver(secret="crash-secret")
    await hook.start()
    cfg = work / "rules.yaml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "SIM_URL": sim.base_url, "HOOK_URL": hook.url}
    daemon = Daemon(["-c", str(cfg), "--db", db], env, work)
    store = sim.world.stores[S.STORE_URL]
    items = list(store.products)
    engine = create_engine(db)
    expected: set[tuple[str, str, str]] = set()  # (product, old price, new price)
    kills = 0
    failures: list[str] = []

    async def killer(stop: asyncio.Event) -> None:
        """SIGKILL at seeded random moments (0.3-2.5 s after each start), restart at once."""
        nonlocal kills
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            if stop.is_set():
                return
            await daemon.kill()
            kills += 1
            await daemon.start()

    await daemon.start()
    started = time.monotonic()
    try:
        # the baseline: every product stored
        await wait_for(lambda: len(snapshot_prices(engine, [i.id for i in items])) == len(items))
        stop_killing = asyncio.Event()
        kill_task = asyncio.create_task(killer(stop_killing))
        recent: list[set[str]] = []
        for step in range(1, opts.steps + 1):
            # five products not moved in the last two steps (their cooldown is long over)
            blocked = set().union(*recent[-2:]) if recent else set()
            chosen = rng.sample([i for i in items if i.id not in blocked and i.price], 5)
            for item in chosen:
                old = item.price
                assert old is not None
                new = (old * Decimal(rng.randint(80, 97)) / 100).quantize(Decimal("0.01"))
                item.reprice(str(new))
                expected.add((item.id, f"{old.normalize():f}", f"{new.normalize():f}"))
            recent.append({i.id for i in chosen})
            want = {i.id: i.price for i in chosen}
            await wait_for(
                lambda want=want: snapshot_prices(engine, list(want)) == want, timeout=90
            )
            log(f"step {step}: committed ({kills} kills so far)")
        # keep killing until the quota is met, then let one daemon finish the outbox
        while kills < opts.kills:
            await asyncio.sleep(0.2)
        stop_killing.set()
        await kill_task
        got = await wait_for(lambda: _transitions(hook) >= expected, timeout=120, quiet=True)
        if not got:
            failures.append("not every transition arrived in 120 s")
        code = await daemon.stop()
        if code != 0:
            failures.append(f"the last daemon exited {code} on SIGTERM")
    finally:
        if daemon.proc is not None and daemon.proc.returncode is None:
            await daemon.kill()
        await hook.close()
        await sim.close()

    received = _by_transition(hook)
    missing = expected - set(received)
    extra = set(received) - expected
    split = {t: ids for t, ids in received.items() if len(ids) > 1}
    repeats = len(hook.alerts()) - len({a["alert_id"] for a in hook.alerts()})
    if missing:
        failures.append(f"{len(missing)} transitions never arrived: {sorted(missing)[:5]}")
    if extra:
        failures.append(f"{len(extra)} alerts that were no transition: {sorted(extra)[:5]}")
    if split:
        failures.append(f"{len(split)} transitions under two alert_ids: {list(split)[:5]}")
    if hook.bad_signatures:
        failures.append(f"{hook.bad_signatures} requests with a bad signature")
    if db.startswith("sqlite"):
        with engine.connect() as con:
            verdict = con.execute(text("PRAGMA integrity_check")).scalar()
        if verdict != "ok":
            failures.append(f"integrity_check: {verdict}")
    engine.dispose()
    tracebacks = [
        f.name for f in sorted(work.glob("daemon-*.log")) if b"Traceback" in f.read_bytes()
    ]
    if tracebacks:
        failures.append(f"tracebacks in {tracebacks}")
    log(
        f"{opts.steps} steps, {len(expected)} transitions, {kills} SIGKILLs, "
        f"{daemon.starts} daemon starts, {len(received)} transitions received, "
        f"{repeats} repeated deliveries of one alert_id, "
        f"{time.monotonic() - started:.0f} s; logs in {work}"
    )
    for f in failures:
        log(f"FAIL: {f}")
    if kills < 20:
        log(f"FAIL: only {kills} kills")
        return 1
    return 1 if failures else 0


def _by_transition(hook: WebhookReceiver) -> dict[tuple[str, str, str], set[str]]:
    out: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for a in hook.alerts():
        if a["rule"] is None:
            continue  # a notice (none is expected here); not a transition
        old, new = (Decimal(x["price"]).normalize() for x in (a["previous"], a["product"]))
        out[(a["product"]["id"], f"{old:f}", f"{new:f}")].add(a["alert_id"])
    return out


def _transitions(hook: WebhookReceiver) -> set[tuple[str, str, str]]:
    return set(_by_transition(hook))


async def wait_for(predicate, *, timeout: float = 60, quiet: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            if quiet:
                return False
            raise SystemExit(f"crash test: timed out after {timeout} s")
        await asyncio.sleep(0.1)
    return True


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
