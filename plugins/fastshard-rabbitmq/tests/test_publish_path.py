"""What a fastshard message looks like on RabbitMQ: the key header plus one ``fs`` stamp
(epoch, sequence number, key hash), read back into the same ``Message``; the older form with
separate epoch/sequence/hash headers is still read; ids stay unique without a uuid4 each."""

from __future__ import annotations

import time
import uuid

import pika
import pytest

from fastshard.errors import InvalidValueError, MessageTooLargeError, UnknownQueueError
from fastshard.sharding import Router
from fastshard.sharding.fence import HASH_HEADER, SEQ_HEADER
from fastshard.sharding.router import hash_key
from fastshard.shardmap import ShardMap
from fastshard.testing.servers import require_server
from fastshard_rabbitmq import EPOCH_HEADER, KEY_HEADER, RabbitMQBackend

pytestmark = pytest.mark.integration


@pytest.fixture
def backend():
    require_server("RabbitMQ", "127.0.0.1", 5672)
    require_server("RabbitMQ management API", "127.0.0.1", 15672)
    b = RabbitMQBackend(prefix=f"w{uuid.uuid4().hex[:10]}.", timeout=5.0)
    yield b
    for q in b.list_queues():
        b.delete_queue(q)
    b.close()


@pytest.fixture
def raw():
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    yield conn.channel()
    conn.close()


