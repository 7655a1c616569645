"""Kafka-specific behaviour: queue naming, committed offsets across restarts, placement, cut-over."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict

import jump
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard.errors import BackendError, InvalidValueError, MessageTooLargeError
from fastshard_kafka import KafkaBackend, PartitionCutover, PlacementPublisher, partition_for
from fastshard_kafka.placement import partitions_for


@pytest.fixture
def make_backend(kafka_mock_cluster):
    made: list[KafkaBackend] = []
    prefix = f"t{uuid.uuid4().hex[:10]}."

    def make(**kw) -> KafkaBackend:
        b = KafkaBackend(kafka_mock_cluster.bootstrap_servers, topic_prefix=prefix,
                         topic_manager=kafka_mock_cluster, timeout=5.0, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


# ---------------------------------------------------------------- naming
def test_queue_names_map_to_topic_partitions(make_backend):
    b = make_backend(partitions=3)
    assert b.topic_partition("orders") == (b.topic_prefix + "orders", 0)
    assert b.topic_partition("orders:2") == (b.topic_prefix + "orders", 2)
    for bad in ("orders:x", "orders:1:2", ":3", "orders:-1"):
        with pytest.raises(InvalidValueError, match="queue must"):
            b.topic_partition(bad)
    b.create_queue("orders:1")  # creates the topic with max(partitions, 2) partitions
    assert [q for q in b.list_queues() if q.startswith("orders")] == ["orders:0", "orders:1", "orders:2"]
    b.publish("orders:2", b"k", b"v")
    assert [m.value for m in b.consume("orders:2", "g", timeout=5.0)] == [b"v"]
    with pytest.raises(InvalidValueError, match="cannot delete a single partition"):
        b.delete_queue("orders:1")


def test_publishing_to_a_missing_queue_is_an_error_not_an_auto_created_topic(make_backend):
    b = make_backend()
    with pytest.raises(InvalidValueError, match="does not exist"):
        b.publish("never-created", b"k", b"v")
    assert "never-created" not in b.list_queues()


def test_mock_cluster_cannot_grow_topics_and_says_so(make_backend):
    b = make_backend()
    b.create_queue("small")
    with pytest.raises(BackendError, match="cannot add partitions"):
        b.create_queue("small:3")


# ---------------------------------------------------------------- offsets
def test_unacked_messages_come_back_after_a_restart_acked_ones_do_not(make_backend):
    first = make_backend()
    first.create_queue("work")
    first.publish_batch("work", [(b"k", str(i)) for i in range(6)])
    got = []
    while len(got) < 6:
        got += first.consume("work", "g", timeout=2.0)
    # ack 0, 1, 3: only the contiguous prefix 0-1 may be committed
    assert first.ack("work", "g", [got[i].id for i in (0, 1, 3)]) == 3
    assert first.committed_offset("work", "g") == 2
    assert first.ack("work", "g", [got[0].id]) == 0, "acking twice counts once"
    first.close()

    second = make_backend()  # a new process: only Kafka's committed offset survives
    again = []
    deadline = time.monotonic() + 10
    while len(again) < 4 and time.monotonic() < deadline:
        again += second.consume("work", "g", timeout=1.0)
    assert [m.value for m in again] == [b"2", b"3", b"4", b"5"]
    assert second.backlog("work", "g") == 4
    second.ack("work", "g", [m.id for m in again])
    assert second.committed_offset("work", "g") == 6
    assert second.backlog("work", "g") == 0


def test_failed_commit_leaves_messages_pending(make_backend, monkeypatch):
    b = make_backend(visibility_timeout=0.3, retries=1)
    b.create_queue("fragile")
    b.publish("fragile", b"k", b"v")
    [m] = b.consume("fragile", "g", timeout=5.0)
    state = b._groups[("fragile", "g")]

    class Broken:
        def __getattr__(self, name):
            return getattr(state.consumer, name)

        def commit(self, **kw):
            from confluent_kafka import KafkaError, KafkaException
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    real = state.consumer
    state.consumer = Broken()
    with pytest.raises(BackendError):
        b.ack("fragile", "g", [m.id])
    state.consumer = real
    time.sleep(0.4)
    again = b.consume("fragile", "g", timeout=2.0)
    assert [(x.value, x.delivery_count) for x in again] == [(b"v", 2)], "nothing half-applied"


# ---------------------------------------------------------------- placement
# A plain-Python twin of the placement (XXH3-64 of the documented key bytes, then Lamping &
# Veach jump hash), to prove the plugin feeds the compiled core the right bytes.
_MASK64 = (1 << 64) - 1


def _twin_partition(key, n):
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, str):
        data = key.encode()
    else:
        data = (key & _MASK64).to_bytes(8, "little")
    h, b, j = xxhash.xxh3_64_intdigest(data), -1, 0
    while j < n:
        b = j
        h = (h * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((h >> 33) + 1)))
    return b


_keys = st.one_of(st.binary(max_size=64), st.text(max_size=32), st.integers(-(2**63), 2**64 - 1))


@settings(max_examples=300, deadline=None)
@given(key=_keys, n=st.integers(1, 100_000))
def test_partition_for_equals_the_python_twin(key, n):
    assert partition_for(key, n) == _twin_partition(key, n)


def test_twin_jump_matches_the_reference_package():
    for h in (0, 1, 2**63, 2**64 - 1, 123456789):
        for n in (1, 2, 7, 1000):
            data = h.to_bytes(8, "little")
            assert _twin_partition(data, n) == jump.hash(xxhash.xxh3_64_intdigest(data), n)


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=50),
       n=st.integers(1, 64), extra=st.integers(1, 64))
def test_growing_partitions_moves_keys_only_to_new_partitions(keys, n, extra):
    for k in keys:
        before, after = partition_for(k, n), partition_for(k, n + extra)
        assert after == before or after >= n


def test_cutover_keeps_per_key_order_under_concurrent_publishing(make_backend):
    b = make_backend(partitions=8)
    b.create_queue("events:0")  # a topic with 8 partitions; placement starts over 4
    pub = PlacementPublisher(b, "events", 4, epoch=1)
    keys = [f"user-{i}" for i in range(24)]
    per_key = 30
    switched = threading.Event()
    fence: dict[int, int] = {}
    fence_ready = threading.Event()
    processed: list[tuple[str, int, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce():
        try:
            for i in range(per_key):
                if i == per_key // 2:
                    pub.switch(8, epoch=2)
                    switched.set()
                pub.publish_batch([(k, f"{k}|{i}") for k in keys])
        except BaseException as exc:
            errors.append(exc)

    def consume(partitions, wait_for_fence):
        try:
            if wait_for_fence:
                fence_ready.wait(30)
                cut = PartitionCutover(b, "events", 4, 8)
                assert cut.wait_drained("g", fence, timeout=30)
            while not stop.is_set():
                for p in partitions:
                    q = b.queue_name("events", p)
                    msgs = b.consume(q, "g", max_messages=50, timeout=0.02)
                    with lock:
                        for m in msgs:
                            k, i = m.value.decode().split("|")
                            processed.append((k, int(i), m.epoch))
                    if msgs:
                        b.ack(q, "g", [m.id for m in msgs])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce),
               threading.Thread(target=consume, args=(range(4), False)),
               threading.Thread(target=consume, args=(range(4, 8), True))]
    for t in threads:
        t.start()
    assert switched.wait(30)
    fence.update(PartitionCutover(b, "events", 4, 8).capture_fence())  # producer switched
    fence_ready.set()
    deadline = time.monotonic() + 60
    while len(processed) < len(keys) * per_key and time.monotonic() < deadline and not errors:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    seqs: dict[str, list[int]] = defaultdict(list)
    for k, i, _ in processed:
        seqs[k].append(i)
    assert len(processed) == len(keys) * per_key, "every message processed exactly once"
    moved = [k for k in keys if partition_for(k, 8) != partition_for(k, 4)]
    assert moved, "the test must move some keys"
    for k in keys:
        assert seqs[k] == list(range(per_key)), f"per-key order broken for {k}"
    assert {e for _, _, e in processed} == {1, 2}


def test_publish_routed_validates_every_queue_before_sending_anything(make_backend):
    b = make_backend(partitions=2)
    b.create_queue("multi:1")
    with pytest.raises(InvalidValueError, match="does not exist"):
        b.publish_routed({"multi:0": [(b"k", b"a")], "multi:7": [(b"k", b"b")]})
    with pytest.raises(MessageTooLargeError):
        b.publish_routed({"multi:0": [(b"k", b"a")], "multi:1": [(b"k", b"x" * (b.max_message_bytes + 1))]})
    assert b.high_watermark("multi:0") == 0 and b.high_watermark("multi:1") == 0, "nothing was sent"
    ids = b.publish_routed({"multi:0": [(b"k", b"a"), (b"k", b"b")], "multi:1": [(b"j", b"c")]}, epoch=4)
    assert ids == {"multi:0": ["0", "1"], "multi:1": ["0"]}
    got = b.consume("multi:0", "g", timeout=5.0)
    assert [(m.value, m.epoch) for m in got] == [(b"a", 4), (b"b", 4)]


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(_keys, max_size=40),
       n=st.integers(1, 100_000))
def test_vectorised_placement_equals_the_scalar_one(keys, n):
    assert partitions_for(keys, n).tolist() == [partition_for(k, n) for k in keys]
