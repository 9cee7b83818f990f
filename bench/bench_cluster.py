"""What one PostgreSQL takes of cluster mode's poll jobs (procrastinate 3.10), against a baseline.

The job pattern of the cluster scheduler: W watches, each a chain of jobs of task
``watcher.poll`` (kwarg ``watch_id``) in queue ``poll.<provider>`` with lock = queueing lock =
the watch id; each job, as it runs, defers the next one of its watch (here ``schedule_in`` 0,
so the chain runs as fast as the database lets it). K workers (K processes, as K instances)
of concurrency C run them with ``delete_jobs="successful"``. Optionally ``--idle`` jobs wait
scheduled a day ahead, deferred first (watches polled daily: rows the job fetch walks past).

The machines are shared and noisy, so each figure is a ratio to a baseline measured in the
same run (medians of ``--repeat`` interleaved runs): jobs/s of K workers / jobs/s of one; and
one job / one plain round trip on the same server (C connections, each ``INSERT ... RETURNING
id`` then ``UPDATE ... WHERE id``, each in its own transaction: the least a queued job can
cost) in wall time, commits, WAL bytes and server CPU (from /proc, when the server runs on
this machine). A second table defers each next job ``--interval`` seconds ahead, as the
scheduler does, and shows how late jobs start under each ``fetch_job_polling_interval``.
Needs an otherwise idle PostgreSQL (the commit and WAL counters are the server's):

    .ci/with-postgres bash -c '.venv/bin/python bench/bench_cluster.py'
    .venv/bin/python bench/bench_cluster.py --db postgresql://... [--watches 100,1000]
        [--workers 1,2,4] [--concurrency 8] [--idle 0,10000] [--repeat 3] [--seconds 5]
        [--task-ms 0] [--interval 10] [--polling 5,1]

Everything lives in a schema of its own (``--schema``, dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from procrastinate import App, JobContext, PsycopgConnector
from procrastinate.schema import SchemaManager

PROVIDERS = ("socialfetch", "keyapi")
TASK = "watcher.poll"


def conninfo(url: str) -> str:
    """libpq's form of a SQLAlchemy URL (``postgresql+psycopg://`` → ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def connect(info: str, schema: str) -> psycopg.Connection:
    return psycopg.connect(info, autocommit=True, options=f"-c search_path={schema}")


# ---------------------------------------------------------------- the worker process


def make_app(info: str, schema: str, concurrency: int) -> App:
    connector = PsycopgConnector(
        conninfo=info,
        min_size=1,
        max_size=concurrency + 3,  # the jobs' defers, the fetches, the listener
        kwargs={"options": f"-c search_path={schema}"},
    )
    return App(connector=connector)


async def work(args: argparse.Namespace) -> dict[str, Any]:
    """One instance: a worker running poll chains until ``t1``; how many jobs it finished."""
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # "App in __main__": known
    app = make_app(args.conninfo, args.schema, args.concurrency)
    counts: dict[str, Any] = {"window": 0, "total": 0, "lags": []}
    pause = args.task_ms / 1000

    @app.task(name=TASK, pass_context=True)
    async def poll(context: JobContext, watch_id: str) -> None:
        job = context.job
        started = time.time()
        if pause:
            await asyncio.sleep(pause)
        await poll.configure(
            lock=watch_id,
            queueing_lock=watch_id,
            queue=job.queue,
            schedule_in={"seconds": args.interval},
        ).defer_async(watch_id=watch_id)
        counts["total"] += 1
        if args.t0 <= started < args.t1:
            counts["window"] += 1
            if job.scheduled_at is not None:  # how late it started: the schedule's accuracy
                counts["lags"].append(started - job.scheduled_at.timestamp())

    async with app.open_async():
        print("ready", flush=True)  # the parent starts every worker at once: ``t0 t1`` back
        args.t0, args.t1 = map(float, (await asyncio.to_thread(sys.stdin.readline)).split())
        run = asyncio.create_task(
            app.run_worker_async(
                concurrency=args.concurrency,
                delete_jobs="successful",
                install_signal_handlers=False,
                shutdown_graceful_timeout=10,
                fetch_job_polling_interval=args.polling,
                name=f"bench-{os.getpid()}",
            )
        )
        await asyncio.sleep(max(0.0, args.t1 - time.time()))
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    counts["cpu"] = time.process_time()
    return counts


# ---------------------------------------------------------------- the parent


