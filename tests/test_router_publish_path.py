"""Router.publish's hot path: the gate written out inline, the ``publish_stamped`` hook, and
the record it returns."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest

from fastshard.backends.memory import MemoryBackend
from fastshard.errors import InvalidValueError, MessageTooLargeError
from fastshard.sharding import Router
from fastshard.sharding.fence import HASH_HEADER, SEQ_HEADER
from fastshard.sharding.router import RoutedMessage, hash_key, key_bytes, stamp_headers
from fastshard.shardmap import ShardMap


class StampingMemory(MemoryBackend):
    """A memory backend offering the hook; it records what the router handed it."""

    def __init__(self) -> None:
        super().__init__()
        self.stamped: list[tuple[str, bytes, int, int, int, Mapping[str, str] | None]] = []

    def publish_stamped(self, queue: str, key: bytes, value: bytes | str, epoch: int, seq: int,
                        key_hash: int, headers: Mapping[str, str] | None = None) -> str:
        self.stamped.append((queue, key, epoch, seq, key_hash, headers))
        return self.publish(queue, key, value, headers=stamp_headers(seq, key_hash, headers), epoch=epoch)


def _consumed(backend: MemoryBackend, router: Router) -> list[tuple[bytes, bytes, int, dict[str, str]]]:
    out = []
    for q in router.live_queues():
        out += [(m.key, m.value, m.epoch, dict(m.headers)) for m in backend.consume(q, "g", max_messages=1000)]
    return sorted(out)


def test_a_backend_with_publish_stamped_gets_the_numbers_and_consumers_see_the_same_messages():
    plain, stamping = MemoryBackend(), StampingMemory()
    r_plain = Router(ShardMap(4, ["a"], name="m"), plain)
    r_stamp = Router(ShardMap(4, ["a"], name="m"), stamping)
    sent = []
    for i, key in enumerate(["alice", b"bob", 42, "alice"]):
        headers = {"trace": str(i)} if i % 2 else None
        sent.append(r_plain.publish(key, b"v%d" % i, headers=headers))
        assert r_stamp.publish(key, b"v%d" % i, headers=headers)[:2] == sent[-1][:2]
    assert _consumed(plain, r_plain) == _consumed(stamping, r_stamp)
    queue, kb, epoch, seq, key_hash, headers = stamping.stamped[3]
    assert (kb, epoch, seq, key_hash) == (b"alice", 1, 2, hash_key("alice"))  # ints, not str headers
    assert headers == {"trace": "3"} and queue == sent[3].queue


def test_router_headers_win_over_a_callers_headers_of_the_same_name():
    backend = MemoryBackend()
    router = Router(ShardMap(2, ["a"], name="m"), backend)
    sent = router.publish("k", b"v", headers={SEQ_HEADER: "999", HASH_HEADER: "1", "x": "y"})
    [msg] = backend.consume(sent.queue, "g")
    assert msg.headers == {SEQ_HEADER: "1", HASH_HEADER: str(hash_key("k")), "x": "y"}


def test_a_failed_stamped_publish_settles_its_sequence_number_and_leaves_the_gate():
    backend = StampingMemory()
    router = Router(ShardMap(1, ["a"], name="m"), backend)
    q = router.queue_of("s0")
    router.publish("k", b"ok")
    with pytest.raises(MessageTooLargeError):
        router.publish("k", b"x" * (backend.max_message_bytes + 1))
    assert 2 in router.fences._settled[q].above  # seq 2 will never arrive: settled
    with router.resharding():  # the gate was left: a reshard can enter
        pass
    assert router.publish("k", b"ok").seq == 3


def test_routed_message_is_an_immutable_record():
    router = Router(ShardMap(2, ["a"], name="m"), MemoryBackend())
    sent = router.publish("k", b"v")
    assert isinstance(sent, RoutedMessage)
    assert (sent.shard, sent.queue, sent.epoch, sent.seq) == (router.route("k"), router.queue_of(sent.shard), 1, 1)
    with pytest.raises(AttributeError):
        sent.seq = 5  # type: ignore[misc]


def test_publish_keys_of_every_type_as_their_bytes():
    backend = StampingMemory()
    router = Router(ShardMap(2, ["a"], name="m"), backend)
    for key in ["é", b"\x00", 7, -1]:
        router.publish(key, b"v")
    assert [s[1] for s in backend.stamped] == [key_bytes(k) for k in ["é", b"\x00", 7, -1]]
    with pytest.raises(InvalidValueError, match="publish needs a backend"):
        Router(ShardMap(2, ["a"], name="m")).publish("k", b"v")


class BlockingBackend(MemoryBackend):
    """``publish`` waits for ``release`` once ``hold`` is set, so a test can keep one in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def _publish_batch(self, queue, batch, headers, epoch):  # type: ignore[no-untyped-def]
        if self.hold:
            self.entered.set()
            assert self.release.wait(10.0)
        return super()._publish_batch(queue, batch, headers, epoch)


def test_a_reshard_waits_for_the_publish_in_flight_and_producers_wait_for_the_reshard():
    backend = BlockingBackend()
    m = ShardMap(2, ["a", "b"], name="m")
    router = Router(m, backend)
    backend.hold = True
    publisher = threading.Thread(target=router.publish, args=("k", b"in flight"))
    publisher.start()
    assert backend.entered.wait(10.0)
    in_reshard = threading.Event()
    leave_reshard = threading.Event()

    def reshard() -> None:
        with router.resharding():
            in_reshard.set()
            assert leave_reshard.wait(10.0)

    resharder = threading.Thread(target=reshard)
    resharder.start()
    assert not in_reshard.wait(0.2)  # the publish in flight holds the gate
    backend.hold = False
    backend.release.set()
    assert in_reshard.wait(10.0)
    publisher.join(10.0)
    late = threading.Thread(target=router.publish, args=("k", b"after"))
    late.start()
    late.join(0.2)
    assert late.is_alive()  # producers wait while the reshard runs
    leave_reshard.set()
    late.join(10.0)
    resharder.join(10.0)
    assert not late.is_alive() and not resharder.is_alive()
    q = router.queue_of(m.shard_for("k"))
    assert [x.value for x in backend.consume(q, "g")] == [b"in flight", b"after"]
