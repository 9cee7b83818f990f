"""Wires one process together: store, credit meter, provider clients, pipeline, channels.

``watcher once``, ``watcher demo`` and the daemon share it, so each long-lived resource
(one aiohttp session per provider, one per webhook) exists once per process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from . import logs
from .channels import build_channels
from .config import Config
from .dispatch import Dispatcher
from .pipeline import CreditMeter, Pipeline, PollOutcome
from .sources.client import ProviderClient
from .store import Store

if TYPE_CHECKING:  # prometheus-client only where metrics are served (the daemon)
    from .metrics import Metrics

log = logging.getLogger("watcher.runtime")


class Runtime:
    def __init__(
        self,
        config: Config,
        db: str | None,
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        shared: bool = False,
        command: str | None = None,
        instance_id: str | None = None,
    ) -> None:
        """``command`` (run, once, demo) is recorded on this process's instance row."""
        self.config = config
        self.store = Store(db, instance_id=instance_id)
        self.meter = CreditMeter(
            self.store, {n: p.daily_credit_budget for n, p in config.providers.items()}
        )

        def on_credits(provider: str, credits: int) -> None:
            self.meter.record(provider, credits)
            if metrics is not None:
                metrics.credit(provider, credits)

        self.clients = {
            name: ProviderClient(
                pcfg,
                on_credits=on_credits,
                credits_left=lambda n=name: self.meter.left(n),
            )
            for name, pcfg in config.providers.items()
        }
        self.pipeline = Pipeline(
            config,
            self.store,
            self.clients,
            self.meter,
            dry_run=dry_run,
            subscribers=self.store.subscribers,  # chats that /subscribe'd get alerts too
            shared=shared,  # a cluster: other instances poll the same watches
        )
        self.dispatcher = Dispatcher(self.store, build_channels(config))
        self._registered = False
        if not dry_run:
            self.store.register_instance(command=command)
            self._registered = True
            # deliveries a crashed process had in hand are due again right away
            self.store.release_dead_claims()

    async def poll_all(
        self, watch_ids: Sequence[str] | None = None, *, progress: TextIO | None = None
    ) -> list[PollOutcome]:
        """Poll watches concurrently (the provider clients bound concurrency and rate)."""
        watches = [
            w for w in self.config.watches.values() if watch_ids is None or w.id in watch_ids
        ]

        async def one(w) -> PollOutcome:
            outcome = await self.pipeline.poll(w)
            if progress is not None:
                print(outcome.summary(), file=progress, flush=True)
            return outcome

        return list(await asyncio.gather(*(one(w) for w in watches)))

    async def prune(self, budget: float | None = None, pause: float = 0.1) -> tuple[int, int]:
        """Retention (config ``retention``, ``history_retention``) in small batches, with a
        pause between them so polls and sends commit in between; stops after ``budget``
        seconds. Returns (alerts, history rows) deleted."""
        loop = asyncio.get_running_loop()
        deadline = None if budget is None else loop.time() + budget
        alerts = history = 0
        while deadline is None or loop.time() < deadline:
            a, h = await asyncio.to_thread(
                self.store.prune_batch,
                datetime.now(UTC),
                self.config.retention,
                self.config.history_retention,
            )
            alerts, history = alerts + a, history + h
            if not (a or h):
                break
            await asyncio.sleep(pause)
        if alerts or history:
            logs.event(log, "pruned", alerts=alerts, history=history)
        return alerts, history

    async def close(self) -> None:
        await self.dispatcher.close()
        try:  # credits of polls cut short (a stop mid-cycle) are still recorded
            await asyncio.to_thread(self.meter.flush)
        except Exception as exc:
            logs.event(log, "credits_not_recorded", logging.WARNING, error=repr(exc))
        for client in self.clients.values():
            await client.close()
        if self._registered:
            try:
                await asyncio.to_thread(self.store.end_instance)
            except Exception as exc:  # the heartbeat stops anyway: others take over in 30 s
                logs.event(log, "instance_not_ended", logging.WARNING, error=repr(exc))
        self.store.close()
