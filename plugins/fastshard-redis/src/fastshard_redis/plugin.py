"""Registers :class:`fastshard_redis.backend.RedisBackend` under the name ``redis``."""

from __future__ import annotations

from fastshard.backends import hookimpl
from fastshard.backends.base import Backend
from fastshard_redis.backend import RedisBackend


@hookimpl
def fastshard_backends() -> list[type[Backend]]:
    return [RedisBackend]
