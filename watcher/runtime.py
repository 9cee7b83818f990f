"""Wires one process together: store, credit meter, provider clients, pipeline, channels.

``watcher once``, ``watcher demo`` and the daemon share it, so each long-lived resource
(one aiohttp session per provider, one per webhook) exists once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import logs
from .channels import Channel, build_channels, channel_type
from .config import ChannelConfig, Config, ProviderConfig
from .dispatch import Dispatcher
from .pipeline import CreditMeter, Pipeline, PollOutcome
from .sources.client import ProviderClient
from .store import Store

if TYPE_CHECKING:  # prometheus-client only where metrics are served (the daemon)
    from .metrics import Metrics

log = logging.getLogger("watcher.runtime")

BOT_KEYS = ("token", "base_url", "timeout")  # what a channel's bot client is built from


def _same(a: object, b: object) -> bool:
    """Equal but for where in the file it was defined."""
    if hasattr(a, "line") and hasattr(b, "line"):
        return replace(a, line=0) == replace(b, line=0)  # type: ignore[type-var]
    return a == b


def _delta(old: Mapping[str, object], new: Mapping[str, object]) -> tuple[tuple[str, ...], ...]:
    """(added, removed, changed) ids, each in the new (or old) file's order."""
    added = tuple(k for k in new if k not in old)
    removed = tuple(k for k in old if k not in new)
    changed = tuple(k for k in new if k in old and not _same(old[k], new[k]))
    return added, removed, changed


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    """What a reloaded config changes, by id. ``changed`` watches are any whose keys
    differ; of those, ``redefined`` start a new baseline (url, handle, query, region…:
    ``WatchConfig.definition``) and ``rescheduled`` have a new ``every`` or ``cron``."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    redefined: tuple[str, ...] = ()
    rescheduled: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()  # added, removed or changed
    channels_added: tuple[str, ...] = ()
    channels_removed: tuple[str, ...] = ()
    channels_changed: tuple[str, ...] = ()
    providers_added: tuple[str, ...] = ()
    providers_removed: tuple[str, ...] = ()
    providers_changed: tuple[str, ...] = ()
    other: tuple[str, ...] = ()  # top-level settings (retention…)

    @classmethod
    def between(cls, old: Config, new: Config) -> ConfigChanges:
        added, removed, changed = _delta(old.watches, new.watches)
        r_added, r_removed, r_changed = _delta(old.rules, new.rules)
        c_added, c_removed, c_changed = _delta(old.channels, new.channels)
        p_added, p_removed, p_changed = _delta(old.providers, new.providers)
        ow, nw = old.watches, new.watches
        return cls(
            added=added,
            removed=removed,
            changed=changed,
            redefined=tuple(w for w in changed if ow[w].definition() != nw[w].definition()),
            rescheduled=tuple(
                w for w in changed if (ow[w].every, ow[w].cron) != (nw[w].every, nw[w].cron)
            ),
            rules=(*r_added, *r_removed, *r_changed),
            channels_added=c_added,
            channels_removed=c_removed,
            channels_changed=c_changed,
            providers_added=p_added,
            providers_removed=p_removed,
            providers_changed=p_changed,
            other=tuple(
                f.name
                for f in fields(new)
                if f.name not in ("path", "providers", "channels", "watches", "rules")
                and getattr(old, f.name) != getattr(new, f.name)
            ),
        )


@dataclass
class Retired:
    """What a reload replaced: to be closed once nothing uses it."""

    clients: list[ProviderClient] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)


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

        self._metrics = metrics
        self.clients = {name: self._client(pcfg) for name, pcfg in config.providers.items()}
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

    def _client(self, pcfg: ProviderConfig) -> ProviderClient:
        def on_credits(provider: str, credits: int) -> None:
            self.meter.record(provider, credits)
            if self._metrics is not None:
                self._metrics.credit(provider, credits)

        name = pcfg.name
        return ProviderClient(
            pcfg, on_credits=on_credits, credits_left=lambda: self.meter.left(name)
        )

    async def reconfigure(
        self, config: Config, changes: ConfigChanges, *, share: int | None = None
    ) -> Retired:
        """Apply a reloaded config (``watcher run``'s SIGHUP): the pipeline's watches and
        rules, the providers' clients, the channels. What is new is built first, so a
        failure there changes nothing. Returns what it replaced, for the caller to close
        once nothing uses it (polls in flight, a bot on a channel). ``share``: the instances
        alive in a cluster, whose share of the limits a new client takes before it serves."""
        clients: dict[str, ProviderClient] = {}
        built: dict[str, Channel] = {}
        in_place: dict[str, ChannelConfig] = {}
        current = self.dispatcher.channels
        try:
            for name in (*changes.providers_added, *changes.providers_changed):
                clients[name] = self._client(config.providers[name])
                if share is not None:
                    clients[name].set_share(share)
            for cid in (*changes.channels_added, *changes.channels_changed):
                old, new = current.get(cid), config.channels[cid]
                if (
                    old is not None
                    and old.config.type == new.type
                    and channel_type(new.type).has_bot
                ):
                    in_place[cid] = self._keep_bot(old.config, new)
                elif (factory := channel_type(new.type).factory) is not None:
                    built[cid] = factory(new)
        except BaseException:
            for channel in built.values():
                with contextlib.suppress(Exception):
                    await channel.close()
            for client in clients.values():
                await client.close()
            raise
        retired = Retired()
        for name in (*changes.providers_changed, *changes.providers_removed):
            retired.clients.append(self.clients.pop(name))
        self.clients.update(clients)  # the pipeline's sources: the same mapping
        self.meter.set_budgets({n: p.daily_credit_budget for n, p in config.providers.items()})
        self.pipeline.reconfigure(
            config,
            watches=(*changes.changed, *changes.removed),
            providers=changes.providers_changed,
        )
        channels = dict(current)
        for cid in changes.channels_removed:
            if cid in channels:
                retired.channels.append(channels.pop(cid))
        for cid, settings in in_place.items():
            channels[cid].config = settings
        for cid, channel in built.items():
            if cid in channels:
                retired.channels.append(channels[cid])
            channels[cid] = channel
        await self.dispatcher.replace_channels(channels)
        self.config = config
        return retired

    @staticmethod
    def _keep_bot(old: ChannelConfig, new: ChannelConfig) -> ChannelConfig:
        """A channel with a bot keeps its client (token, Bot API, timeout): its command
        service polls through it; only a restart changes those. The rest reloads."""
        if all(getattr(old, k) == getattr(new, k) for k in BOT_KEYS):
            return new
        logs.event(
            log,
            "restart_needed",
            logging.WARNING,
            channel=new.id,
            reason="telegram token, base_url or timeout changed",
        )
        return replace(new, **{k: getattr(old, k) for k in BOT_KEYS})

    async def poll_all(self, watch_ids: Sequence[str] | None = None) -> list[PollOutcome]:
        """Poll watches concurrently (the provider clients bound concurrency and rate)."""
        watches = [
            w for w in self.config.watches.values() if watch_ids is None or w.id in watch_ids
        ]
        return list(await asyncio.gather(*(self.pipeline.poll(w) for w in watches)))

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
