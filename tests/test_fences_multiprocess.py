"""Drain fences across processes: producers, consumers and a manager in separate processes
share the map and the fences only through Redis or PostgreSQL (integration; skips locally
without the server, fails under CI), plus in-process checks of the shared-fence protocol on
the memory backend (several routers standing in for several processes)."""

from __future__ import annotations

import time
import uuid

import pytest

from fastshard import backends
from fastshard.testing.multiprocess_resharding import check_multiprocess_resharding
from fastshard.testing.servers import require_server


def _require_plugin(name: str) -> None:
    if name not in backends.available():
        pytest.skip(f"the fastshard-{name} plugin is not installed")


@pytest.mark.integration
@pytest.mark.parametrize(("port", "seed", "late_consumers"), [(6379, 3, False), (6379, 4, True), (7001, 5, True)],
                         ids=["together", "late-consumers", "cluster-late-consumers"])
def test_processes_keep_order_on_redis(tmp_path, port, seed, late_consumers):
    """``late-consumers``: consumer processes start only after the last resharding round, so
    they must find retired queues and open fences of epochs they never routed under.
    ``cluster``: the same on the three-primary Redis Cluster of ``.ci/redis-cluster.sh``."""
    cluster = port != 6379
    require_server("Redis Cluster (.ci/redis-cluster.sh)" if cluster else "redis", "127.0.0.1", port)
    _require_plugin("redis")
    ns = f"mp-{uuid.uuid4().hex[:8]}"
    opts = {"url": f"redis://127.0.0.1:{port}/0", "namespace": ns, **({"cluster": True} if cluster else {})}
    try:
        r = check_multiprocess_resharding("redis", opts, tmp_path, seed=seed, late_consumers=late_consumers)
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


# ------------------------------------------------------------------ protocol, in one process
def _shared_setup(lease_ttl: float = 5.0):
    from fastshard.backends.memory import MemoryBackend
    from fastshard.sharding import Router, ShardManager
    from fastshard.sharding.fence_store import FencedMapStore, FenceStore
    from fastshard.shardmap import ShardMap
    from fastshard.shardmap_store import ShardMapStore

    backend = MemoryBackend()
    m = ShardMap(2, ["n0", "n1"], name="mpt")
    store = ShardMapStore(backend, "mpt")
    assert store.publish(m, 0)
    fences = FenceStore(backend, "mpt", lease_ttl=lease_ttl)

    def router(pid=None):
        return Router(store.load(), backend, store=store, fence_store=FenceStore(backend, "mpt", lease_ttl=lease_ttl),
                      producer_id=pid, create_queues=False)

    mgr_router = Router(m, backend, store=store, fence_store=fences)
    manager = ShardManager(m, 1.0, router=mgr_router, store=FencedMapStore(store, fences))
    return backend, m, router, manager


def _move_plan(m, key):
    from fastshard.sharding import Plan, Reassign
    from fastshard.sharding.plan import HASH_SPACE
    from fastshard.sharding.router import hash_key

    h = hash_key(key)
    sl = next(s for s in m.slices if s.start <= h < s.end)
    return Plan(None, m.epoch, (Reassign(sl.start, sl.end, sl.shard, "moved", "n1", "split",
                                         (sl.end - sl.start) / HASH_SPACE, 0.0),))


def test_consumer_in_another_process_holds_moved_range_until_old_queue_acked():
    backend, m, router, manager = _shared_setup()
    p1, p2, consumer = router("p1"), router("p2"), router()
    old = p1.publish("k", b"0")
    p2.publish("k2", b"x")
    backend.create_queue(p1.queue_of("moved"))
    manager.apply(_move_plan(m, "k"))
    assert m.epoch == 2 and manager.store.fences.read_record(2) is not None  # recorded before publish
    p1.sync(), p2.sync()
    new = p1.publish("k", b"1")
    assert new.queue != old.queue and new.epoch == 2
    on_new = consumer.consumer(new.queue)
    assert on_new.poll() == [] and on_new.held == 1  # old queue not drained yet
    on_old = consumer.consumer(old.queue)
    got = on_old.poll()
    assert b"0" in [x.value for x in got]
    assert on_new.poll() == []  # delivered but not acked: still held
    on_old.ack(got)
    assert [x.value for x in on_new.poll()] == [b"1"]


