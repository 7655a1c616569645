"""The resharding check (random plans under concurrent publishing, fenced consumers) on the
server backends that offer queues. Each test skips locally when its server or plugin is
missing and fails under CI=true (require_server)."""

from __future__ import annotations

import uuid

import pytest

from fastshard import backends
from fastshard.testing.resharding import check_resharding
from fastshard.testing.servers import require_server

pytestmark = pytest.mark.integration


def _backend(name: str, **options):
    if name not in backends.available():
        pytest.skip(f"the fastshard-{name} plugin is not installed")
    return backends.get(name, **options)


def _run(b, cleanup=None):
    try:
        report = check_resharding(b, seed=7, keys=30, messages=600, rounds=6, timeout=60)
    finally:
        if cleanup is not None:
            getattr(b, cleanup)()  # leave nothing behind on the shared server
        b.close()
    assert report.ok and report.delivered == report.published == 600
    assert report.plans_applied >= 1


def test_resharding_keeps_order_on_redis():
    require_server("redis", "127.0.0.1", 6379)
    _run(_backend("redis", url="redis://127.0.0.1:6379/0", namespace=f"rs-{uuid.uuid4().hex[:8]}"), "drop_namespace")


def test_resharding_keeps_order_on_postgres():
    require_server("postgres", "127.0.0.1", 5432)
    _run(_backend("postgres", dsn="postgresql://postgres@127.0.0.1:5432/test",
                  schema=f"rs_{uuid.uuid4().hex[:8]}"), "drop_schema")


def test_resharding_keeps_order_on_rabbitmq():
    require_server("rabbitmq", "127.0.0.1", 5672)
    _run(_backend("rabbitmq", prefix=f"rs-{uuid.uuid4().hex[:8]}-"))