def _wire(raw, backend: RabbitMQBackend, queue: str) -> tuple[str, dict]:
    """(message id, AMQP headers) of the head of a shard's queue, left in place."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        method, props, _ = raw.basic_get(backend.rabbit_queue(queue), auto_ack=False)
        if method is not None:
            raw.basic_nack(method.delivery_tag, requeue=True)
            return props.message_id, dict(props.headers)
        time.sleep(0.05)
    raise AssertionError(f"nothing on {queue}")


def _consume(backend: RabbitMQBackend, queue: str, n: int):
    got = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        got += backend.consume(queue, "g", timeout=0.5)
    return got


def test_a_routed_message_carries_the_key_and_one_stamp_and_reads_back_as_sent(backend, raw):
    router = Router(ShardMap(1, ["a"], name="m"), backend)
    sent = router.publish("alice", b"v", headers={"trace": "t"})
    mid, headers = _wire(raw, backend, sent.queue)
    assert mid == sent.id
    assert headers == {KEY_HEADER: b"alice", "fs": f"1 1 {hash_key('alice')}", "trace": "t"}
    [msg] = _consume(backend, sent.queue, 1)
    assert (msg.key, msg.value, msg.epoch, msg.id) == (b"alice", b"v", 1, sent.id)
    assert msg.headers == {"trace": "t", SEQ_HEADER: "1", HASH_HEADER: str(hash_key("alice"))}


def test_a_plain_publish_stamps_only_the_epoch(backend, raw):
    backend.create_queue("plain")
    backend.publish("plain", b"k", b"v", headers={"a": "b"}, epoch=7)
    _, headers = _wire(raw, backend, "plain")
    assert headers == {"a": "b", KEY_HEADER: b"k", "fs": "7"}
    [msg] = _consume(backend, "plain", 1)
    assert (msg.epoch, dict(msg.headers)) == (7, {"a": "b"})


def test_messages_in_the_older_form_and_foreign_fs_headers_are_read(backend, raw):
    backend.create_queue("old")
    for headers in ({KEY_HEADER: b"k", EPOCH_HEADER: 9, SEQ_HEADER: "4", HASH_HEADER: "123"},
                    {KEY_HEADER: b"k", "fs": "not a stamp"}):
        raw.basic_publish(backend.exchange, "old", b"v",
                          properties=pika.BasicProperties(message_id=uuid.uuid4().hex, headers=headers))
    old, foreign = _consume(backend, "old", 2)
    assert old.epoch == 9 and old.headers == {SEQ_HEADER: "4", HASH_HEADER: "123"}
    assert foreign.epoch == 0 and foreign.headers == {"fs": "not a stamp"}


def test_publish_stamped_outside_the_common_case_is_validated_like_publish(backend):
    backend.create_queue("q")
    with pytest.raises(InvalidValueError, match="must not use the name 'fs'"):
        backend.publish_stamped("q", b"k", b"v", 1, 1, 5, {"fs": "mine"})
    with pytest.raises(MessageTooLargeError):
        backend.publish_stamped("q", b"k", b"x" * (backend.max_message_bytes + 1), 1, 1, 5)
    with pytest.raises(InvalidValueError, match="does not exist"):
        backend.publish_stamped("missing", b"k", b"v", 1, 1, 5)
    backend.publish_stamped("q", b"k", "str value", 2, 3, 4)  # a str value: the general path
    backend.publish_stamped("q", b"k", b"v", 2, 4, 4)  # the fast path (queue checked by now)
    msgs = _consume(backend, "q", 2)
    assert [(m.value, m.epoch, dict(m.headers)) for m in msgs] == [
        (b"str value", 2, {SEQ_HEADER: "3", HASH_HEADER: "4"}), (b"v", 2, {SEQ_HEADER: "4", HASH_HEADER: "4"})]


def test_message_ids_are_unique_within_and_across_backends(backend):
    other = RabbitMQBackend(prefix=backend.prefix, timeout=5.0)
    try:
        backend.create_queue("ids")
        ids = backend.publish_batch("ids", [(b"k", b"v")] * 50)
        ids += [backend.publish("ids", b"k", b"v") for _ in range(5)]
        ids += other.publish_batch("ids", [(b"k", b"v")] * 50)
        assert len(set(ids)) == len(ids) == 105
        assert sorted(m.id for m in _consume(backend, "ids", 105)) == sorted(ids)
    finally:
        other.close()


def _close_connection_from_the_broker(user_provided_name: str) -> None:
    """Make the broker close a client connection (as on a broker restart or a network cut)."""
    import base64
    import json
    import urllib.request
    from urllib.parse import quote

    auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
    base = "http://127.0.0.1:15672/api/connections"
    deadline = time.monotonic() + 15  # the management API lists a new connection after a few s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(urllib.request.Request(base, headers=auth), timeout=5) as resp:
            names = [c["name"] for c in json.load(resp) if c.get("user_provided_name") == user_provided_name]
        if names:
            for name in names:
                req = urllib.request.Request(f"{base}/{quote(name, safe='')}", method="DELETE", headers=auth)
                urllib.request.urlopen(req, timeout=5).close()
            return
        time.sleep(0.2)
    raise AssertionError(f"connection {user_provided_name!r} never appeared in the management API")


def test_a_connection_closed_under_the_publish_fast_path_is_reopened_and_nothing_is_lost(backend):
    name = f"fastshard-test-{uuid.uuid4().hex[:8]}"
    backend._pub._params.client_properties = {"connection_name": name}
    router = Router(ShardMap(1, ["a"], name="m"), backend)
    for i in range(3):
        router.publish("k", b"%d" % i)
    generation = backend._pub.generation
    _close_connection_from_the_broker(name)
    for i in range(3, 6):
        router.publish("k", b"%d" % i)
    assert backend._pub.generation > generation  # the fast path's failure led to a reconnect
    assert [m.value for m in _consume(backend, router.queue_of("s0"), 6)] == [b"%d" % i for i in range(6)]


# ---------------------------------------------------------------- batches in one transaction
def test_publish_many_through_the_batch_hook_matches_publishing_one_by_one(backend):
    from fastshard.testing.publish_many import check_publish_many_matches_one_by_one

    check_publish_many_matches_one_by_one(backend, n=200)


def test_a_batch_is_one_transaction_and_a_missing_queue_stores_none_of_it(backend):
    backend.create_queue("q")
    ids = backend.publish_batch("q", [(b"k%d" % i, b"%d" % i) for i in range(50)])
    assert len(set(ids)) == 50
    assert [m.value for m in _consume(backend, "q", 50)] == [b"%d" % i for i in range(50)]
    backend.create_queue("gone")
    backend.delete_queue("gone")
    with pytest.raises(UnknownQueueError, match="'gone' does not exist"):
        backend.publish_batch("gone", [(b"k", b"v")] * 10)
    # the transaction channel still works after the refusal, and nothing leaked into "q"
    backend.publish_batch("q", [(b"k", b"after"), (b"k", b"after2")])
    assert [m.value for m in _consume(backend, "q", 2)] == [b"after", b"after2"]


def test_a_connection_closed_mid_batch_resends_the_whole_transaction_once(backend):
    name = f"fastshard-tx-{uuid.uuid4().hex[:8]}"
    backend._batch._params.client_properties = {"connection_name": name}
    backend.create_queue("q")
    backend.publish_batch("q", [(b"k", b"warm"), (b"k", b"warm2")])  # opens the batch link
    generation = backend._batch.generation
    sent = []
    real_publish = None

    def publish_then_cut(ch, *args, **kwargs):
        sent.append(1)
        if len(sent) == 20:  # the broker drops us half-way through the transaction
            _close_connection_from_the_broker(name)
            time.sleep(0.3)
        return real_publish(ch, *args, **kwargs)

    import pika.adapters.blocking_connection as bc
    real_publish = bc.BlockingChannel.basic_publish
    bc.BlockingChannel.basic_publish = publish_then_cut
    try:
        ids = backend.publish_batch("q", [(b"k", b"%d" % i) for i in range(40)])
    finally:
        bc.BlockingChannel.basic_publish = real_publish
    assert backend._batch.generation > generation  # reconnected and re-sent
    got = _consume(backend, "q", 42)
    values = [m.value for m in got]
    # the cut transaction was discarded: each message exactly once, in order
    assert values == [b"warm", b"warm2"] + [b"%d" % i for i in range(40)]
    assert [m.id for m in got][2:] == ids
