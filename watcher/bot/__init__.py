"""Telegram commands (spec section 7): ``service`` runs the bot, ``commands`` answers,
``format`` writes the replies."""

from ..status import WatchStatus
from .format import parse_duration, usage
from .service import BotService, BotStartError

__all__ = ["BotService", "BotStartError", "WatchStatus", "parse_duration", "usage"]
