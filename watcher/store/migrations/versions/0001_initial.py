"""The schema as watcher created it before Alembic (meta.schema_version 1).

A database made by that watcher has these tables and no alembic_version: it is stamped with
this revision, not created again. Frozen: never edit, add a revision instead.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.String(), nullable=False),
    )
    op.create_table(
        "watch_state",
        sa.Column("watch_id", sa.String(), primary_key=True),
        sa.Column("def_hash", sa.String(), nullable=False),
        sa.Column("baseline_done", sa.Boolean(), nullable=False),
        sa.Column("baseline_partial", sa.Boolean(), nullable=False),
        sa.Column("baseline_seq", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failing_notified", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.String()),
        sa.Column("last_poll_at", TS),
        sa.Column("last_success_at", TS),
        sa.Column("empty_episode", sa.Boolean(), nullable=False),
        sa.Column("not_found_episode", sa.Boolean(), nullable=False),
        sa.Column("products", sa.Integer(), nullable=False),
    )
    op.create_table(
        "snapshot",
        sa.Column("watch_id", sa.String(), primary_key=True),
        sa.Column("product_id", sa.String(), primary_key=True),
        sa.Column("title", sa.String()),
        sa.Column("url", sa.String()),
        sa.Column("image_url", sa.String()),
        sa.Column("currency", sa.String()),
        sa.Column("price", sa.String()),
        sa.Column("original_price", sa.String()),
        sa.Column("discount_percent", sa.Integer()),
        sa.Column("sold", sa.Integer()),
        sa.Column("rating", sa.String()),
        sa.Column("reviews", sa.Integer()),
        sa.Column("rank", sa.Integer()),
        sa.Column("shop_id", sa.String()),
        sa.Column("shop_name", sa.String()),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS),
    )
    op.create_table(
        "history",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("watch_id", sa.String(), nullable=False),
        sa.Column("product_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("price", sa.String()),
        sa.Column("original_price", sa.String()),
        sa.Column("discount_percent", sa.Integer()),
        sa.Column("rank", sa.Integer()),
        sa.Column("sold", sa.Integer()),
        sa.Column("present", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_history_watch_product_at", "history", ["watch_id", "product_id", "at"])
    op.create_index("ix_history_product_at", "history", ["product_id", "at"])
    op.create_table(
        "alert",
        sa.Column("alert_id", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String()),
        sa.Column("watch_id", sa.String()),
        sa.Column("product_id", sa.String()),
        sa.Column("detected_at", TS, nullable=False),
        sa.Column("batch", sa.String(), nullable=False),
        sa.Column("payload", sa.String(), nullable=False),
    )
    op.create_index("ix_alert_rule_watch_product", "alert", ["rule_id", "watch_id", "product_id"])
    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("alert_id", sa.String(), sa.ForeignKey("alert.alert_id"), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("claim", sa.String()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.String()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS),
        sa.UniqueConstraint("alert_id", "channel", "target"),
    )
    op.create_index("ix_delivery_due", "delivery", ["status", "next_attempt_at"])
    op.create_table(
        "credit",
        sa.Column("provider", sa.String(), primary_key=True),
        sa.Column("day", sa.String(), primary_key=True),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
    )
    op.create_table(
        "subscription",
        sa.Column("channel", sa.String(), primary_key=True),
        sa.Column("chat_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("scope", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "mute",
        sa.Column("channel", sa.String(), primary_key=True),
        sa.Column("chat_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("until", TS, nullable=False),
    )
    op.create_table(
        "provider_state",
        sa.Column("provider", sa.String(), primary_key=True),
        sa.Column("paused_until", TS),
        sa.Column("pause_notified", sa.Boolean(), nullable=False),
    )
    op.bulk_insert(
        sa.table("meta", sa.column("key", sa.String()), sa.column("value", sa.String())),
        [{"key": "schema_version", "value": "1"}],
    )


def downgrade() -> None:
    for table in (
        "provider_state",
        "mute",
        "subscription",
        "credit",
        "delivery",
        "alert",
        "history",
        "snapshot",
        "watch_state",
        "meta",
    ):
        op.drop_table(table)
