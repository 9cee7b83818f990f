"""What one config key is: its value type, whether it must be present, its doc, its default.

The bottom layer, so that every definition (provider modules' watch types, rule kinds,
channel types) can declare its keys without importing the layers that read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Param:
    """One config key: its value type and whether it must be present.

    ``type`` is one of: str, handle (text; a leading @ is dropped), int, positive_int,
    positive_number, percent (int 0..100), decimal (non-negative Decimal from a string or
    number), duration (``15m``), bool, str_list, int_list, str_map, map, regex, region, cron,
    hhmm_range (``"23:00-07:00"``), timezone.
    """

    type: str
    required: bool = False
    doc: str = ""
    default: Any = None  # the value when the key is absent (rule kinds' parameters)
