"""Registers the Cassandra backend with fastshard (entry point ``fastshard: cassandra``)."""

from __future__ import annotations

from fastshard.backends import hookimpl
from fastshard_cassandra.backend import CassandraBackend


@hookimpl
def fastshard_backends() -> list[type[CassandraBackend]]:
    return [CassandraBackend]
