"""The Redis backend next to raw redis-py, measured in the same run on the same server.

* ``publish-batch``: 1,000 messages per call. fastshard: ``RedisBackend.publish_batch``
  (one Lua script run per 1,000 messages, with the request de-duplication record that makes
  it safe to retry). Peer: a redis-py pipeline (no MULTI) of 1,000 ``XADD`` with the same
  fields (key, value, epoch). Divide the median by 1,000 for the cost per message.
* ``publish-one``: a single confirmed message. Peer: one ``XADD``.
* ``epoch-change``: a writer bumps the shard map (versioned CAS) and notifies; a reader
  receives the notification and reads the new version. Peer: ``HSET`` + ``PUBLISH`` +
  pub/sub ``get_message`` + ``HGETALL`` with redis-py directly (no CAS).

    .venv/bin/pytest bench/test_bench_backend_redis.py --benchmark-columns=median,iqr,rounds \
        --benchmark-group-by=group
    .venv/bin/pytest bench/test_bench_backend_redis.py --benchmark-disable     # quick mode (CI)

Needs ``pip install -e plugins/fastshard-redis`` and a Redis server (FASTSHARD_REDIS_URL,
default redis://127.0.0.1:6379/0); skipped without one, failing under CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from fastshard.testing.servers import require_server

redis = pytest.importorskip("redis")
fastshard_redis = pytest.importorskip("fastshard_redis")

REDIS_URL = os.environ.get("FASTSHARD_REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 1000
ITEMS = [(f"user-{i}".encode(), b"x" * 100) for i in range(BATCH)]


@pytest.fixture(scope="module")
def env() -> Iterator[tuple]:
    u = urlparse(REDIS_URL)
    require_server("Redis", u.hostname or "127.0.0.1", u.port or 6379)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    backend = fastshard_redis.RedisBackend(url=REDIS_URL, namespace=ns)
    raw = redis.Redis.from_url(REDIS_URL)
    backend.create_queue("q")
    backend.kv_set("shard-map", b"epoch-0")
    yield backend, raw, ns
    backend.drop_namespace()
    backend.close()
    raw.close()


def _trim_when_large(raw, stream: str) -> None:
    # keep the streams small between rounds so every round appends to a similar stream
    if raw.xlen(stream) > 200_000:
        raw.xtrim(stream, maxlen=0)


@pytest.mark.benchmark(group="publish-batch")
def test_publish_batch_fastshard(benchmark, env) -> None:
    backend, raw, _ = env
    stream = backend.keys.stream("q")

    def run() -> list[str]:
        _trim_when_large(raw, stream)
        return backend.publish_batch("q", ITEMS, epoch=5)

    ids = benchmark(run)
    assert len(ids) == BATCH


@pytest.mark.benchmark(group="publish-batch")
def test_publish_batch_redis_py_pipeline(benchmark, env) -> None:
    _, raw, ns = env
    stream = f"{ns}:raw-stream"

    def run() -> list:
        _trim_when_large(raw, stream)
        pipe = raw.pipeline(transaction=False)
        for k, v in ITEMS:
            pipe.xadd(stream, {"k": k, "v": v, "e": 5})
        return pipe.execute()

    ids = benchmark(run)
    assert len(ids) == BATCH


@pytest.mark.benchmark(group="publish-one")
def test_publish_one_fastshard(benchmark, env) -> None:
    backend, raw, _ = env
    assert benchmark(backend.publish, "q", b"user-1", b"x" * 100, epoch=5)


@pytest.mark.benchmark(group="publish-one")
def test_publish_one_redis_py(benchmark, env) -> None:
    _, raw, ns = env
    assert benchmark(raw.xadd, f"{ns}:raw-stream", {"k": b"user-1", "v": b"x" * 100, "e": 5})


@pytest.mark.benchmark(group="epoch-change")
def test_epoch_change_fastshard(benchmark, env) -> None:
    backend, _, _ = env
    sub = backend.subscribe("shard-map")

    def change_and_observe() -> int:
        current = backend.kv_get("shard-map")
        new_version = backend.kv_cas("shard-map", b"epoch-next", current.version)
        backend.notify("shard-map", str(new_version).encode())
        assert sub.get(timeout=5.0) is not None
        return backend.kv_get("shard-map").version

    try:
        assert benchmark(change_and_observe) >= 2
    finally:
        sub.close()


@pytest.mark.benchmark(group="epoch-change")
def test_epoch_change_redis_py(benchmark, env) -> None:
    _, raw, ns = env
    key, channel = f"{ns}:raw-map", f"{ns}:raw-channel"
    raw.hset(key, mapping={"value": b"epoch-0", "version": 1})
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
        pass

    def change_and_observe() -> int:
        version = raw.hincrby(key, "version", 1)
        raw.hset(key, "value", b"epoch-next")
        raw.publish(channel, str(version))
        while pubsub.get_message(timeout=5.0) is None:
            pass
        return int(raw.hgetall(key)[b"version"])

    try:
        assert benchmark(change_and_observe) >= 2
    finally:
        pubsub.close()
