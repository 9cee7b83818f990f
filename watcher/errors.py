"""The small typed error hierarchy: each error says whether trying again can help."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in the config file, located for the user."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class WatcherError(Exception):
    """Base of every error watcher raises on purpose."""


class ConfigError(WatcherError):
    """The config file is invalid; carries every issue found, not only the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class FetchError(WatcherError):
    """An upstream page could not be read.

    ``retryable`` tells the client's retry loop whether another attempt may help;
    ``status`` is the HTTP (or KeyAPI body) status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id


class PaymentRequired(FetchError):
    """402: the provider account is out of credits; the provider is paused, not retried."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message, retryable=False, status=402, request_id=request_id)


class ProviderUnavailable(WatcherError):
    """A poll was skipped because its provider is paused (402) or over its daily budget.

    Not a watch failure (spec section 9).
    """


class DeliveryError(WatcherError):
    """A channel could not deliver; ``retryable`` False marks the delivery dead at once."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ChatGone(DeliveryError):
    """The chat refused the bot for good (blocked, kicked): final; the dispatcher forgets
    the chat (its subscriptions and mute) through the store."""

    def __init__(self, message: str, *, chat_id: int) -> None:
        super().__init__(message, retryable=False)
        self.chat_id = chat_id


class ChatMoved(DeliveryError):
    """The chat has a new id (a group became a supergroup): the dispatcher moves the chat's
    subscriptions and pending deliveries to ``new_id`` and sends there at once."""

    def __init__(self, message: str, *, old_id: int, new_id: int) -> None:
        super().__init__(message, retryable=True)
        self.old_id = old_id
        self.new_id = new_id