def test_producer_that_has_not_switched_blocks_until_it_does():
    backend, m, router, manager = _shared_setup()
    p1, lagging, consumer = router("p1"), router("lag"), router()
    p1.publish("k", b"0")
    lagging.publish("k", b"L0")  # registered at epoch 1
    backend.create_queue(p1.queue_of("moved"))
    manager.apply(_move_plan(m, "k"))
    p1.sync()
    new = p1.publish("k", b"1")
    old_q = lagging.queue_of(m.diff(1)[0].old_shard)
    lagging.publish("k", b"L1")  # still routed under epoch 1, to the old queue
    on_old, on_new = consumer.consumer(old_q), consumer.consumer(new.queue)
    on_old.ack(on_old.poll())
    assert on_new.poll() == []  # "lag" has not written its mark for epoch 2
    lagging.sync()  # switches: writes its mark (= its last seq on the old queue)
    assert on_new.poll() == []
    on_old.ack(on_old.poll())
    time.sleep(0.02)  # shared fences are re-read at most every refresh_interval (10 ms)
    assert [x.value for x in on_new.poll()] == [b"1"]


def test_dead_producer_is_released_by_a_barrier_after_its_last_message():
    backend, m, router, manager = _shared_setup(lease_ttl=0.2)
    p1, dead, consumer = router("p1"), router("dead"), router()
    dead.publish("k", b"D0")
    old_q = dead.queue_of(m.shard_for("k"))
    backend.create_queue(p1.queue_of("moved"))
    manager.apply(_move_plan(m, "k"))
    p1.sync()
    new = p1.publish("k", b"1")
    on_old, on_new = consumer.consumer(old_q), consumer.consumer(new.queue)
    assert on_new.poll() == []
    time.sleep(0.3)  # "dead" never switches; its lease lapses
    assert on_new.poll() == []  # the barrier went out on the old queue
    got = on_old.poll()
    assert [x.value for x in got] == [b"D0"]  # the barrier itself is not delivered
    assert on_new.poll() == []  # D0 seen but not acked
    on_old.ack(got)
    on_old.poll()  # reads the barrier: "dead"'s final mark is 1, settled
    assert [x.value for x in on_new.poll()] == [b"1"]


def _merge_plan(m):
    from fastshard.sharding import Merge, Plan

    a, b = m.shards[:2]
    return Plan(None, m.epoch, (Merge(a, b, 0.0, 0.0),))


def test_consumer_started_after_a_merge_drains_the_retired_queue_before_the_moved_range():
    backend, m, router, manager = _shared_setup()
    p1 = router("p1")
    keys = [f"k{i}" for i in range(20)]
    for k in keys:
        p1.publish(k, f"{k}:0")
    manager.apply(_merge_plan(m))
    (gone,) = manager.router().retired_queues
    p1.sync()
    for k in keys:
        p1.publish(k, f"{k}:1")
    late = router()  # started after the merge: it never saw the retired shard in its map
    assert late.live_queues() == [late.queue_of(m.shards[0]), gone]
    seen: list[str] = []
    consumers = {q: late.consumer(q) for q in late.live_queues()}
    for _ in range(5):
        for c in consumers.values():
            got = c.poll()
            seen += [x.value.decode() for x in got]
            c.ack(got)
        time.sleep(0.02)
    assert sorted(seen) == sorted(f"{k}:{n}" for k in keys for n in (0, 1))
    for k in keys:
        assert seen.index(f"{k}:0") < seen.index(f"{k}:1"), k
    assert manager.collect_retired("fastshard") == [gone]
    assert manager.store.fences.read_open() == (m.epoch + 1, [])
    assert consumers[gone].poll() == [] and gone not in late.live_queues()  # deleted: it leaves the live set


def test_consumer_jumping_epochs_drains_a_shard_created_and_retired_in_between():
    from fastshard.sharding import Merge, Plan

    backend, m, router, manager = _shared_setup()
    p1, consumer = router("p1"), router()
    assert consumer.epoch == 1
    backend.create_queue(p1.queue_of("moved"))
    manager.apply(_move_plan(m, "k"))  # epoch 2: k's range -> "moved"
    p1.sync()
    p1.publish("k", b"0")
    home = m.shards[0] if m.shards[0] != "moved" else m.shards[1]
    manager.apply(Plan(None, m.epoch, (Merge(home, "moved", 0.0, 0.0),)))  # epoch 3: "moved" retired
    p1.sync()
    p1.publish("k", b"1")
    assert consumer.sync() and consumer.epoch == 3  # 1 -> 3: "moved" was never in its map
    moved_q = consumer.queue_of("moved")
    assert moved_q in consumer.live_queues()
    on_home, on_moved = consumer.consumer(home), consumer.consumer(moved_q)
    assert b"1" not in [x.value for x in on_home.poll()]  # fenced behind "moved"
    got = on_moved.poll()
    assert [x.value for x in got] == [b"0"]
    on_moved.ack(got)
    time.sleep(0.02)
    assert b"1" in [x.value for x in on_home.poll()]