@dataclass(frozen=True)
class Cost:
    """What a run took: things done, seconds of the window, server commits and WAL bytes,
    CPU seconds of the clients and of the server (None when it is not on this machine)."""

    done: int  # jobs (or round trips) in the measured window
    seconds: float
    total: int  # in the whole run, which the server counters cover
    commits: int
    wal: int
    cpu: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    @property
    def commits_each(self) -> float:
        return self.commits / max(1, self.total)

    @property
    def wal_each(self) -> float:
        return self.wal / max(1, self.total)

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / max(1, self.total)

    @property
    def server_ms(self) -> float | None:
        return None if self.server_cpu is None else 1000 * self.server_cpu / max(1, self.total)


class Server:
    """The counters of the server and the bench schema, read on a connection of its own."""

    def __init__(self, info: str, schema: str) -> None:
        self.info, self.schema = info, schema
        self.con = connect(info, "public")
        self.pid = self.con.info.backend_pid

    def one(self, sql: str, *params: Any) -> Any:
        row = self.con.execute(sql, params).fetchone()
        assert row is not None
        return row[0]

    def counters(self) -> tuple[int, int, float | None]:
        """(commits of this database, WAL position in bytes, server CPU seconds), after the
        other sessions ended."""
        deadline = time.monotonic() + 30
        while self.others() and time.monotonic() < deadline:
            time.sleep(0.05)  # backends flush their statistics as they exit
        self.con.execute("SELECT pg_stat_clear_snapshot()")
        commits = self.one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        wal = self.one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        return int(commits), int(wal), self.settled_cpu()

    def settled_cpu(self) -> float | None:
        """``cpu`` once the postmaster has reaped the backends that just ended."""
        last, deadline = self.cpu(), time.monotonic() + 3
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.cpu()
            if now == last:
                break
            last = now
        return last

    def cpu(self) -> float | None:
        """CPU seconds of the postmaster and its ended children (the backends of sessions that
        closed, autovacuum), from /proc when the server runs on this machine."""
        try:
            ppid = int(proc_stat(self.pid)[1])  # our backend's parent: the postmaster
            fields = proc_stat(ppid)
        except (OSError, ValueError, IndexError):
            return None
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def others(self) -> int:
        return int(
            self.one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND datname = current_database() AND pid <> %s",
                self.pid,
            )
        )

    def setup(self) -> None:
        with connect(self.info, "public") as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            con.execute(f'CREATE SCHEMA "{self.schema}"')
        with connect(self.info, self.schema) as con:
            con.execute(SchemaManager.get_schema())  # what revision 0004 applies
            con.execute(
                "CREATE TABLE bench_plain (id bigserial PRIMARY KEY, watch text NOT NULL, "
                "status text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
            )

    def drop(self) -> None:
        with connect(self.info, "public") as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        self.con.close()

    def seed(self, watches: int, idle: int, spread: float = 0) -> None:
        """Empty queue; ``idle`` jobs a day ahead first, then one job per watch, due now or
        spread evenly over the next ``spread`` seconds."""
        with connect(self.info, self.schema) as con:
            con.execute(
                "TRUNCATE procrastinate_events, procrastinate_periodic_defers, "
                "procrastinate_jobs, procrastinate_workers RESTART IDENTITY CASCADE"
            )
            insert = (
                "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, "
                "queueing_lock, args, scheduled_at) "
                "SELECT 'poll.' || (ARRAY[%s, %s])[1 + i %% 2], %s, 0, w, w, "
                "jsonb_build_object('watch_id', w), now() + (%s + %s * i) * interval '1 second' "
                "FROM generate_series(0, %s - 1) AS i, LATERAL (SELECT %s || i AS w) AS n"
            )
            con.execute(insert, (*PROVIDERS, TASK, 86400, 0, idle, "idle-"))
            con.execute(insert, (*PROVIDERS, TASK, 0, spread / max(1, watches), watches, "watch-"))
            con.execute("VACUUM ANALYZE procrastinate_jobs")

    def left(self) -> dict[str, int]:
        """Rows and bytes the run left in the job tables."""
        with connect(self.info, self.schema) as con:

            def one(sql: str) -> int:
                row = con.execute(sql).fetchone()
                assert row is not None
                return int(row[0])

            return {
                "jobs": one("SELECT count(*) FROM procrastinate_jobs"),
                "events": one("SELECT count(*) FROM procrastinate_events"),
                "bytes": one(
                    "SELECT pg_total_relation_size('procrastinate_jobs') "
                    "+ pg_total_relation_size('procrastinate_events')"
                ),
            }


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state, ppid, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def run_workers(
    server: Server,
    args: argparse.Namespace,
    watches: int,
    idle: int,
    workers: int,
    interval: float = 0,
    polling: float = 5.0,
) -> tuple[Cost, dict[str, int], list[float]]:
    """One run of ``workers`` processes; its cost, what it left, and how late jobs started."""
    seconds = max(args.seconds, 2 * interval, 2 * polling) if interval else args.seconds
    server.seed(watches, idle, spread=interval)
    commits0, wal0, cpu0 = server.counters()
    cmd = [
        sys.executable, __file__, "--worker", "--db", server.info, "--schema", server.schema,
        "--concurrency", str(args.concurrency), "--task-ms", str(args.task_ms),
        "--interval", repr(interval), "--polling", repr(polling),
    ]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", "worker failed"
    t0 = time.time() + args.warmup
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{t0!r} {t0 + seconds!r}\n")
        p.stdin.flush()
    outs = [
        json.loads(p.communicate(timeout=seconds + args.warmup + 60)[0].splitlines()[-1])
        for p in procs
    ]
    if any(p.returncode for p in procs):
        raise SystemExit("a worker process failed")
    commits1, wal1, cpu1 = server.counters()
    cost = Cost(
        done=int(sum(o["window"] for o in outs)),
        seconds=seconds,
        total=int(sum(o["total"] for o in outs)),
        commits=commits1 - commits0,
        wal=wal1 - wal0,
        cpu=sum(o["cpu"] for o in outs),
        server_cpu=delta(cpu1, cpu0),
    )
    return cost, server.left(), sorted(lag for o in outs for lag in o["lags"])


