"""What a fastshard message looks like on Kafka: one ``fs`` stamp header (epoch, sequence
number, key hash), read back into the same ``Message``; the older three-header form is still
read; the single-message publish paths validate and surface delivery failures."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from fastshard.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidValueError,
    MessageTooLargeError,
)
from fastshard.sharding import Router
from fastshard.sharding.fence import HASH_HEADER, SEQ_HEADER
from fastshard.sharding.router import hash_key
from fastshard.shardmap import ShardMap
from fastshard_kafka import EPOCH_HEADER, KafkaBackend


@pytest.fixture
def backend(kafka_mock_cluster):
    b = KafkaBackend(kafka_mock_cluster.bootstrap_servers, topic_prefix=f"w{uuid.uuid4().hex[:10]}.",
                     topic_manager=kafka_mock_cluster, timeout=5.0)
    yield b
    b.close()


def _wire(backend: KafkaBackend, queue: str, offset: int) -> list[tuple[str, bytes]]:
    """The raw Kafka headers of one message, read with a plain confluent-kafka consumer."""
    topic, p = backend.topic_partition(queue)
    c = Consumer({"bootstrap.servers": backend.bootstrap_servers, "group.id": "raw-reader",
                  "enable.auto.commit": False, "log_level": 3})
    try:
        c.assign([TopicPartition(topic, p, offset)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                return list(m.headers() or [])
        raise AssertionError(f"no message at {queue}@{offset}")
    finally:
        c.close()


def _consume_all(backend: KafkaBackend, queue: str, n: int):
    got = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        got += backend.consume(queue, "g", timeout=1.0)
    return got


def test_a_routed_message_carries_one_stamp_header_and_reads_back_as_sent(backend):
    router = Router(ShardMap(2, ["a"], name="m"), backend)
    sent = router.publish("alice", b"v")
    assert _wire(backend, sent.queue, int(sent.id)) == [("fs", f"1 1 {hash_key('alice')}".encode())]
    [msg] = _consume_all(backend, sent.queue, 1)
    assert (msg.key, msg.value, msg.epoch, msg.id) == (b"alice", b"v", 1, sent.id)
    assert msg.headers == {SEQ_HEADER: "1", HASH_HEADER: str(hash_key("alice"))}


def test_a_routed_message_with_caller_headers_keeps_them_next_to_the_stamp(backend):
    router = Router(ShardMap(1, ["a"], name="m"), backend)
    sent = router.publish(b"k", "text value", headers={"trace": "t-1"})
    assert _wire(backend, sent.queue, int(sent.id)) == [("trace", b"t-1"), ("fs", f"1 1 {hash_key(b'k')}".encode())]
    [msg] = _consume_all(backend, sent.queue, 1)
    assert msg.value == b"text value"
    assert msg.headers == {"trace": "t-1", SEQ_HEADER: "1", HASH_HEADER: str(hash_key(b"k"))}


def test_a_plain_publish_stamps_only_the_epoch(backend):
    backend.create_queue("plain")
    mid = backend.publish("plain", b"k", b"v", headers={"a": "b"}, epoch=7)
    ids = backend.publish_batch("plain", [(b"k", b"w")], epoch=8)
    assert _wire(backend, "plain", int(mid)) == [("a", b"b"), ("fs", b"7")]
    assert _wire(backend, "plain", int(ids[0])) == [("fs", b"8")]
    msgs = _consume_all(backend, "plain", 2)
    assert [(m.epoch, dict(m.headers)) for m in msgs] == [(7, {"a": "b"}), (8, {})]


def test_messages_in_the_older_three_header_form_are_still_read(backend):
    backend.create_queue("old")
    topic, p = backend.topic_partition("old")
    backend.producer.produce(topic, b"v", b"k", p, headers=[
        (SEQ_HEADER, b"4"), (HASH_HEADER, b"123"), (EPOCH_HEADER, b"9"), ("x", b"y")])
    backend.producer.produce(topic, b"v2", b"k", p, headers=[("fs", b"not a stamp")])
    backend.producer.flush(5)
    old, foreign = _consume_all(backend, "old", 2)
    assert old.epoch == 9 and old.headers == {SEQ_HEADER: "4", HASH_HEADER: "123", "x": "y"}
    assert foreign.epoch == 0 and foreign.headers == {"fs": "not a stamp"}  # another producer's header


def test_the_stamp_header_name_is_reserved(backend):
    backend.create_queue("q")
    with pytest.raises(InvalidValueError, match="must not use the name 'fs'"):
        backend.publish("q", b"k", b"v", headers={"fs": "mine"})
    with pytest.raises(InvalidValueError, match="must not use the name 'fs'"):
        backend.publish_stamped("q", b"k", b"v", 1, 1, 5, {"fs": "mine"})
    assert backend.high_watermark("q") == 0


def test_publish_stamped_outside_the_common_case_is_validated_like_publish(backend):
    backend.create_queue("q")
    with pytest.raises(InvalidValueError, match="does not exist"):
        backend.publish_stamped("missing", b"k", b"v", 1, 1, 5)
    with pytest.raises(MessageTooLargeError):
        backend.publish_stamped("q", b"k", b"x" * (backend.max_message_bytes + 1), 1, 1, 5)
    with pytest.raises(InvalidValueError, match="epoch"):
        backend.publish_stamped("q", b"k", b"v", -1, 1, 5)
    assert backend.high_watermark("q") == 0
    backend.publish_stamped("q", b"k", "str value", 2, 3, 4)  # a str value: the general path
    backend.publish_stamped("q", b"k", b"v", 2, 4, 4)  # the fast path (queue known by now)
    msgs = _consume_all(backend, "q", 2)
    assert [(m.value, m.epoch, dict(m.headers)) for m in msgs] == [
        (b"str value", 2, {SEQ_HEADER: "3", HASH_HEADER: "4"}), (b"v", 2, {SEQ_HEADER: "4", HASH_HEADER: "4"})]


class _FailingProducer:
    """Reports every delivery as failed with ``code`` (what librdkafka does after retrying)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.reports: list = []

    def produce(self, topic, value, key, partition, on_delivery, headers):  # noqa: ANN001
        self.reports.append(on_delivery)

    def flush(self, timeout: float) -> int:
        reports, self.reports = self.reports, []
        for report in reports:
            report(KafkaError(self.code), None)
        return 0


