"""Prometheus metrics for the daemon, on a registry of its own (so tests can build several).

In a cluster each instance serves its own ``/metrics``: every sample then carries the
instance's id as an ``instance`` label (so series from several instances never merge, whatever
the scraper's own labels), and ``watcher_instance_info{instance,host,cluster} 1`` names it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric


class _Labelled:
    """Every family of ``registry`` with ``labels`` added to each sample, at collect time
    (so no counter has to declare them)."""

    def __init__(self, registry: CollectorRegistry, labels: Mapping[str, str]) -> None:
        self._registry = registry
        self._labels = dict(labels)

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [
                sample._replace(labels={**sample.labels, **self._labels})
                for sample in family.samples
            ]
            yield out


class Metrics:
    """The counters an operator graphs: polls, failures, alerts, deliveries, credits.

    Args:
        instance: this instance's id in a cluster; None (one daemon alone) leaves every
            sample without an ``instance`` label and adds no info gauge, as before.
        host: shown on ``watcher_instance_info`` (default: this machine's name).
        cluster: whether the instance runs in cluster mode (the info gauge's ``cluster``
            label, ``true``/``false``).
    """

    def __init__(
        self, instance: str | None = None, host: str | None = None, *, cluster: bool = False
    ) -> None:
        self.instance = instance
        self.registry = CollectorRegistry()  # the counters, without the instance label
        r = self.registry
        self.polls = Counter(
            "watcher_polls", "Polls by watch and outcome", ["watch", "status"], registry=r
        )
        self.poll_failures = Counter(
            "watcher_poll_failures",
            "Polls that failed (a page failed after retries)",
            ["watch"],
            registry=r,
        )
        self.alerts = Counter(
            "watcher_alerts",
            "Alerts and notices stored, by rule and kind",
            ["rule", "kind"],
            registry=r,
        )
        self.deliveries = Counter(
            "watcher_deliveries",
            "Delivery attempts by channel and outcome (sent, retry, dead)",
            ["channel", "outcome"],
            registry=r,
        )
        self.credits = Counter(
            "watcher_credits", "Upstream credits spent, by provider", ["provider"], registry=r
        )
        self.poll_duration = Histogram(
            "watcher_poll_duration_seconds",
            "Wall time of one poll of one watch",
            ["watch"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self._exposed = r
        if instance is not None:
            self._exposed = CollectorRegistry()
            self._exposed.register(_Labelled(r, {"instance": instance}))
            Gauge(
                "watcher_instance_info",
                "This instance of a watcher cluster (always 1)",
                ["instance", "host", "cluster"],
                registry=self._exposed,
            ).labels(
                instance=instance,
                host=host or socket.gethostname(),
                cluster="true" if cluster else "false",
            ).set(1)

    def delivery(self, channel: str, outcome: str, n: int = 1) -> None:
        self.deliveries.labels(channel=channel, outcome=outcome).inc(n)

    def credit(self, provider: str, n: int) -> None:
        self.credits.labels(provider=provider).inc(n)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric, labelled with the instance."""
        return generate_latest(self._exposed)
