"""Many processes, one map: managers publish through a ShardMapStore (compare-and-set from
epoch N to N+1, one winner), routers refresh when they see a newer epoch."""

from __future__ import annotations

import numpy as np
import pytest

from fastshard.backends.memory import MemoryBackend
from fastshard.errors import EpochConflictError
from fastshard.sharding import Router, ShardManager
from fastshard.shardmap import ShardMap
from fastshard.shardmap_store import ShardMapStore


@pytest.fixture
def shared():
    backend = MemoryBackend()
    store = ShardMapStore(backend, "orders")
    assert store.publish(ShardMap(4, ["a", "b"], name="orders"), 0)
    return backend, store


def test_of_two_managers_one_wins_the_round_and_the_loser_is_untouched(shared):
    backend, store = shared
    m1, m2 = store.load(), store.load()
    mgr1 = ShardManager(m1, 100.0, store=store)
    mgr2 = ShardManager(m2, 100.0, store=store)
    load = np.array([10.0, 95.0, 90.0, 88.0])
    p1, p2 = mgr1.adjust_sharding(load), mgr2.adjust_sharding(load)
    assert p1 and p2
    assert mgr1.apply(p1) == 2
    with pytest.raises(EpochConflictError, match="another manager published epoch 2"):
        mgr2.apply(p2)
    assert m2.epoch == 1  # nothing applied locally
    stored = store.load()
    assert stored.epoch == 2 and stored.slices == m1.slices  # the store holds the winner's map
    # the loser reloads, re-plans and wins the next round
    m3 = store.refresh(m2)
    mgr3 = ShardManager(m3, 100.0, store=store)
    loads = np.full(len(m3.slices), 95.0)
    assert mgr3.apply(mgr3.adjust_sharding(loads)) == 3 and store.epoch() == 3


def test_router_refreshes_when_a_message_carries_a_newer_epoch(shared):
    backend, store = shared
    producer_map, consumer_map = store.load(), store.load()
    producer = Router(producer_map, backend)
    manager = ShardManager(producer_map, 100.0, router=producer, store=store)
    manager.apply(manager.adjust_sharding(np.array([10.0, 95.0, 90.0, 88.0])))
    sent = producer.publish("user-1", b"x")
    assert sent.epoch == 2
    consumer = Router(consumer_map, backend, store=store, create_queues=False)
    assert consumer.epoch == 1
    got = consumer.consumer(sent.queue).poll()
    assert [m.value for m in got] == [b"x"]
    assert consumer.epoch == 2 and consumer.shard_map.slices == producer_map.slices
