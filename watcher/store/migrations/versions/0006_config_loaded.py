"""When each daemon loaded the config it runs (``watcher run`` reloads it on SIGHUP), so
``watcher status`` and the bot's /status can tell an operator whether a reload took.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.add_column(sa.Column("config_loaded_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("config_loaded_at")
