"""Telegram chats: subscriptions, mutes, and what follows a blocked bot or a migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from ..models import ChatSubscription
from ..util import as_utc, utcnow
from .tables import (
    DeliveryRow,
    Mute,
    Subscription,
)
from .tracks import forget_tracks, move_tracks


class ChatStore:
    """Chat methods of ``Store`` (it provides ``session``)."""

    session: Any

    # ------------------------------------------------------------ chats (Telegram)

    def subscribe(self, channel: str, chat_id: int, scope: str, name: str = "") -> bool:
        """Returns False when the chat already had that subscription."""
        with self.session() as s, s.begin():
            if s.get(Subscription, (channel, chat_id, scope, name)) is not None:
                return False
            s.add(
                Subscription(
                    channel=channel, chat_id=chat_id, scope=scope, name=name, created_at=utcnow()
                )
            )
            return True

    def unsubscribe(
        self, channel: str, chat_id: int, scope: str | None = None, name: str = ""
    ) -> int:
        """Remove one subscription, or every one of the chat when ``scope`` is None."""
        with self.session() as s, s.begin():
            q = delete(Subscription).where(Subscription.channel == channel)
            q = q.where(Subscription.chat_id == chat_id)
            if scope is not None:
                q = q.where(Subscription.scope == scope).where(Subscription.name == name)
            return s.connection().execute(q).rowcount

    def subscriptions(self, channel: str, chat_id: int) -> list[ChatSubscription]:
        with self.session() as s:
            rows = s.exec(
                select(Subscription)
                .where(Subscription.channel == channel)
                .where(Subscription.chat_id == chat_id)
                .order_by(Subscription.scope, Subscription.name)
            ).scalars()
            return [
                ChatSubscription(r.channel, r.chat_id, r.scope, r.name, r.created_at) for r in rows
            ]

    def subscribers(self, channel: str, rule_id: str | None, watch_id: str | None) -> list[int]:
        """Chats subscribed to this rule, this watch, or all."""
        with self.session() as s:
            rows = s.exec(
                select(Subscription.chat_id, Subscription.scope, Subscription.name).where(
                    Subscription.channel == channel
                )
            ).all()
        wanted = {("all", ""), ("rule", rule_id or ""), ("watch", watch_id or "")}
        return sorted({chat for chat, scope, name in rows if (scope, name) in wanted})

    def forget_chat(self, channel: str, chat_id: int) -> None:
        """The bot was blocked or removed: drop the chat's subscriptions, mute and tracks."""
        with self.session() as s, s.begin():
            conn = s.connection()
            conn.execute(
                delete(Subscription)
                .where(Subscription.channel == channel)
                .where(Subscription.chat_id == chat_id)
            )
            conn.execute(
                delete(Mute).where(Mute.channel == channel).where(Mute.chat_id == chat_id)
            )
            forget_tracks(conn, channel, chat_id)

    def migrate_chat(self, channel: str, old: int, new: int) -> None:
        """A group became a supergroup: its subscriptions, tracks and pending deliveries
        follow."""
        with self.session() as s, s.begin():
            for sub in list(
                s.exec(
                    select(Subscription)
                    .where(Subscription.channel == channel)
                    .where(Subscription.chat_id == old)
                ).scalars()
            ):
                if s.get(Subscription, (channel, new, sub.scope, sub.name)) is None:
                    s.add(
                        Subscription(
                            channel=channel,
                            chat_id=new,
                            scope=sub.scope,
                            name=sub.name,
                            created_at=sub.created_at,
                        )
                    )
                s.delete(sub)
            move_tracks(s.connection(), channel, old, new)
            d = DeliveryRow.__table__
            s.connection().execute(
                update(d)
                .where(d.c.channel == channel)
                .where(d.c.target == str(old))
                .where(d.c.status == "pending")
                .values(target=str(new))
            )

    def set_mute(
        self, channel: str, chat_id: int, until: datetime | None, now: datetime | None = None
    ) -> None:
        """Mute a chat until ``until``, or end its mute (None).

        Alerts already held for the chat come due when the new mute ends (or now): a
        shortened or ended mute never leaves them waiting for the old end.
        """
        release = as_utc(until) if until is not None else as_utc(now or utcnow())
        with self.session() as s, s.begin():
            row = s.get(Mute, (channel, chat_id))
            if until is None:
                if row is not None:
                    s.delete(row)
            else:
                row = row or Mute(channel=channel, chat_id=chat_id, until=release)
                row.until = release
                s.add(row)
            d = DeliveryRow.__table__.c
            s.connection().execute(
                update(DeliveryRow.__table__)
                .where(d.channel == channel)
                .where(d.target == str(chat_id))
                .where(d.status == "pending")
                .where(d.held.is_(True))
                .where(d.next_attempt_at > release)
                .values(next_attempt_at=release)
            )

    def mutes(self, channel: str | None = None) -> dict[tuple[str, int], datetime]:
        with self.session() as s:
            q = select(Mute)
            if channel is not None:
                q = q.where(Mute.channel == channel)
            return {(m.channel, m.chat_id): m.until for m in s.exec(q).scalars()}
