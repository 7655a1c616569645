"""Router.publish_many: one epoch per call, per-queue groups with contiguous sequence
numbers, per-key order, failed groups voided, and the same consumed messages as publishing
one by one."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard.backends.memory import MemoryBackend
from fastshard.errors import (
    BackendUnavailableError,
    InvalidTypeError,
    InvalidValueError,
    MessageTooLargeError,
)
from fastshard.sharding import Router
from fastshard.sharding.fence import HASH_HEADER, SEQ_HEADER
from fastshard.sharding.router import hash_key, key_bytes
from fastshard.shardmap import ShardMap
from fastshard.testing.faults import OutageBackend


def _consumed(backend: object, router: Router) -> dict[str, list[tuple[bytes, bytes, int, dict[str, str]]]]:
    """Per queue, what a consumer sees, in queue order."""
    return {q: [(m.key, m.value, m.epoch, dict(m.headers)) for m in backend.consume(q, "g", max_messages=10_000)]
            for q in router.live_queues()}


def _router(backend: object, shards: int = 4) -> Router:
    return Router(ShardMap(shards, ["a"], name="m"), backend)


class FailingMemory(MemoryBackend):
    """A memory backend whose batch hook fails for one queue (nothing of that group sent)."""

    def __init__(self, fail_queue: str) -> None:
        super().__init__()
        self.fail_queue = fail_queue

    def publish_stamped_batch(self, queue: str, keys: Sequence[bytes], values: Sequence[bytes | str],
                              epoch: int, first_seq: int, key_hashes: Sequence[int],
                              headers: Mapping[str, str] | None = None) -> list[str]:
        if queue == self.fail_queue:
            raise BackendUnavailableError(f"injected: {queue} refused")
        return super().publish_stamped_batch(queue, keys, values, epoch, first_seq, key_hashes, headers)


class DyingOutage(OutageBackend):
    """No batch hook (the per-message fallback); the link goes down after ``ok`` publishes."""

    def __init__(self, inner: MemoryBackend, ok: int) -> None:
        super().__init__(inner)
        self.ok = ok

    def _publish_batch(self, queue, batch, headers, epoch):  # noqa: ANN001, ANN202
        if self.ok <= 0:
            self.down = True
        self.ok -= 1
        return super()._publish_batch(queue, batch, headers, epoch)


KEYS = [f"user-{i % 13}" for i in range(200)]
VALUES = [b"v%d" % i for i in range(200)]


def test_per_key_order_and_one_routed_message_per_input_in_input_order():
    backend = MemoryBackend()
    router = _router(backend)
    sent = router.publish_many(KEYS, VALUES)
    assert [s.shard for s in sent] == [router.route(k) for k in KEYS]
    assert all(s.queue == router.queue_of(s.shard) for s in sent)
    seen = _consumed(backend, router)
    for key in set(KEYS):
        q = router.queue_of(router.route(key))
        got = [v for k, v, _, _ in seen[q] if k == key.encode()]
        assert got == [v for k, v in zip(KEYS, VALUES, strict=True) if k == key]
    # ids are the backend's: the consumed message at that position has that id
    by_id = {(m.queue, m.id): m for q in router.live_queues() for m in backend.consume(q, "h", max_messages=10_000)}
    for key, value, s in zip(KEYS, VALUES, sent, strict=True):
        m = by_id[(s.queue, s.id)]
        assert (m.key, m.value, m.headers[SEQ_HEADER], m.headers[HASH_HEADER]) == (
            key.encode(), value, str(s.seq), str(hash_key(key)))


def test_one_epoch_per_call_and_a_reshard_waits_for_the_whole_batch():
    backend = MemoryBackend()
    router = _router(backend)
    sent = router.publish_many(KEYS, VALUES)
    assert {s.epoch for s in sent} == {1}
    # a reshard that starts while a batch is in flight waits for it: hold the backend's lock
    # so the batch stalls inside the gate, then try to reshard from another thread
    reshard_done = threading.Event()

    def reshard() -> None:
        with router.resharding(), router.shard_map.batch():
            router.shard_map.split("s0")
        reshard_done.set()

    with backend._cv:
        publisher = threading.Thread(target=router.publish_many, args=(KEYS, VALUES))
        publisher.start()
        while router._gate.readers == 0:  # the batch is inside the gate
            pass
        resharder = threading.Thread(target=reshard)
        resharder.start()
        assert not reshard_done.wait(0.2)
    publisher.join()
    resharder.join()
    assert reshard_done.is_set() and router.epoch == 2
    for shard in router.shard_map.shards:  # (the shard manager does this before a switch)
        backend.create_queue(router.queue_of(shard))
    later = router.publish_many(KEYS, VALUES)
    assert {s.epoch for s in later} == {2}


def test_sequence_numbers_are_contiguous_per_queue_and_continue_after_single_publishes():
    router = _router(MemoryBackend())
    first = router.publish("user-1", b"x")
    sent = router.publish_many(KEYS, VALUES)
    by_queue: dict[str, list[int]] = {}
    for s in sent:
        by_queue.setdefault(s.queue, []).append(s.seq)
    for q, seqs in by_queue.items():
        start = 2 if q == first.queue else 1
        assert seqs == list(range(start, start + len(seqs)))
    after = router.publish("user-1", b"y")
    assert after.seq == by_queue[first.queue][-1] + 1


def test_a_failing_group_voids_its_numbers_and_those_of_groups_not_sent():
    probe = _router(MemoryBackend())
    order = list(dict.fromkeys(probe.queue_of(probe.route(k)) for k in KEYS))  # groups in send order
    backend = FailingMemory(order[1])
    router = _router(backend)
    with pytest.raises(BackendUnavailableError) as info:
        router.publish_many(KEYS, VALUES)
    note = "\n".join(info.value.__notes__)
    assert order[0] in note and f"{order[1]} failed after 0 of" in note
    counts = {q: sum(probe.queue_of(probe.route(k)) == q for k in KEYS) for q in order}
    seen = _consumed(backend, router)
    assert len(seen[order[0]]) == counts[order[0]]  # sent before the failure: stays published
    for q in order[1:]:
        assert seen[q] == []
        assert router.fences.settled_up_to(q) == counts[q]  # voided: no fence waits for them
    assert router.fences.settled_up_to(order[0]) == 0  # published: settled only when acked


def test_without_the_hook_only_the_messages_not_published_are_voided():
    inner = MemoryBackend()
    backend = DyingOutage(inner, ok=3)
    router = _router(backend)
    assert not hasattr(backend, "publish_stamped_batch")
    with pytest.raises(BackendUnavailableError):
        router.publish_many(["k"] * 10, [b"v%d" % i for i in range(10)])
    q = router.queue_of(router.route("k"))
    assert [v for _, v, _, _ in _consumed(inner, router)[q]] == [b"v0", b"v1", b"v2"]
    fences = router.fences
    assert fences.settled_up_to(q) == 0 and fences._settled[q].above == set(range(4, 11))


def test_bad_input_is_refused_before_anything_is_sent():
    backend = MemoryBackend()
    router = _router(backend)
    with pytest.raises(InvalidValueError, match=r"values must have one entry per key: len\(keys\) is 2, len\(values\) is 1"):
        router.publish_many(["a", "b"], [b"1"])
    with pytest.raises(InvalidTypeError, match="keys must be a sequence"):
        router.publish_many("ab", [b"1", b"2"])
    with pytest.raises(InvalidTypeError, match="values must be a sequence"):
        router.publish_many(["a"], b"1")
    with pytest.raises(InvalidTypeError, match="key must be str, bytes or int"):
        router.publish_many(["a", 1.5], [b"1", b"2"])
    with pytest.raises(InvalidValueError, match="int key must be in"):
        router.publish_many([-(2**64)], [b"1"])
    with pytest.raises(InvalidTypeError, match="headers must be a mapping"):
        router.publish_many(["a"], [b"1"], headers=[("x", "y")])
    with pytest.raises(InvalidTypeError, match="value must be bytes or str"):
        router.publish_many(["a"], [1])
    with pytest.raises(MessageTooLargeError):
        router.publish_many(["a"], [b"x" * (backend.max_message_bytes + 1)])
    assert all(backend.backlog(q, "g") == 0 for q in router.live_queues())
    assert router.publish_many([], []) == []
    assert Router(ShardMap(2, ["a"], name="m")).route("a")  # no backend: a clear error
    with pytest.raises(InvalidValueError, match="publish_many needs a backend"):
        Router(ShardMap(2, ["a"], name="m")).publish_many(["a"], [b"1"])


def test_headers_and_key_types_match_single_publish():
    one, many = MemoryBackend(), MemoryBackend()
    r_one, r_many = _router(one), _router(many)
    keys = ["alice", b"bob", 42, "alice", 2**64 - 1, -5]
    values = [b"a", "text", b"c", b"d", b"e", b"f"]
    headers = {"trace": "t", SEQ_HEADER: "999"}  # the router's stamp wins over the caller's
    for k, v in zip(keys, values, strict=True):
        r_one.publish(k, v, headers=headers)
    sent = r_many.publish_many(keys, values, headers=headers)
    seen = _consumed(many, r_many)
    assert _consumed(one, r_one) == seen
    assert sent[0].seq == 1
    assert key_bytes(42) in {k for q in seen.values() for k, _, _, _ in q}


def test_the_fallback_without_the_hook_gives_the_same_messages():
    inner = MemoryBackend()
    fallback = OutageBackend(inner)  # no publish_stamped_batch, no publish_stamped
    direct = MemoryBackend()
    r_fallback, r_direct = _router(fallback), _router(direct)
    r_fallback.publish_many(KEYS, VALUES, headers={"x": "1"})
    r_direct.publish_many(KEYS, VALUES, headers={"x": "1"})
    assert _consumed(inner, r_fallback) == _consumed(direct, r_direct)


def test_the_batch_hook_validates_like_publish_batch():
    backend = MemoryBackend()
    backend.create_queue("q")
    with pytest.raises(InvalidValueError, match="keys, values and key_hashes must have the same length"):
        backend.publish_stamped_batch("q", [b"a"], [b"1"], 1, 1, [])
    with pytest.raises(InvalidValueError, match="first_seq"):
        backend.publish_stamped_batch("q", [b"a"], [b"1"], 1, 0, [5])
    with pytest.raises(InvalidValueError, match="epoch"):
        backend.publish_stamped_batch("q", [b"a"], [b"1"], -1, 1, [5])
    with pytest.raises(InvalidValueError, match="queue must be"):
        backend.publish_stamped_batch("bad name", [b"a"], [b"1"], 1, 1, [5])
    with pytest.raises(InvalidTypeError, match="headers must map str to str"):
        backend.publish_stamped_batch("q", [b"a"], [b"1"], 1, 1, [5], {"x": 1})
    assert backend.backlog("q", "g") == 0


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("one"), st.integers(0, 20)),
            st.tuples(st.just("many"), st.lists(st.integers(0, 20), max_size=30)),
        ),
        max_size=12,
    ),
)
def test_publish_many_then_consume_equals_publishing_one_by_one(ops):
    batched, single = MemoryBackend(), MemoryBackend()
    r_batched, r_single = _router(batched, 5), _router(single, 5)
    n = 0
    for kind, arg in ops:
        keys = [arg] if kind == "one" else arg
        values = [b"%d" % (n + i) for i in range(len(keys))]
        n += len(keys)
        if kind == "one":
            r_batched.publish(f"k{keys[0]}", values[0])
        else:
            r_batched.publish_many([f"k{k}" for k in keys], values)
        for k, v in zip(keys, values, strict=True):
            r_single.publish(f"k{k}", v)
    assert _consumed(batched, r_batched) == _consumed(single, r_single)


def test_shared_fences_stamp_the_producer_and_void_failed_numbers_in_the_store():
    from fastshard.sharding.fence_store import PRODUCER_HEADER, FenceStore

    one, many = MemoryBackend(), FailingMemory("none")
    r_one = Router(ShardMap(4, ["a"], name="m"), one, fence_store=FenceStore(one, "m"), producer_id="p1")
    r_many = Router(ShardMap(4, ["a"], name="m"), many, fence_store=FenceStore(many, "m"), producer_id="p1")
    for k, v in zip(KEYS, VALUES, strict=True):
        r_one.publish(k, v)
    r_many.publish_many(KEYS, VALUES)
    seen = _consumed(many, r_many)
    assert _consumed(one, r_one) == seen
    assert all(h[PRODUCER_HEADER] == "p1" for msgs in seen.values() for _, _, _, h in msgs)
    many.fail_queue = r_many.queue_of(r_many.route(KEYS[0]))
    with pytest.raises(BackendUnavailableError):
        r_many.publish_many(KEYS, VALUES)
    void = FenceStore(many, "m").read_marks("p1")["void"]
    n = sum(r_many.queue_of(r_many.route(k)) == many.fail_queue for k in KEYS)
    assert void[many.fail_queue] == list(range(n + 1, 2 * n + 1))  # the failed call's numbers
    assert sum(len(v) for v in void.values()) == len(KEYS)  # the first group failed: none sent


def test_the_memory_hook_passes_the_plugin_check():
    from fastshard.testing.publish_many import check_publish_many_matches_one_by_one

    check_publish_many_matches_one_by_one(MemoryBackend())


class GroupsMemory(MemoryBackend):
    """A memory backend with the all-groups hook (built on its batch hook); may fail."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.fail = False

    def publish_stamped_groups(self, groups, epoch, headers=None):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.fail:
            raise BackendUnavailableError("injected: every group refused")
        return [self.publish_stamped_batch(q, k, v, epoch, first, h, headers) for q, k, v, first, h in groups]


def test_the_all_groups_hook_is_called_once_and_a_failure_voids_every_number():
    backend, plain = GroupsMemory(), MemoryBackend()
    router, r_plain = _router(backend), _router(plain)
    sent = router.publish_many(KEYS, VALUES, headers={"x": "1"})
    assert backend.calls == 1
    assert sent == r_plain.publish_many(KEYS, VALUES, headers={"x": "1"})
    assert _consumed(backend, router) == _consumed(plain, r_plain)
    backend.fail = True
    with pytest.raises(BackendUnavailableError) as info:
        router.publish_many(KEYS, VALUES)
    assert "every sequence number was voided" in "\n".join(info.value.__notes__)
    for q in {s.queue for s in sent}:
        n = sum(s.queue == q for s in sent)
        assert router.fences._settled[q].above == set(range(n + 1, 2 * n + 1))
