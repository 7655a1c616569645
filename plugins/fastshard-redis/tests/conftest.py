"""Fixtures: a RedisBackend in a namespace of its own, dropped after each test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest

from fastshard.testing.servers import require_server
from fastshard_redis import RedisBackend
from fastshard_redis.testing import backends_in_fresh_namespace, unreachable

REDIS_URL = os.environ.get("FASTSHARD_REDIS_URL", "redis://127.0.0.1:6379/0")


def _require_redis() -> None:
    u = urlparse(REDIS_URL)
    require_server("Redis", u.hostname or "127.0.0.1", u.port or 6379)


@pytest.fixture
def make_backend() -> Iterator[Callable[..., RedisBackend]]:
    """Create backends sharing one fresh namespace; all of it is deleted afterwards."""
    _require_redis()
    yield from backends_in_fresh_namespace(REDIS_URL)


@pytest.fixture
def backend(make_backend: Callable[..., RedisBackend]) -> RedisBackend:
    return make_backend()


@pytest.fixture
def unreachable_backend() -> Callable[[], RedisBackend]:
    return unreachable()
