"""Polling: one poll of one watch, fetch → decide → commit (``poll.Pipeline``).

``decision`` is the pure half (health step, diff, the state to write), ``commit`` the
writing half, ``credits`` the credit meter, ``routing`` who receives an alert.
"""

from __future__ import annotations

from ..health import PAUSE_ON_402
from ..routing import Subscribers, route
from .credits import CreditMeter
from .decision import definition_hash
from .outcome import PollOutcome, notice
from .pauses import PROVIDER_STATE_TTL
from .poll import POLLS_PER_REQUEST_SLOT, Pipeline, Source

__all__ = [
    "PAUSE_ON_402",
    "POLLS_PER_REQUEST_SLOT",
    "PROVIDER_STATE_TTL",
    "CreditMeter",
    "Pipeline",
    "PollOutcome",
    "Source",
    "Subscribers",
    "definition_hash",
    "notice",
    "route",
]