def median_cost(costs: list[Cost]) -> Cost:
    """Each figure's median over repeated runs."""
    cpus = [c.server_cpu for c in costs]
    return Cost(
        done=round(statistics.median(c.done for c in costs)),
        seconds=costs[0].seconds,
        total=round(statistics.median(c.total for c in costs)),
        commits=round(statistics.median(c.commits for c in costs)),
        wal=round(statistics.median(c.wal for c in costs)),
        cpu=statistics.median(c.cpu for c in costs),
        server_cpu=None if None in cpus else statistics.median(c for c in cpus if c is not None),
    )


async def round_trips(info: str, schema: str, connections: int, t0: float, t1: float) -> list[int]:
    """C connections, each an INSERT then an UPDATE of that row, as fast as they go."""

    async def one(n: int) -> tuple[int, int]:
        window = total = 0
        async with await psycopg.AsyncConnection.connect(
            info, autocommit=True, options=f"-c search_path={schema}"
        ) as con:
            while time.time() < t1:
                cur = await con.execute(
                    "INSERT INTO bench_plain (watch, status) VALUES (%s, 'todo') RETURNING id",
                    (f"watch-{n}",),
                )
                row = await cur.fetchone()
                assert row is not None
                await con.execute("UPDATE bench_plain SET status = 'done' WHERE id = %s", row)
                total += 1
                window += t0 <= time.time() < t1
        return window, total

    done = await asyncio.gather(*(one(n) for n in range(connections)))
    return [sum(w for w, _ in done), sum(t for _, t in done)]


def baseline(server: Server, args: argparse.Namespace) -> Cost:
    commits0, wal0, cpu0 = server.counters()
    t0 = time.time() + min(args.warmup, 1.0)
    t1 = t0 + args.seconds
    cpu = time.process_time()
    window, total = asyncio.run(round_trips(server.info, server.schema, args.concurrency, t0, t1))
    cpu = time.process_time() - cpu
    commits1, wal1, cpu1 = server.counters()
    return Cost(
        window, args.seconds, total, commits1 - commits0, wal1 - wal0, cpu, delta(cpu1, cpu0)
    )


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def over(value: float | None, base: float | None) -> str:
    return "n/a" if value is None or not base else f"{value / base:.2f}"


HEADER = (
    "| watches | idle | workers | jobs/s | ÷ 1 worker | time ÷ base | commits/job | ÷ base "
    "| WAL B/job | ÷ base | server CPU ms/job | ÷ base | worker CPU ms/job "
    "| rows left jobs/events | bytes left |\n" + "|---" * 15 + "|"
)


