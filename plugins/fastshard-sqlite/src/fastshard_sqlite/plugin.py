"""Registers the SQLite backend with fastshard's plugin manager."""

from fastshard.backends import hookimpl
from fastshard_sqlite.backend import SqliteBackend


@hookimpl
def fastshard_backends():
    return [SqliteBackend]
