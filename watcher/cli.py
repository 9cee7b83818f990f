"""The command line: ``watcher check | run | once | demo | status | history | alerts | db``.

Exit status: 0 when the command ran, 2 on a config error, 1 on any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from . import logs
from .config import Config, load_config
from .errors import ConfigError

if TYPE_CHECKING:
    from .progress import Progress

log = logging.getLogger("watcher")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def version() -> str:
    """This watcher's version, from the installed package's metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("watcher")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _Version(argparse.Action):
    """``--version``: the metadata is read only when asked for (every command builds the
    parser, and ``watcher check`` should start fast)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"watcher {version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="watcher",
        description="Watch TikTok Shop stores, showcases, searches and rankings.",
    )
    p.add_argument("--version", action=_Version, help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, *, config: bool = True, db: bool = True) -> None:
        if config:
            sp.add_argument(
                "-c", "--config", default="rules.yaml", help="config file (rules.yaml)"
            )
        if db:
            sp.add_argument("--db", help="database URL (default $WATCHER_DB or ./watcher.db)")
        sp.add_argument(
            "-v", "--verbose", action="count", default=0, help="more logging (-vv: libraries too)"
        )
        sp.add_argument("-q", "--quiet", action="count", default=0, help="less logging")

    sp = sub.add_parser("check", help="validate the config and exit 0 or 2")
    common(sp, db=False)

    sp = sub.add_parser("run", help="the daemon: schedule watches, serve the bot, deliver alerts")
    common(sp)
    sp.add_argument(
        "--http", metavar="HOST:PORT", help="serve /healthz and /metrics (e.g. 127.0.0.1:9464)"
    )

    sp = sub.add_parser("once", help="poll every watch once, deliver alerts, exit")
    common(sp)
    sp.add_argument(
        "--dry-run", action="store_true", help="print what would fire; store nothing but credits"
    )

    sp = sub.add_parser("demo", help="run against a built-in simulated API; no keys needed")
    common(sp, config=False)
    sp.add_argument("--cycles", type=int, default=0, help="stop after N poll cycles (0: forever)")
    sp.add_argument("--interval", type=float, default=3.0, help="seconds between cycles (3)")

    sp = sub.add_parser(
        "status", help="the whole cluster: watches, next polls, credits, deliveries, instances"
    )
    common(sp)
    sp.add_argument("--json", action="store_true", help="print the report as JSON")

    sp = sub.add_parser("history", help="price history of a product")
    common(sp, config=False)
    sp.add_argument("product_id", help="the product's id, as alerts and /history show it")
    sp.add_argument("--png", metavar="FILE", help="write a price chart to FILE instead")
    sp.add_argument("-c", "--config", help="config file, to name each watch's type (optional)")

    sp = sub.add_parser("alerts", help="recent alerts and their delivery state")
    common(sp, config=False)
    sp.add_argument("--failed", action="store_true", help="only alerts with a dead delivery")
    sp.add_argument("--limit", type=int, default=20, help="show at most N alerts (20)")

    sp = sub.add_parser("db", help="the database schema: `db current`, `db upgrade`")
    sp.add_argument(
        "action",
        choices=["current", "upgrade"],
        help="current: show the schema revision; upgrade: migrate to this watcher's schema",
    )
    common(sp, config=False)
    return p


def _setup_logging(command: str, verbose: int, quiet: int) -> None:
    """INFO under ``run`` (the journal shows each poll and delivery), WARNING elsewhere (the
    other commands print their own output); each -v one level more, each -q one less."""
    default = logging.INFO if command == "run" else logging.WARNING
    logs.setup(logs.level_for(verbose, quiet, default), libraries=verbose >= 2)


def _load(path: str) -> Config:
    return load_config(path)


def _print_config_error(exc: ConfigError) -> None:
    for issue in exc.issues:
        print(str(issue), file=sys.stderr)
    n = len(exc.issues)
    print(f"{n} error{'s' if n != 1 else ''} in config; nothing was run", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.command, args.verbose, args.quiet)
    try:
        if args.command == "check":
            return _check(args.config)
        if args.command == "run":
            cfg = _load(args.config)
            return asyncio.run(_run(cfg, args.db, http=args.http, quiet=args.quiet > 0))
        if args.command == "once":
            cfg = _load(args.config)
            return asyncio.run(_once(cfg, args.db, dry_run=args.dry_run, quiet=args.quiet > 0))
        if args.command == "demo":
            return asyncio.run(_demo(args.db, cycles=args.cycles, interval=args.interval))
        if args.command == "status":
            return _status(_load(args.config), args.db, as_json=args.json)
        if args.command == "history":
            return _history(args.db, args.product_id, png=args.png, config=args.config)
        if args.command == "alerts":
            return _alerts(args.db, failed=args.failed, limit=args.limit)
        if args.command == "db":
            return _db(args.db, args.action)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # the last line of defence: one line, exit 1, no traceback
        logs.event(log, "failure", logging.DEBUG, exc_info=True)  # the traceback, at -v
        print(f"watcher: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE


def _check(path: str) -> int:
    """Errors exit 2; warnings (a config that runs but likely not as meant) are printed
    like errors, ``file:line:col: warning: …``, and exit 0."""
    from .configcheck import config_warnings

    cfg = _load(path)
    warnings = config_warnings(path)
    for w in warnings:
        print(str(w), file=sys.stderr)
    n = len(warnings)
    print(
        f"ok: {cfg.path}: {len(cfg.watches)} watches, {len(cfg.rules)} rules, "
        f"{len(cfg.channels)} channels" + (f", {n} warning{'s' if n != 1 else ''}" if n else "")
    )
    return EXIT_OK


# ---------------------------------------------------------------- run and once


async def _run(cfg: Config, db: str | None, *, http: str | None, quiet: bool = False) -> int:
    """The daemon; its first cycle (every watch polls at start) logs ``event=progress``
    every few seconds while it lasts (a journal, not a terminal: no bar)."""
    from .daemon import Daemon
    from .progress import Progress

    def emit(report: dict[str, object]) -> None:
        logs.event(log, "progress", cycle="first", **report)

    # a watch whose first poll never reports (it crashed past the pipeline's net, a reload
    # removed it) must not keep the report going: it ends after a minute with no watch done
    progress = Progress(cfg.watches, emit=None if quiet else emit, give_up_after=60.0)
    daemon = Daemon(
        cfg, db, http=http, on_cycle=lambda o, _at: progress.watch_done(o.watch_id, o.pages)
    )
    # a cluster's instances share the first cycle: none of them sees all of it
    report = None if daemon.cluster else asyncio.create_task(_follow(progress))
    try:
        return await daemon.run()
    finally:
        if report is not None:
            report.cancel()
            await asyncio.gather(report, return_exceptions=True)


async def _follow(progress: Progress) -> None:
    await progress.follow()
    progress.close()


async def _once(cfg: Config, db: str | None, *, dry_run: bool, quiet: bool = False) -> int:
    from .progress import Progress, logs_above_bar
    from .runtime import Runtime

    terminal = not quiet and sys.stderr.isatty()

    def emit(report: dict[str, object]) -> None:
        took = f" in {report['seconds']}s" if "seconds" in report else ""
        line = f"progress: {report['watches']} watches, {report['pages']} pages{took}"
        print(line, file=sys.stderr, flush=True)

    rt = Runtime(cfg, db, dry_run=dry_run, command="once")
    progress = Progress(
        cfg.watches,
        bar=sys.stderr if terminal else None,
        emit=None if quiet or terminal else emit,
        live_pages=True,
    )
    for client in rt.clients.values():
        client.on_page = progress.page

    async def poll(watch):
        outcome = await rt.pipeline.poll(watch)
        progress.write(outcome.summary(), sys.stderr)
        progress.watch_done(watch.id, outcome.pages)
        return outcome

    shown = _Shown()
    try:
        with logs_above_bar(terminal), shown:
            follow = asyncio.create_task(progress.follow())
            try:
                outcomes = await asyncio.gather(*(poll(w) for w in cfg.watches.values()))
            finally:
                follow.cancel()
                await asyncio.gather(follow, return_exceptions=True)
                progress.close()
        for o in outcomes:
            for err in o.errors:
                if not shown.shown(o.watch_id, err):  # else the log has: print it once
                    print(f"{o.watch_id}: {err}", file=sys.stderr)
        if dry_run:
            fired = [a for o in outcomes for a in o.alerts]
            for a in fired:
                print(f"would fire [{a.kind}] {a.rule_id or 'notice'} · {a.watch_id}: {a.message}")
            print(f"dry run: {len(fired)} alerts would fire; nothing stored", file=sys.stderr)
            return EXIT_OK
        done = await rt.dispatcher.drain(30.0)
        if not done:
            print(
                "some deliveries are still pending; the next `watcher once` or `watcher run` "
                "retries them",
                file=sys.stderr,
            )
        # retention for those who run `once` from cron and never a daemon; a few seconds at
        # most, the next run goes on where this one stopped
        try:
            await rt.prune(budget=5.0, pause=0.0)
        except Exception as exc:
            logs.event(log, "retention_not_applied", logging.WARNING, error=str(exc))
        return EXIT_OK
    finally:
        await rt.close()


class _Shown(logging.Filter):
    """The errors the log printed meanwhile (the ``error`` field of its events: a failed
    page, a provider paused), so the CLI does not print one a second time."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[tuple[str | None, str]] = []  # (the watch it names, the error)

    def filter(self, record: logging.LogRecord) -> bool:
        event = logs.fields_of(record)
        if event is not None and event[1].get("error"):
            watch = event[1].get("watch")
            self.errors.append((None if watch is None else str(watch), str(event[1]["error"])))
        return True

    def shown(self, watch_id: str, text: str) -> bool:
        """The log printed ``text`` (or the error it quotes) of this watch, or of no watch
        in particular (a provider's pause)."""
        return any(e in text and w in (None, watch_id) for w, e in self.errors)

    def __enter__(self) -> _Shown:
        for h in logging.getLogger().handlers:
            h.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for h in logging.getLogger().handlers:
            h.removeFilter(self)


