"""Registers :class:`fastshard_postgres.backend.PostgresBackend` under the name ``postgres``."""

from __future__ import annotations

from fastshard.backends import hookimpl
from fastshard.backends.base import Backend
from fastshard_postgres.backend import PostgresBackend


@hookimpl
def fastshard_backends() -> list[type[Backend]]:
    return [PostgresBackend]
