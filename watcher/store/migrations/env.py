"""Alembic's entry point: always handed an open connection by ``watcher.store.schema``.

The caller holds the migration lock in that connection's transaction, so the migrations run
inside it (``begin_transaction`` is then a no-op) and commit or roll back as one.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
