"""``watcher run``: scheduling (``schedule``), health and metrics over HTTP (``http``), and
the lifecycle that ties them to the runtime, the bots and the delivery loop (``lifecycle``)."""

from .http import HealthServer
from .lifecycle import Daemon, Notifier
from .schedule import GridTrigger, PollJobs, phase_of, trigger_for

__all__ = [
    "Daemon",
    "GridTrigger",
    "HealthServer",
    "Notifier",
    "PollJobs",
    "phase_of",
    "trigger_for",
]