# ---------------------------------------------------------------- demo


async def _demo(db: str | None, *, cycles: int, interval: float) -> int:
    """The real daemon against the built-in simulator; the world moves once every watch
    has seen the current step, so each change is observed (and alerted) exactly once."""
    from .daemon import Daemon
    from .pipeline import PollOutcome
    from .simulator import start_simulator

    sim = await start_simulator()
    os.environ["WATCHER_SIM_URL"] = sim.base_url
    tmpdir = None
    if db is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="watcher-demo-")
        db = f"sqlite:///{Path(tmpdir.name) / 'demo.db'}"
    demo_yaml = resources.files("watcher").joinpath("demo.yaml")
    with resources.as_file(demo_yaml) as path:
        cfg = load_config(path)
    cfg = _with_interval(cfg, interval)
    print(f"watcher demo: simulated TikTok Shop APIs at {sim.base_url}", flush=True)
    print(
        "the first poll of each watch stores a baseline quietly; then the simulated shops "
        "change and alerts appear below (Ctrl-C stops)\n",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    seen: set[str] = set()
    cycle_done = asyncio.Event()
    stepped_at = float("-inf")

    header: str | None = None  # the current step's, printed before its first alert only

    def on_cycle(outcome: PollOutcome, started_at: float) -> None:
        nonlocal header
        if outcome.alerts and header is not None:
            # the step's first alerts (a poll in flight at the step may have seen it too),
            # before the dispatcher prints them: it runs only once this returns
            print(header, flush=True)
            header = None
        # only a poll that started after the last step has surely seen that step
        if started_at >= stepped_at:
            seen.add(outcome.watch_id)
            if seen >= set(cfg.watches):
                cycle_done.set()

    daemon = Daemon(cfg, db, on_cycle=on_cycle, command="demo")

    async def outbox_idle(budget: float = 10.0) -> None:
        """Wait until this cycle's alerts are printed, so each burst sits under its step."""
        deadline = loop.time() + budget
        while daemon.rt is not None and loop.time() < deadline:
            due = await asyncio.to_thread(daemon.rt.store.next_due)
            # nothing due, and no pass under way (a claimed delivery is not "due" while it
            # is being printed)
            if (due is None or due > datetime.now(UTC)) and not daemon.rt.dispatcher.busy:
                return
            await asyncio.sleep(0.05)

    async def stepper() -> None:
        nonlocal stepped_at, header
        n = 0
        while True:
            await cycle_done.wait()
            cycle_done.clear()
            await outbox_idle()
            n += 1
            if cycles and n >= cycles:
                print(f"--- demo finished after {n} poll cycles", flush=True)
                daemon.request_stop()
                return
            # polls that ran while the outbox drained may have completed the cycle again:
            # only those that start after this step count towards the next one
            seen.clear()
            cycle_done.clear()
            stepped_at = loop.time()
            step = sim.step()
            if n == 1:
                print("--- baseline stored; the simulated shops start to change", flush=True)
            header = f"--- step {step}: the simulated shops changed; alerts follow"

    task = asyncio.create_task(stepper())
    try:
        return await daemon.run()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.close()
        if tmpdir is not None:
            tmpdir.cleanup()


def _with_interval(cfg: Config, seconds: float) -> Config:
    """The demo's --interval overrides the bundled config's poll interval."""
    from dataclasses import replace
    from datetime import timedelta

    every = timedelta(seconds=max(1, round(seconds)))
    watches = {k: replace(w, every=every, cron=None) for k, w in cfg.watches.items()}
    return replace(cfg, watches=watches)


# ---------------------------------------------------------------- status, history, alerts


def _status(cfg: Config, db: str | None, *, as_json: bool) -> int:
    """Read-only: no database is created or migrated, no instance registered."""
    import json

    from .report import open_to_read, status_report
    from .status import report_json, report_table

    store = open_to_read(db)
    try:
        report = status_report(store, cfg)
    finally:
        store.close()
    print(json.dumps(report_json(report), indent=2) if as_json else report_table(report))
    return EXIT_OK


def _history(
    db: str | None, product_id: str, *, png: str | None = None, config: str | None = None
) -> int:
    from .store import Store

    types = {w.id: w.type for w in _load(config).watches.values()} if config else {}

    store = Store(db, must_exist=True)
    record = store.product_record(product_id)
    if not record.points:
        print(f"watcher: no history for product {product_id}", file=sys.stderr)
        return EXIT_FAILURE
    if png:
        from .chart import render_history_chart

        Path(png).write_bytes(render_history_chart(record))
        print(f"wrote {png} ({len(record.points)} recorded changes)")
        return EXIT_OK
    from .historyview import history_table

    print(history_table(record, types))
    return EXIT_OK


def _alerts(db: str | None, *, failed: bool, limit: int) -> int:
    from .store import Store

    store = Store(db, must_exist=True)
    rows = store.recent_alerts(limit=limit, failed=failed)
    if not rows:  # say so, rather than print nothing
        print("no failed deliveries" if failed else "no alerts yet")
        return EXIT_OK
    for alert, deliveries in rows:
        states = ", ".join(
            f"{d.channel}{':' + d.target if d.target else ''}={d.status}"
            + (
                f" ({d.attempts} attempts: {d.last_error})"
                if d.status != "sent" and d.last_error
                else ""
            )
            for d in deliveries
        )
        print(
            f"{alert.detected_at:%Y-%m-%d %H:%M:%S} {alert.alert_id[:12]} [{alert.kind}] "
            f"{alert.rule_id or '-'} {alert.watch_id or '-'} "
            f"{alert.product.id if alert.product else ''} → {states or 'no channel'}"
        )
    return EXIT_OK


def _db(db: str | None, action: str) -> int:
    """Every command upgrades on start; ``db upgrade`` does it alone (before a deploy),
    ``db current`` only looks."""
    from sqlalchemy import make_url

    from .store import Store, schema

    store = Store(db, must_exist=action == "current", migrate=False)
    try:
        shown = make_url(store.url).render_as_string(hide_password=True)
        if action == "current":
            state = schema.current(store.engine)
            schema.check_known(state.current)
            if state.up_to_date:
                print(f"{shown}: schema {state.current} (up to date)")
            else:
                print(
                    f"{shown}: schema {state.current or 'none'}, this watcher's is "
                    f"{state.head}; `watcher db upgrade` (or any command) migrates it"
                )
            return EXIT_OK
        before, after = schema.upgrade(store.engine)
        if before.current == after.current:
            print(f"{shown}: schema {after.current} (up to date)")
        else:
            adopted = " (adopted a database made before migrations)" if after.adopted else ""
            print(
                f"{shown}: upgraded schema {before.current or 'none'} → {after.current}{adopted}"
            )
        return EXIT_OK
    finally:
        store.close()


if __name__ == "__main__":
    raise SystemExit(main())
