"""Personal targets: a chat's ``/track`` of one product (``below`` a price or a ``drop`` of a
percentage), on the watch that covers it.

``target`` and the prices are Decimal text, as everywhere; ``reference`` is the price a
drop is measured from, ``alerted_price`` and ``alerted_at`` those of the track's last alert
(its cooldown). One track per (channel, chat, product, kind): a second ``/track`` replaces
the first.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "track",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("product_id", sa.String(), nullable=False),
        sa.Column("watch_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("reference", sa.String(), nullable=True),
        sa.Column("alerted_price", sa.String(), nullable=True),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("channel", "chat_id", "product_id", "kind"),
        sqlite_autoincrement=True,  # ids are never reused: "track:<id>" names one target
    )
    op.create_index("ix_track_watch_product", "track", ["watch_id", "product_id"])
    op.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    op.drop_index("ix_track_watch_product", table_name="track")
    op.drop_table("track")
