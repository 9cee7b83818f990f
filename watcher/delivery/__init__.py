"""The outbox drain's pure stages: ``plan`` (hold, group) and ``policy`` (retry or dead).

``watcher.dispatch`` is the thin I/O loop around them: claim → plan → send → apply outcomes.
"""