def row(
    watches: int, idle: int, workers: int, cost: Cost, one: Cost, base: Cost, left: dict
) -> str:
    """One line of the table: a run's figures, each beside its ratio."""
    return (
        f"| {watches} | {idle} | {workers} | {cost.rate:,.0f} | {over(cost.rate, one.rate)} "
        f"| {over(base.rate, cost.rate)} "
        f"| {cost.commits_each:.2f} | {over(cost.commits_each, base.commits_each)} "
        f"| {cost.wal_each:,.0f} | {over(cost.wal_each, base.wal_each)} "
        f"| {ms(cost.server_ms)} | {over(cost.server_ms, base.server_ms)} | {cost.cpu_ms:.2f} "
        f"| {left['jobs']}/{left['events']} | {left['bytes']:,} |"
    )


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def throughput(server: Server, args: argparse.Namespace, base: Cost) -> None:
    """Table 1: chains as fast as they go; each figure the median of ``--repeat`` runs,
    the worker counts interleaved (1, 2, 4, 1, 2, 4, ...) so that noise spreads evenly."""
    print(HEADER)
    for idle in args.idle:
        for watches in args.watches:
            runs: dict[int, list[Cost]] = {k: [] for k in args.workers}
            left: dict[int, dict[str, int]] = {}
            for _ in range(args.repeat):
                for workers in args.workers:
                    cost, left[workers], _ = run_workers(server, args, watches, idle, workers)
                    runs[workers].append(cost)
            one = median_cost(runs[args.workers[0]])
            for workers in args.workers:
                cost = median_cost(runs[workers])
                print(row(watches, idle, workers, cost, one, base, left[workers]), flush=True)


def lateness(server: Server, args: argparse.Namespace) -> None:
    """Table 2: each job defers the next for ``interval`` seconds, as the scheduler does; how
    late jobs start after their ``scheduled_at`` (a worker learns of a due job by polling)."""
    print(
        "\n| watches | interval s | polling s | workers | due jobs/s | started jobs/s "
        "| late s: median | p95 | max |\n" + "|---" * 9 + "|"
    )
    for interval, polling, watches, workers in itertools.product(
        args.interval, args.polling, args.watches, args.workers
    ):
        cost, _, lags = run_workers(server, args, watches, 0, workers, interval, polling)
        pick = lags or [float("nan")]
        print(
            f"| {watches} | {interval:g} | {polling:g} | {workers} | {watches / interval:,.1f} "
            f"| {cost.rate:,.1f} | {statistics.median(pick):.2f} "
            f"| {pick[int(0.95 * (len(pick) - 1))]:.2f} | {pick[-1]:.2f} |",
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=os.environ.get("WATCHER_TEST_DB"))
    ap.add_argument("--schema", default="bench_cluster")
    ap.add_argument("--watches", type=ints, default=[100, 1000])
    ap.add_argument("--workers", type=ints, default=[1, 2, 4])
    ap.add_argument("--idle", type=ints, default=[0, 10_000])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each throughput figure")
    ap.add_argument("--concurrency", type=int, default=8, help="jobs at once per worker")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured window of each run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before the window")
    ap.add_argument("--task-ms", type=float, default=0.0, help="each job sleeps this long")
    ap.add_argument(
        "--interval", type=floats, default=[10.0], help="poll intervals of the lateness table"
    )
    ap.add_argument(
        "--polling",
        type=floats,
        default=[5.0, 1.0],
        help="fetch_job_polling_interval of the lateness table (procrastinate's default 5)",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.db:
        ap.error("a PostgreSQL URL: --db, or WATCHER_TEST_DB (.ci/with-postgres sets it)")
    args.conninfo = conninfo(args.db)
    if args.worker:
        args.interval, args.polling = args.interval[0], args.polling[0]
        print(json.dumps(asyncio.run(work(args))))
        return 0

    server = Server(args.conninfo, args.schema)
    print(
        f"PostgreSQL {server.one('SHOW server_version')}, {os.cpu_count()} CPUs; workers of "
        f"concurrency {args.concurrency}, jobs of {args.task_ms:g} ms, {args.seconds:g} s windows"
    )
    server.setup()
    try:
        base = baseline(server, args)
        print(
            f"baseline INSERT+UPDATE x{args.concurrency} connections: {base.rate:,.0f}/s, "
            f"{base.commits_each:.2f} commits, {base.wal_each:,.0f} WAL bytes, "
            f"{ms(base.server_ms)} ms server CPU and {ms(base.cpu_ms)} ms client CPU each"
        )
        throughput(server, args, base)
        if args.interval:
            lateness(server, args)
    finally:
        server.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
