"""``python -m watcher.simulator --port N``: serve the fake APIs until SIGTERM or SIGINT.

Prints ``listening on http://HOST:PORT`` (flushed) once the socket is bound, so a parent
process can wait for that line instead of sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from . import SCENARIOS, start_simulator
from .demo import DEFAULT_SEED


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m watcher.simulator",
        description="Local fake of the Social Fetch and KeyAPI endpoints watcher uses.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--scenario", default="demo", choices=sorted(SCENARIOS))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--page-size", type=int, default=10, help="Social Fetch page size")
    parser.add_argument(
        "--step-every", type=float, default=None, help="advance the world every N seconds"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run until a stop signal; the world steps only via POST /_sim/step or --step-every."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_simulator(
        args.host,
        args.port,
        scenario=args.scenario,
        page_size=args.page_size,
        seed=args.seed,
        step_every=args.step_every,
    )
    print(f"listening on {running.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await running.close()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
