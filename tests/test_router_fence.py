"""The router and its drain fence: no message lost, none duplicated, per-key order kept
across splits, merges, moves and hot-key isolation."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard import backends
from fastshard.backends.memory import MemoryBackend
from fastshard.errors import FastshardError, InvalidTypeError, InvalidValueError
from fastshard.sharding import Merge, Plan, Reassign, Router, ShardManager
from fastshard.sharding.fence import SEQ_HEADER, DrainFence, FenceRegistry
from fastshard.sharding.plan import HASH_SPACE
from fastshard.sharding.router import hash_key, key_bytes
from fastshard.shardmap import ShardMap
from fastshard.testing.resharding import check_resharding, random_plan

NODES = ["n0", "n1", "n2"]


def _setup(shards: int = 2):
    backend = MemoryBackend()
    m = ShardMap(shards, NODES[:2], name="t")
    router = Router(m, backend)
    return backend, m, router, ShardManager(m, 1.0, router=router)


def _move_key_range(m: ShardMap, key: str, to: str) -> Plan:
    """A plan giving the whole slice that holds ``key`` to a new shard ``to``."""
    h = hash_key(key)
    sl = next(s for s in m.slices if s.start <= h < s.end)
    return Plan(None, m.epoch, (Reassign(sl.start, sl.end, sl.shard, to, "n1", "split",
                                         (sl.end - sl.start) / HASH_SPACE, 0.0),))


# ----------------------------------------------------------------------------- router basics
def test_publish_stamps_epoch_sequence_and_hash():
    backend, m, router, _ = _setup()
    sent = router.publish("user-1", b"hello")
    assert sent.shard == m.shard_for("user-1") == router.route("user-1")
    assert sent.epoch == m.epoch == 1
    [msg] = backend.consume(sent.queue, "g")
    assert msg.epoch == 1 and msg.key == b"user-1" and msg.value == b"hello"
    assert msg.headers[SEQ_HEADER] == "1"
    assert int(msg.headers["fs-hash"]) == hash_key("user-1")


def test_keys_published_as_bytes_hash_like_the_key():
    for key in ["é-ü", b"\x00\xff", 7, 2**64 - 1, -1]:
        assert hash_key(key_bytes(key)) == hash_key(key)
    with pytest.raises(InvalidValueError, match=r"int key must be in \[-2\*\*63, 2\*\*64\)"):
        key_bytes(2**64)
    with pytest.raises(InvalidTypeError, match="key must be str, bytes or int"):
        key_bytes(1.5)  # type: ignore[arg-type]


def test_publish_without_backend_is_a_clear_error():
    m = ShardMap(2)
    with pytest.raises(InvalidValueError, match="publish needs a backend"):
        Router(m).publish("k", b"v")


def test_router_creates_every_shard_queue():
    backend, m, router, _ = _setup(3)
    assert backend.list_queues() == sorted(router.queue_of(s) for s in m.shards)


# ----------------------------------------------------------------------------- the fence
def test_consumer_of_new_shard_waits_until_old_shard_is_drained():
    backend, m, router, manager = _setup()
    old = router.publish("alice", b"alice:0")
    manager.apply(_move_key_range(m, "alice", "moved"))
    new = router.publish("alice", b"alice:1")
    assert new.shard == "moved" and new.queue != old.queue and new.epoch == old.epoch + 1
    new_c, old_c = router.consumer("moved"), router.consumer(old.shard)
    assert new_c.poll() == []  # held: alice:0 is still on the old shard
    assert new_c.held == 1
    got = old_c.poll()
    assert [x.value for x in got] == [b"alice:0"]
    assert new_c.poll() == []  # delivered but not acked yet: still held
    old_c.ack(got)
    assert [x.value for x in new_c.poll()] == [b"alice:1"]
    assert router.fences.active() == []


def test_a_range_moved_twice_still_waits_for_its_first_owner():
    """Regression (found by the interleaving property): publish k on s1, merge s1 into s0
    (k's range now waits for s1), isolate k out of s0 before anything was consumed. The new
    shard must wait for s1, not only for s0 (which never received k)."""
    backend, m, router, manager = _setup()
    first = router.publish("k0", b"k0:0")
    other = next(s for s in m.shards if s != first.shard)
    manager.apply(Plan(None, m.epoch, (Merge(other, first.shard, 0.0, 0.0),)))
    h = hash_key("k0")
    manager.apply(Plan(None, m.epoch, (Reassign(h, h + 1, other, "hot", "n0", "isolate", 0.0, 0.0),)))
    second = router.publish("k0", b"k0:1")
    assert second.shard == "hot"
    hot = router.consumer("hot")
    assert hot.poll() == []
    old = router.consumer(first.queue)
    got = old.poll()
    assert [x.value for x in got] == [b"k0:0"]
    old.ack(got)
    assert [x.value for x in hot.poll()] == [b"k0:1"]


def test_fence_does_not_hold_other_ranges_or_older_epochs():
    backend, m, router, manager = _setup()
    router.publish("alice", b"a0")
    manager.apply(_move_key_range(m, "alice", "moved"))
    # a key that always lived elsewhere is never held
    other = next(f"k{i}" for i in range(1000) if m.shard_for(f"k{i}") != "moved")
    sent = router.publish(other, b"x")
    assert [x.value for x in router.consumer(sent.shard).poll()] == [b"x"]


def test_without_the_fence_order_breaks(monkeypatch):
    """The scenario above with the fence switched off reorders alice: the test can fail."""
    monkeypatch.setattr(FenceRegistry, "holds", lambda self, q, h, e: False)
    backend, m, router, manager = _setup()
    router.publish("alice", b"alice:0")
    manager.apply(_move_key_range(m, "alice", "moved"))
    router.publish("alice", b"alice:1")
    assert [x.value for x in router.consumer("moved").poll()] == [b"alice:1"]


def test_failed_publish_settles_its_sequence_number():
    backend, m, router, manager = _setup()
    router.publish("alice", b"a0")
    q = router.queue_of(m.shard_for("alice"))
    backend.delete_queue(q)  # the next publish to it fails
    with pytest.raises(InvalidValueError):
        router.publish("alice", b"a1")
    assert router.fences.settled_up_to(q) == 0  # seq 1 was never acked...
    assert 2 in router.fences._settled[q].above  # ...but seq 2 will never arrive: settled


def test_fence_registry_settles_out_of_order_and_releases_at_the_mark():
    reg = FenceRegistry()
    for _ in range(5):
        reg.next_seq("a")
    reg.install([DrainFence(0, 10, "a", "b", mark=reg.last_seq("a"), epoch=2)])
    assert reg.holds("b", 5, 2) and reg.holds("b", 5, 3)
    assert not reg.holds("b", 10, 2) and not reg.holds("b", 5, 1) and not reg.holds("c", 5, 2)
    reg.settle("a", [2, 3, 5])
    assert reg.settled_up_to("a") == 0 and reg.holds("b", 5, 2)
    reg.settle("a", [1])
    assert reg.settled_up_to("a") == 3 and reg.holds("b", 5, 2)
    reg.settle("a", [4])
    assert reg.settled_up_to("a") == 5 and not reg.holds("b", 5, 2)
    assert reg.released == 1 and reg.active() == []


def test_fence_on_an_empty_old_queue_is_released_at_once():
    reg = FenceRegistry()
    reg.install([DrainFence(0, 10, "a", "b", mark=0, epoch=2)])
    assert reg.active() == [] and not reg.holds("b", 1, 2)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_plans_interleaved_with_publish_and_consume_keep_order(data):
    """Any interleaving of publishes, random plans, partial consumption and late acks:
    every message is delivered exactly once and each key in publish order."""
    backend, m, router, manager = _setup(2)
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="plan seed"))
    keys = [f"k{i}" for i in range(6)]
    next_n = dict.fromkeys(keys, 0)
    published: set[str] = set()
    processed: list[str] = []
    consumers: dict = {}
    unacked: dict[str, list] = {}
    names = itertools.count(1)

    def consumer(q):
        if q not in consumers:
            consumers[q] = router.consumer(q)
            unacked[q] = []
        return consumers[q]

    ops = data.draw(st.lists(st.sampled_from(["pub", "pub", "pub", "plan", "take", "ack"]),
                             min_size=1, max_size=50), label="ops")
    for op in ops:
        if op == "pub":
            k = data.draw(st.sampled_from(keys))
            v = f"{k}:{next_n[k]}"
            next_n[k] += 1
            router.publish(k, v)
            published.add(v)
        elif op == "plan":
            try:
                manager.apply(random_plan(m, rng, NODES, names, keys))
            except FastshardError:
                pass
            manager.collect_retired()
        else:
            q = data.draw(st.sampled_from(router.live_queues()))
            c = consumer(q)
            if op == "take":
                got = c.poll(max_messages=data.draw(st.integers(1, 4)))
                processed.extend(x.value.decode() for x in got)
                unacked[q].extend(got)
            elif unacked[q]:
                n = data.draw(st.integers(1, len(unacked[q])))
                c.ack(unacked[q][:n])
                del unacked[q][:n]
    for _ in range(200):  # drain: every consumer takes and acks until nothing is left
        if len(set(processed)) == len(published):
            break
        for q in router.live_queues():
            c = consumer(q)
            got = c.poll(max_messages=100)
            processed.extend(x.value.decode() for x in got)
            c.ack(unacked[q] + got)
            unacked[q] = []
    assert sorted(processed) == sorted(published), "lost or duplicated messages"
    last: dict[str, int] = {}
    for v in processed:
        k, n = v.split(":")
        assert int(n) == last.get(k, -1) + 1, f"{k} out of order: {processed}"
        last[k] = int(n)


# ----------------------------------------------------------------------------- concurrency
@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_concurrent_producers_and_consumers_under_random_plans(seed):
    report = check_resharding(backends.get("memory"), seed=seed, messages=800, rounds=6)
    assert report.ok and report.plans_applied >= 1
    assert report.delivered == report.published == 800


def test_resharding_check_detects_a_broken_fence(monkeypatch):
    monkeypatch.setattr(FenceRegistry, "holds", lambda self, q, h, e: False)
    failures = 0
    for seed in range(12):
        r = check_resharding(backends.get("memory"), seed=seed, raise_on_failure=False,
                             messages=1500, rounds=10)
        failures += not r.ok
    assert failures >= 1, "with the fence disabled the check should catch a reordering"


def test_resharding_check_rejects_a_backend_without_queues():
    class NoQueues(MemoryBackend):
        capabilities = frozenset({"kv"})

    with pytest.raises(InvalidValueError, match="must offer queues"):
        check_resharding(NoQueues())
