"""fastshard backend on SQLite (key-value, counters, leases) — the plugin guide's example."""

from fastshard_sqlite.backend import SqliteBackend

__all__ = ["SqliteBackend"]
