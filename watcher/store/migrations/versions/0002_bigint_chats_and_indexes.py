"""64-bit Telegram chat ids; indexes for the claim, the cooldown lookup and retention.

Supergroup and channel ids (-100…) do not fit PostgreSQL's INTEGER; SQLite's INTEGER is
already 64-bit. The cooldown lookup asks "last alert of (watch, product, rule)": its index
leads with the watch and product (the old one led with the rule and served nothing).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("subscription", "mute"):
            op.alter_column(table, "chat_id", type_=sa.BigInteger(), existing_type=sa.Integer())
    op.drop_index("ix_alert_rule_watch_product", table_name="alert")
    op.create_index(
        "ix_alert_cooldown", "alert", ["watch_id", "product_id", "rule_id", "detected_at"]
    )
    op.create_index("ix_alert_detected_at", "alert", ["detected_at"])
    op.create_index("ix_delivery_claim", "delivery", ["claim"])
    op.create_index("ix_history_at", "history", ["at"])
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    op.drop_index("ix_history_at", table_name="history")
    op.drop_index("ix_delivery_claim", table_name="delivery")
    op.drop_index("ix_alert_detected_at", table_name="alert")
    op.drop_index("ix_alert_cooldown", table_name="alert")
    op.create_index("ix_alert_rule_watch_product", "alert", ["rule_id", "watch_id", "product_id"])
    if op.get_bind().dialect.name == "postgresql":
        for table in ("subscription", "mute"):
            op.alter_column(table, "chat_id", type_=sa.Integer(), existing_type=sa.BigInteger())
