"""Prometheus metrics for the daemon, on a registry of its own (so tests can build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    """The counters an operator graphs: polls, failures, alerts, deliveries, credits."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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

    def delivery(self, channel: str, outcome: str, n: int = 1) -> None:
        self.deliveries.labels(channel=channel, outcome=outcome).inc(n)

    def credit(self, provider: str, n: int) -> None:
        self.credits.labels(provider=provider).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
