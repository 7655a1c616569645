"""Fixtures: a RedisBackend in a namespace of its own, dropped after each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest

from fastshard.testing.servers import require_server
from fastshard_redis import RedisBackend

REDIS_URL = os.environ.get("FASTSHARD_REDIS_URL", "redis://127.0.0.1:6379/0")


def _require_redis() -> None:
    u = urlparse(REDIS_URL)
    require_server("Redis", u.hostname or "127.0.0.1", u.port or 6379)


@pytest.fixture
def make_backend() -> Iterator[Callable[..., RedisBackend]]:
    """Create backends sharing one fresh namespace; all of it is deleted afterwards."""
    _require_redis()
    namespace = f"fs-test-{uuid.uuid4().hex[:12]}"
    made: list[RedisBackend] = []

    def make(**options: object) -> RedisBackend:
        options.setdefault("visibility_timeout", 0.5)
        b = RedisBackend(url=REDIS_URL, namespace=namespace, **options)  # type: ignore[arg-type]
        made.append(b)
        return b

    yield make
    cleaner = RedisBackend(url=REDIS_URL, namespace=namespace)
    cleaner.drop_namespace()
    cleaner.close()
    for b in made:
        b.close()


@pytest.fixture
def backend(make_backend: Callable[..., RedisBackend]) -> RedisBackend:
    return make_backend()


@pytest.fixture
def unreachable_backend() -> Callable[[], RedisBackend]:
    return lambda: RedisBackend(
        url="redis://127.0.0.1:1/0",
        namespace="unreachable",
        connect_timeout=0.2,
        socket_timeout=0.5,
        retry_attempts=2,
        retry_base_delay=0.01,
    )
