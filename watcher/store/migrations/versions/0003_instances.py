"""Instances: each process that claims deliveries, and when it last said it was alive.

A claim names its instance; a claim whose instance stopped renewing its heartbeat is handed
back. PIDs and host names cannot tell: in a container the daemon is PID 1 after every
restart, and two containers may share a host name and a database.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    op.drop_table("instance")
