"""RabbitMQ-specific behaviour: group queues, crash redelivery, single active consumer, placement."""

from __future__ import annotations

import time
import uuid

import jump
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard.errors import BackendUnavailableError, InvalidValueError
from fastshard.testing.servers import require_server
from fastshard_rabbitmq import RabbitMQBackend, ShardRouter, shard_for

pytestmark = pytest.mark.integration


@pytest.fixture
def make_backend():
    require_server("RabbitMQ", "127.0.0.1", 5672)
    require_server("RabbitMQ management API", "127.0.0.1", 15672)
    prefix = f"t{uuid.uuid4().hex[:10]}."
    made: list[RabbitMQBackend] = []

    def make(**kw) -> RabbitMQBackend:
        b = RabbitMQBackend(prefix=prefix, timeout=5.0, **kw)
        made.append(b)
        return b

    yield make
    cleaner = RabbitMQBackend(prefix=prefix)
    for q in cleaner.list_queues():
        cleaner.delete_queue(q)
    cleaner.close()
    for b in made:
        b.close()


def _drain(b, q, g, n, ack=True, deadline_s=10.0):
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < deadline:
        batch = b.consume(q, g, timeout=0.2)
        got += batch
        if ack and batch:
            b.ack(q, g, [m.id for m in batch])
    return got


def test_first_group_gets_the_backlog_later_groups_get_what_follows(make_backend):
    a, b = make_backend(), make_backend()  # two processes sharing the shard
    a.create_queue("orders")
    a.publish("orders", b"k", b"early")
    assert [m.value for m in _drain(a, "orders", "billing", 1)] == [b"early"]
    b.consume("orders", "audit", timeout=0.0)  # audit joins later, in another process
    a.publish("orders", b"k", b"late")
    assert [m.value for m in _drain(a, "orders", "billing", 1)] == [b"late"]
    assert [m.value for m in _drain(b, "orders", "audit", 1)] == [b"late"]
    # the first group stays first for every process: b reads billing from the shard queue
    assert b._state("orders", "billing").rabbit_queue == b.rabbit_queue("orders")
    assert b._state("orders", "audit").rabbit_queue == b.rabbit_queue("orders", "audit")


def test_a_crashed_consumer_s_messages_are_redelivered_to_another_process(make_backend):
    a = make_backend(visibility_timeout=60)
    a.create_queue("jobs")
    a.publish_batch("jobs", [(b"k", b"1"), (b"k", b"2"), (b"k", b"3")])
    got = _drain(a, "jobs", "g", 3, ack=False)
    a.ack("jobs", "g", [got[0].id])
    a.close()  # the process dies holding 2 and 3
    b = make_backend(visibility_timeout=60)
    again = _drain(b, "jobs", "g", 2)
    assert [m.value for m in again] == [b"2", b"3"]
    assert all(m.redelivered for m in again)
    assert [m.id for m in again] == [m.id for m in got[1:]], "ids survive redelivery"
    assert b.backlog("jobs", "g") == 0


def test_single_active_consumer_gives_one_consumer_the_whole_queue(make_backend):
    a = make_backend(single_active_consumer=True)
    b = make_backend(single_active_consumer=True)
    a.create_queue("ordered")
    a.consume("ordered", "g", timeout=0.2)  # a registers first and becomes the active one
    b.consume("ordered", "g", timeout=0.2)
    a.publish_batch("ordered", [(b"k", str(i)) for i in range(20)])
    got_a = _drain(a, "ordered", "g", 20)
    assert [int(m.value) for m in got_a] == list(range(20))
    assert b.consume("ordered", "g", timeout=0.3) == []


def test_publishing_to_a_missing_queue_is_an_error(make_backend):
    b = make_backend()
    with pytest.raises(InvalidValueError, match="does not exist"):
        b.publish("nowhere", b"k", b"v")
    with pytest.raises(InvalidValueError, match="does not exist"):
        b.consume("nowhere", "g")


def test_bad_options_are_rejected():
    with pytest.raises(InvalidValueError, match="url must be"):
        RabbitMQBackend("http://localhost")
    with pytest.raises(InvalidValueError, match="queue_type"):
        RabbitMQBackend(queue_type="stream")
    with pytest.raises(InvalidValueError, match="prefetch"):
        RabbitMQBackend(prefetch=0)


def test_unreachable_server_is_reported_after_retries():
    b = RabbitMQBackend("amqp://guest:guest@127.0.0.1:1/%2F", timeout=0.5, retries=2)
    with pytest.raises(BackendUnavailableError, match="after 2 attempts"):
        b.ping()


_MASK64 = (1 << 64) - 1


def _twin_shard(key, shards):
    """Plain-Python twin: XXH3-64 of the documented key bytes, then Lamping & Veach jump hash."""
    data = key if isinstance(key, bytes) else key.encode() if isinstance(key, str) else (key & _MASK64).to_bytes(8, "little")
    h, b, j = xxhash.xxh3_64_intdigest(data), -1, 0
    while j < len(shards):
        b = j
        h = (h * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((h >> 33) + 1)))
    return shards[b]


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(st.binary(max_size=32), st.text(max_size=16), st.integers(-(2**63), 2**64 - 1)),
       n=st.integers(1, 300))
def test_shard_for_equals_the_python_twin(key, n):
    shards = [f"s{i}" for i in range(n)]
    assert shard_for(key, shards) == _twin_shard(key, shards)


def test_twin_jump_matches_the_reference_package():
    for h in (0, 1, 2**63, 2**64 - 1):
        data = h.to_bytes(8, "little")
        for n in (1, 3, 1000):
            assert _twin_shard(data, list(range(n))) == jump.hash(xxhash.xxh3_64_intdigest(data), n)


def test_router_places_keys_and_growth_only_moves_keys_to_new_shards(make_backend):
    b = make_backend()
    shards = [f"s{i}" for i in range(3)]
    for s in shards + ["s3"]:
        b.create_queue(s)
    router = ShardRouter(b, shards, epoch=1)
    keys = [f"user-{i}" for i in range(40)]
    placed = router.publish_batch([(k, k) for k in keys])
    assert [q for q, _ in placed] == [shard_for(k, shards) for k in keys]
    router.switch(shards + ["s3"], epoch=2)
    for k in keys:
        assert router.queue_for(k) in (shard_for(k, shards), "s3")
    got = {m.value.decode(): m for s in shards for m in _drain(b, s, "g", 100, deadline_s=1.0)}
    assert sorted(got) == sorted(keys)
    assert {m.epoch for m in got.values()} == {1}