@pytest.mark.parametrize(("code", "error"), [(KafkaError._MSG_TIMED_OUT, BackendUnavailableError),
                                              (KafkaError.MSG_SIZE_TOO_LARGE, BackendError)])
def test_a_failed_delivery_is_raised_and_its_sequence_number_settled(backend, code, error):
    router = Router(ShardMap(1, ["a"], name="m"), backend)
    router.publish("k", b"first")  # the queue's target is known: the next publish takes the fast path
    backend._producer = _FailingProducer(code)
    with pytest.raises(error, match="publishing to .* failed after 0 of 1 messages"):
        router.publish("k", b"lost")
    assert 2 in router.fences._settled[router.queue_of("s0")].above


def test_publish_many_through_the_batch_hook_matches_publishing_one_by_one(backend):
    from fastshard.testing.publish_many import check_publish_many_matches_one_by_one

    check_publish_many_matches_one_by_one(backend, n=200)


def test_the_batch_hook_stamps_each_message_and_is_validated_like_publish_batch(backend):
    backend.create_queue("q")
    ids = backend.publish_stamped_batch("q", [b"a", b"b"], [b"1", "2"], 7, 5, [11, 12], {"x": "y"})
    assert ids == ["0", "1"]
    assert _wire(backend, "q", 1) == [("x", b"y"), ("fs", b"7 6 12")]
    with pytest.raises(InvalidValueError, match="does not exist"):
        backend.publish_stamped_batch("missing", [b"a"], [b"1"], 1, 1, [5])
    with pytest.raises(InvalidValueError, match="must not use the name 'fs'"):
        backend.publish_stamped_batch("q", [b"a"], [b"1"], 1, 1, [5], {"fs": "mine"})
    with pytest.raises(MessageTooLargeError):
        backend.publish_stamped_batch("q", [b"a", b"b"], [b"1", b"x" * (backend.max_message_bytes + 1)], 1, 1, [5, 6])
    assert [m.value for m in _consume_all(backend, "q", 2)] == [b"1", b"2"]


def test_all_groups_are_validated_before_any_is_produced_and_confirmed_together(backend):
    backend.create_queue("q0")
    backend.create_queue("q1")
    with pytest.raises(InvalidValueError, match="does not exist"):
        backend.publish_stamped_groups([("q0", [b"a"], [b"1"], 1, [5]), ("missing", [b"b"], [b"2"], 1, [6])], 3)
    with pytest.raises(MessageTooLargeError):
        backend.publish_stamped_groups([("q0", [b"a"], [b"1"], 1, [5]),
                                        ("q1", [b"b"], [b"x" * (backend.max_message_bytes + 1)], 1, [6])], 3)
    ids = backend.publish_stamped_groups([("q0", [b"a", b"c"], [b"1", b"3"], 4, [5, 7]),
                                          ("q1", [b"b"], [b"2"], 9, [6])], 3, {"x": "y"})
    assert ids == [["0", "1"], ["0"]]  # nothing of the refused calls reached q0
    assert _wire(backend, "q0", 1) == [("x", b"y"), ("fs", b"3 5 7")]
    assert _wire(backend, "q1", 0) == [("x", b"y"), ("fs", b"3 9 6")]
