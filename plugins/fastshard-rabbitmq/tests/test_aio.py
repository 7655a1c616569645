"""AsyncRabbitMQBackend (aio-pika) against the local RabbitMQ: round trip, redelivery, interop
with the sync RabbitMQBackend in both directions, batch order, concurrent publishers, errors.

pytest-asyncio is not a dependency: each test drives its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pika
import pytest

from fastshard.backends.stamp import HASH_HEADER, SEQ_HEADER
from fastshard.errors import (
    BackendUnavailableError,
    InvalidTypeError,
    InvalidValueError,
    MessageTooLargeError,
    UnknownQueueError,
)
from fastshard.testing.servers import require_server
from fastshard_rabbitmq import RabbitMQBackend
from fastshard_rabbitmq.aio import AsyncRabbitMQBackend

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix():
    require_server("RabbitMQ", "127.0.0.1", 5672)
    require_server("RabbitMQ management API", "127.0.0.1", 15672)
    p = f"a{uuid.uuid4().hex[:10]}."
    yield p
    cleaner = RabbitMQBackend(prefix=p)
    for q in cleaner.list_queues():
        cleaner.delete_queue(q)
    cleaner.close()


async def _drain(b: AsyncRabbitMQBackend, q: str, g: str, n: int, *, ack: bool = True,
                 deadline_s: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < deadline:
        batch = await b.consume(q, g, max_messages=1000, timeout=0.2)
        got += batch
        if ack and batch:
            await b.ack(q, g, [m.id for m in batch])
    return got


def _sync_drain(b: RabbitMQBackend, q: str, g: str, n: int) -> list:
    got: list = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        batch = b.consume(q, g, max_messages=1000, timeout=0.2)
        got += batch
        if batch:
            b.ack(q, g, [m.id for m in batch])
    return got


def test_round_trip_and_unacked_messages_come_back_after_the_consumer_closes(prefix):
    async def main() -> None:
        async with AsyncRabbitMQBackend(prefix=prefix, timeout=5.0) as a:
            await a.create_queue("jobs")
            await a.create_queue("jobs")  # a no-op the second time
            ids = [await a.publish("jobs", b"k", str(i).encode(), epoch=3) for i in range(3)]
            got = await _drain(a, "jobs", "g", 3, ack=False)
            assert [(m.id, m.value, m.key, m.epoch, m.delivery_count) for m in got] == [
                (ids[i], str(i).encode(), b"k", 3, 1) for i in range(3)]
            assert await a.ack("jobs", "g", [got[0].id, got[0].id, "unknown"]) == 1
            assert await a.backlog("jobs", "g") == 2
        # closed holding 2 and 3: the broker requeues them for the next consumer
        async with AsyncRabbitMQBackend(prefix=prefix, timeout=5.0) as b:
            again = await _drain(b, "jobs", "g", 2)
            assert [m.value for m in again] == [b"1", b"2"]
            assert [m.id for m in again] == ids[1:], "ids survive redelivery"
            assert all(m.redelivered for m in again)
            assert await b.backlog("jobs", "g") == 0

    asyncio.run(main())


def test_a_message_not_acked_within_the_visibility_timeout_is_delivered_again(prefix):
    async def main() -> None:
        async with AsyncRabbitMQBackend(prefix=prefix, visibility_timeout=0.3, timeout=5.0) as a:
            await a.create_queue("slow")
            mid = await a.publish("slow", b"k", b"v")
            [first] = await _drain(a, "slow", "g", 1, ack=False)
            await asyncio.sleep(0.4)
            [second] = await _drain(a, "slow", "g", 1, ack=False)
            assert (first.id, second.id, second.delivery_count) == (mid, mid, 2)
            assert await a.ack("slow", "g", [mid]) == 1

    asyncio.run(main())


def _comparable(messages: list) -> list:
    """Messages without their delivery-specific fields (queue, id, key, value, headers, epoch)."""
    return [(m.queue, m.id, m.key, m.value, dict(m.headers), m.epoch, m.delivery_count)
            for m in messages]


def test_async_and_sync_backends_read_each_other_s_messages_identically(prefix):
    sync = RabbitMQBackend(prefix=prefix, timeout=5.0)
    stamp = {SEQ_HEADER: "12", HASH_HEADER: "98765", "trace": "t-1"}

    async def main() -> None:
        async with AsyncRabbitMQBackend(prefix=prefix, timeout=5.0) as a:
            await a.create_queue("to-sync")
            sync.create_queue("to-async")
            # async publish -> sync consume and sync publish -> async consume, same inputs
            a_ids = [await a.publish("to-sync", b"alice", b"v1", headers=stamp, epoch=7),
                     *await a.publish_batch("to-sync", [("bob", "v2"), (b"\xff\x00", b"")], epoch=2)]
            s_ids = [sync.publish("to-async", b"alice", b"v1", headers=stamp, epoch=7),
                     *sync.publish_batch("to-async", [("bob", "v2"), (b"\xff\x00", b"")], epoch=2)]
            by_sync = await asyncio.to_thread(_sync_drain, sync, "to-sync", "g", 3)
            by_async = await _drain(a, "to-async", "g", 3)
            assert [m.id for m in by_sync] == a_ids and [m.id for m in by_async] == s_ids
            expected = [(b"alice", b"v1", stamp, 7), (b"bob", b"v2", {}, 2), (b"\xff\x00", b"", {}, 2)]
            assert [(m.key, m.value, dict(m.headers), m.epoch) for m in by_sync] == expected
            # equal Message objects, apart from the queue they were read from and the id
            assert [(m.key, m.value, dict(m.headers), m.epoch, m.delivery_count) for m in by_async] \
                == [(m.key, m.value, dict(m.headers), m.epoch, m.delivery_count) for m in by_sync]

    try:
        asyncio.run(main())
    finally:
        sync.close()


def test_both_backends_put_the_same_properties_on_the_wire(prefix):
    sync = RabbitMQBackend(prefix=prefix, timeout=5.0)
    sync.create_queue("wire")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    raw = conn.channel()

    async def publish_async() -> None:
        async with AsyncRabbitMQBackend(prefix=prefix, timeout=5.0) as a:
            await a.publish("wire", b"k", b"v", headers={SEQ_HEADER: "1", HASH_HEADER: "2"}, epoch=5)

    def head() -> pika.BasicProperties:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            method, props, _ = raw.basic_get(sync.rabbit_queue("wire"), auto_ack=True)
            if method is not None:
                return props
            time.sleep(0.05)
        raise AssertionError("nothing on the queue")

    def fields(p: pika.BasicProperties) -> dict:
        d = {k: getattr(p, k) for k in ("content_type", "content_encoding", "delivery_mode",
                                        "priority", "correlation_id", "reply_to", "expiration",
                                        "timestamp", "type", "user_id", "app_id")}
        return {**d, "headers": p.headers, "id_form": len(p.message_id)}

    try:
        sync.publish("wire", b"k", b"v", headers={SEQ_HEADER: "1", HASH_HEADER: "2"}, epoch=5)
        from_sync = fields(head())
        asyncio.run(publish_async())
        from_async = fields(head())
        assert from_sync == from_async
        assert from_sync["headers"] == {"fastshard-key": b"k", "fs": "5 1 2"}
    finally:
        conn.close()
        sync.close()


def test_publish_batch_of_1000_keeps_order_and_returns_1000_ids(prefix):
    async def main() -> None:
        async with AsyncRabbitMQBackend(prefix=prefix, timeout=10.0) as a:
            await a.create_queue("big")
            ids = await a.publish_batch("big", [(b"k%d" % i, b"%d" % i) for i in range(1000)])
            assert len(ids) == len(set(ids)) == 1000
            got = await _drain(a, "big", "g", 1000)
            assert [int(m.value) for m in got] == list(range(1000))
            assert [m.id for m in got] == ids
            assert await a.publish_batch("big", []) == []

    asyncio.run(main())


def test_concurrent_publishers_lose_nothing_and_keep_each_one_s_order(prefix):
    async def main() -> None:
        async with AsyncRabbitMQBackend(prefix=prefix, timeout=10.0) as a:
            await a.create_queue("shared")

            async def producer(p: int) -> list[str]:
                ids = []
                for start in range(0, 100, 20):  # single publishes and batches, interleaved
                    ids.append(await a.publish("shared", b"p%d" % p, b"%d:%d" % (p, start)))
                    ids += await a.publish_batch(
                        "shared", [(b"p%d" % p, b"%d:%d" % (p, i)) for i in range(start + 1, start + 20)])
                return ids

            sent = await asyncio.gather(*[producer(p) for p in range(8)])
            got = await _drain(a, "shared", "g", 800)
            assert len(got) == 800 and {m.id for m in got} == {i for ids in sent for i in ids}
            for p in range(8):
                mine = [int(m.value.split(b":")[1]) for m in got if m.key == b"p%d" % p]
                assert mine == list(range(100)), f"producer {p} out of order"

    asyncio.run(main())


def test_errors_are_fastshard_errors_raised_before_sending(prefix):
    async def main() -> None:
        async with AsyncRabbitMQBackend(prefix=prefix, max_message_bytes=1000, timeout=5.0) as a:
            await a.create_queue("q")
            with pytest.raises(UnknownQueueError, match="'nowhere' does not exist"):
                await a.publish("nowhere", b"k", b"v")
            with pytest.raises(UnknownQueueError, match="'nowhere' does not exist"):
                await a.consume("nowhere", "g")
            with pytest.raises(MessageTooLargeError, match="at most 1000 bytes"):
                await a.publish_batch("q", [(b"k", b"ok"), (b"k", b"x" * 1001)])
            with pytest.raises(InvalidValueError, match="queue must be 1-200 characters"):
                await a.create_queue("no/slash")
            with pytest.raises(InvalidValueError, match="group must be"):
                await a.consume("q", "")
            with pytest.raises(InvalidValueError, match=r"epoch must be in \[0, "):
                await a.publish("q", b"k", b"v", epoch=-1)
            with pytest.raises(InvalidValueError, match=r"max_messages must be in \[1, 100000\]"):
                await a.consume("q", "g", max_messages=0)
            with pytest.raises(InvalidValueError, match="must not use the name 'fs'"):
                await a.publish("q", b"k", b"v", headers={"fs": "mine"})
            with pytest.raises(InvalidTypeError, match="ids must be a sequence"):
                await a.ack("q", "g", "one-id")
            # nothing of the refused batches reached the queue, and the backend still works
            assert await a.consume("q", "g", timeout=0.3) == []
            await a.publish("q", b"k", b"after")
            assert [m.value for m in await _drain(a, "q", "g", 1)] == [b"after"]
        with pytest.raises(InvalidValueError, match="url must be"):
            AsyncRabbitMQBackend("http://localhost")
        with pytest.raises(InvalidValueError, match="prefetch"):
            AsyncRabbitMQBackend(prefetch=0)

    asyncio.run(main())


def test_an_unreachable_broker_is_backend_unavailable_after_the_retries():
    async def main() -> None:
        b = AsyncRabbitMQBackend("amqp://guest:guest@127.0.0.1:1/%2F", timeout=0.5, retries=2)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:1 .*after 2 attempts"):
            await b.connect()
        with pytest.raises(BackendUnavailableError, match="after 2 attempts"):
            await b.publish("q", b"k", b"v")
        assert time.monotonic() - t0 < 5, "bounded by retries x timeout"
        await b.close()

    asyncio.run(main())
