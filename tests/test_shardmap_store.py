"""ShardMapStore: CAS publishing (one winner), notification, polling, refresh, on memory and Redis."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator

import pytest

from fastshard import backends
from fastshard.backends.base import UnsupportedOperationError
from fastshard.errors import BackendError, InvalidTypeError, InvalidValueError, StaleEpochError
from fastshard.shardmap import ShardMap, ShardMaps
from fastshard.shardmap_store import ShardMapStore
from fastshard.testing.servers import require_server


def _redis_backend() -> Iterator[backends.Backend]:
    if "redis" not in backends.available():
        pytest.skip("fastshard-redis plugin not installed")
    require_server("Redis", "127.0.0.1", 6379)
    b = backends.get("redis", url=os.environ.get("FASTSHARD_REDIS_URL", "redis://127.0.0.1:6379/0"),
                     namespace=f"fs-test-{uuid.uuid4().hex[:12]}")
    try:
        yield b
    finally:
        b.drop_namespace()
        b.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def backend(request) -> Iterator[backends.Backend]:
    if request.param == "memory":
        yield backends.get("memory")
    else:
        yield from _redis_backend()


def test_first_publish_load_and_stale_publish(backend):
    store = ShardMapStore(backend, "orders")
    assert store.load() is None and store.epoch() == 0
    m = ShardMap(4, ["a", "b"], name="orders")
    m.split("s0")
    assert store.publish(m, 0) is True
    loaded = store.load()
    assert loaded.to_dict() == m.to_dict() and loaded.epoch == 2
    assert store.publish(m, 0) is False  # someone (we) already stored epoch 2
    m.move("s1", "c")
    assert store.publish(m, 1) is False  # wrong expectation
    assert store.publish(m, 2) is True and store.epoch() == 3
    # the payload is compact JSON of to_dict
    raw = backend.kv_get(store.key).value
    assert json.loads(raw) == m.to_dict() and b" " not in raw


def test_exactly_one_concurrent_publisher_wins(backend):
    store = ShardMapStore(backend, "race")
    base = ShardMap(2, name="race")
    base.move("s0", "n0")  # epoch 2
    assert store.publish(base, 0)
    for _ in range(3):
        start = store.load()
        n = 6
        barrier = threading.Barrier(n)
        results: list[bool] = [False] * n

        def writer(i: int, start=start, barrier=barrier, results=results) -> None:
            mine = start.copy()
            mine.move("s1", f"w{i}")
            barrier.wait()
            results[i] = store.publish(mine, start.epoch)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(results) == 1, results
        winner = results.index(True)
        final = store.load()
        assert final.epoch == start.epoch + 1 and final.node_of("s1") == f"w{winner}"


def test_notification_and_watcher(backend):
    store = ShardMapStore(backend, "watched")
    local = ShardMap(2, name="watched")
    assert store.publish(local, 0)
    sub = backend.subscribe(store.channel)
    with store.watch(local, poll_interval=60) as watcher:
        assert watcher.poll(timeout=0) is None
        writer = local.copy()
        writer.split("s1")
        assert store.publish(writer, 1)
        note = sub.get(timeout=2)
        assert json.loads(note) == {"name": "watched", "epoch": 2}
        newer = watcher.poll(timeout=2)
        assert newer is not None and newer.epoch == 2 and watcher.current is newer
        moved = newer.diff(local.epoch)
        assert [(c.old_shard, c.new_shard) for c in moved] == [("s1", "s2")]
        assert watcher.poll(timeout=0.05) is None
    sub.close()


def test_watcher_polls_when_a_notification_is_missed(backend):
    store = ShardMapStore(backend, "polled")
    local = ShardMap(2, name="polled")
    assert store.publish(local, 0)
    with store.watch(local, poll_interval=0.05) as watcher:
        newer = local.copy()
        newer.merge("s0", "s1")
        # written without the announcement, as if the notification were lost
        version = backend.kv_get(store.key).version
        assert backend.kv_cas(store.key, json.dumps(newer.to_dict()), version)
        got = watcher.poll(timeout=2)
        assert got is not None and got.shards == ["s0"] and got.epoch == 2


def test_refresh_and_ensure_epoch(backend):
    store = ShardMapStore(backend, "router")
    local = ShardMap(3, name="router")
    assert store.publish(local, 0)
    assert store.refresh(local) is local
    remote = local.copy()
    remote.split("s2")
    remote.move("s0", "x")
    assert store.publish(remote, 1)
    # a message stamped with epoch 3 arrives at a router still on epoch 1
    fresh = store.ensure_epoch(local, 3, timeout=0.5)
    assert fresh.epoch == 3 and fresh.to_dict() == remote.to_dict()
    assert store.ensure_epoch(fresh, 2) is fresh
    with pytest.raises(StaleEpochError, match="epoch 9"):
        store.ensure_epoch(local, 9, timeout=0.05)


def test_publish_validates_and_reports_corrupt_data(backend):
    store = ShardMapStore(backend, "checked")
    m = ShardMap(2, name="checked")
    with pytest.raises(InvalidValueError, match="new_map.epoch must be > expected_epoch"):
        store.publish(m, 1)
    with pytest.raises(InvalidTypeError):
        store.publish(m.to_dict(), 0)
    with pytest.raises(InvalidValueError, match="expected_epoch"):
        store.publish(m, -1)
    assert store.load() is None  # nothing was written by the failed calls
    backend.kv_set(store.key, b"{not json")
    with pytest.raises(BackendError, match="not a valid map"):
        store.load()
    for bad in (b"{not json", b'{"format": 1}', b'{"epoch": -3}', b'{"epoch": "x"}', b"[1]"):
        backend.kv_set(store.key, bad)
        with pytest.raises(BackendError, match="not a valid map"):
            store.epoch()  # the epoch-only read checks what it reads too
    # a valid epoch over a broken body: comparing epochs does not need the body...
    body = ShardMap(2, name="checked").to_dict()
    body["slices"] = "broken"
    backend.kv_set(store.key, json.dumps(body))
    assert store.epoch() == 1 and store.refresh(ShardMap(2, name="checked")).epoch == 1
    # ...but taking the newer map does, and says what is wrong
    with pytest.raises(BackendError, match="not a valid map"):
        store.newer_than(0)


def test_comparing_epochs_does_not_build_the_map(backend, monkeypatch):
    store = ShardMapStore(backend, "cheap")
    m = ShardMap(4, name="cheap")
    assert store.publish(m, 0)
    m2 = m.copy()
    m2.move(m2.shards[0], "n-other")
    built = []
    real = ShardMap.from_dict
    monkeypatch.setattr(ShardMap, "from_dict", staticmethod(lambda d: built.append(1) or real(d)))
    assert store.epoch() == 1 and store.refresh(m) is m and store.newer_than(1) is None
    assert store.publish(m2, 1)  # the compare-and-set reads the stored epoch only
    assert built == []
    assert store.newer_than(1).epoch == 2 and built == [1]


def test_store_needs_kv_and_a_valid_name():
    mem = backends.get("memory")
    with pytest.raises(InvalidValueError, match="name must be"):
        ShardMapStore(mem, "has space")
    with pytest.raises(InvalidTypeError):
        ShardMapStore(object(), "x")

    class QueuesOnly(type(mem)):
        capabilities = frozenset({"queues"})

    with pytest.raises(UnsupportedOperationError, match="needs 'kv'"):
        ShardMapStore(QueuesOnly(), "x")


def test_shard_maps_share_one_store_prefix():
    mem = backends.get("memory")
    maps = ShardMaps(shards=2, prefix="svc")
    for dims in [("billing", "error"), ("billing", "transactional")]:
        m = maps[dims]
        m.split("s0")
        assert ShardMapStore(mem, maps.name_for(dims)).publish(m, 0)
    assert mem.kv_keys("shardmap/svc.") == [
        "shardmap/svc.billing.error", "shardmap/svc.billing.transactional"]
