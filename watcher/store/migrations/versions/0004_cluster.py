"""Cluster mode: what each instance is and does, the bot updates already answered, and the
job queue (procrastinate's schema, on PostgreSQL only) that shares the polls.

``instance.command`` tells a daemon (``run``) from a manual ``once``; ``instance.serves_bot``
marks the one instance that answers the Telegram bot; ``instance.poll_workers`` names its
job-queue workers, so the poll jobs of an instance known dead are retried at once.
``bot_update`` remembers each update a leader took, so a new leader after a failover never
answers one twice.

procrastinate's schema is the one of the version installed (pinned in pyproject); a newer
procrastinate ships migration SQL of its own, to be applied by a later revision here.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.add_column(sa.Column("command", sa.String(), nullable=True))
        batch.add_column(
            sa.Column("serves_bot", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("poll_workers", sa.String(), nullable=True))
    op.create_table(
        "bot_update",
        sa.Column("channel", sa.String(), primary_key=True),
        sa.Column("update_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_bot_update_handled_at", "bot_update", ["handled_at"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        exists = bind.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar()
        if exists is None:
            from procrastinate.schema import SchemaManager

            bind.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))
    op.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")


_DROP_PROCRASTINATE = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT tablename FROM pg_tables
             WHERE schemaname = current_schema() AND tablename LIKE 'procrastinate%' LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', r.tablename);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%' LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', r.f);
    END LOOP;
    FOR r IN SELECT t.typname FROM pg_type t
             JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate%'
               AND t.typtype IN ('e', 'c') LOOP
        EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', r.typname);
    END LOOP;
END $$;
"""


def downgrade() -> None:
    op.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_DROP_PROCRASTINATE.replace("%", "%%"))
    op.drop_index("ix_bot_update_handled_at", table_name="bot_update")
    op.drop_table("bot_update")
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("poll_workers")
        batch.drop_column("serves_bot")
        batch.drop_column("command")
