"""The backend contract against a real Redis Cluster (three primaries on 127.0.0.1:7001-7003,
started by ``.ci/redis-cluster.sh``; CI runs it). Every script's keys must share one hash
slot, and namespace-wide operations (``kv_keys``, ``drop_namespace``) must visit every
primary: both only show on a cluster."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest
import redis

from fastshard.testing.conformance import BackendConformance
from fastshard.testing.servers import require_server
from fastshard_redis import RedisBackend
from fastshard_redis.testing import backends_in_fresh_namespace, unreachable

CLUSTER_URL = os.environ.get("FASTSHARD_REDIS_CLUSTER_URL", "redis://127.0.0.1:7001/0")


def _require_cluster() -> None:
    u = urlparse(CLUSTER_URL)
    require_server("Redis Cluster (start it with .ci/redis-cluster.sh)", u.hostname or "127.0.0.1", u.port or 7001)


@pytest.fixture
def make_backend() -> Iterator[Callable[..., RedisBackend]]:
    _require_cluster()
    yield from backends_in_fresh_namespace(CLUSTER_URL, cluster=True)


@pytest.fixture
def backend(make_backend: Callable[..., RedisBackend]) -> RedisBackend:
    return make_backend()


@pytest.fixture
def unreachable_backend() -> Callable[[], RedisBackend]:
    return unreachable(cluster=True)


@pytest.mark.integration
class TestRedisClusterConformance(BackendConformance):
    """Every contract test, on the cluster."""


@pytest.mark.integration
def test_namespace_spans_every_primary_and_drops_from_all(make_backend: Callable[..., RedisBackend]) -> None:
    b = make_backend()
    queues = [f"q{i}" for i in range(24)]
    for q in queues:
        b.create_queue(q)
        b.publish(q, b"k", b"v")
        b.kv_set(f"kv/{q}", q)
    # the namespace's keys really are spread over the primaries (else this proves nothing)
    u = urlparse(CLUSTER_URL)
    nodes = redis.RedisCluster(host=u.hostname, port=u.port).get_primaries()
    holding = set()
    for n in nodes:
        r = redis.Redis(host=n.host, port=n.port)
        if any(True for _ in r.scan_iter(match=f"*{b.namespace}*", count=1000)):
            holding.add(n.port)
        r.close()
    assert len(holding) >= 2, holding
    assert sorted(b.list_queues()) == sorted(queues)
    assert sorted(b.kv_keys("kv/")) == sorted(f"kv/{q}" for q in queues)
    b.drop_namespace()
    assert b.list_queues() == [] and b.kv_keys("kv/") == []
