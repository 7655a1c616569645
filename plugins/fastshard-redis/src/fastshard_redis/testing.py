"""Helpers for tests against a real Redis (the plugin's own tests use them; so can yours)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

from fastshard_redis.backend import RedisBackend


def backends_in_fresh_namespace(url: str, **fixed: object) -> Iterator[Callable[..., RedisBackend]]:
    """A factory of backends on ``url`` sharing one fresh namespace (``fixed`` options on all
    of them, ``visibility_timeout=0.5`` unless given); everything in the namespace is deleted
    afterwards. For a pytest fixture: ``yield from backends_in_fresh_namespace(url)``."""
    namespace = f"fs-test-{uuid.uuid4().hex[:12]}"
    made: list[RedisBackend] = []

    def make(**options: object) -> RedisBackend:
        options.setdefault("visibility_timeout", 0.5)
        b = RedisBackend(url=url, namespace=namespace, **fixed, **options)  # type: ignore[arg-type]
        made.append(b)
        return b

    yield make
    cleaner = RedisBackend(url=url, namespace=namespace, **fixed)  # type: ignore[arg-type]
    cleaner.drop_namespace()
    cleaner.close()
    for b in made:
        b.close()


def unreachable(**fixed: object) -> Callable[[], RedisBackend]:
    """A factory of backends pointed at a closed port, with short timeouts and two attempts."""
    return lambda: RedisBackend(url="redis://127.0.0.1:1/0", namespace="unreachable", connect_timeout=0.2,
                                socket_timeout=0.5, retry_attempts=2, retry_base_delay=0.01,
                                **fixed)  # type: ignore[arg-type]
