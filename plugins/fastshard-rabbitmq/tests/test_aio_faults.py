"""AsyncRabbitMQBackend when the broker drops its connection: publishing rides it out
through aio-pika's reconnect and the backend's re-send of unconfirmed messages.

pytest-asyncio is not a dependency: each test drives its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from fastshard.testing.servers import require_server
from fastshard_rabbitmq import RabbitMQBackend
from fastshard_rabbitmq.aio import AsyncRabbitMQBackend

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix():
    require_server("RabbitMQ", "127.0.0.1", 5672)
    require_server("RabbitMQ management API", "127.0.0.1", 15672)
    p = f"f{uuid.uuid4().hex[:10]}."
    yield p
    cleaner = RabbitMQBackend(prefix=p)
    for q in cleaner.list_queues():
        cleaner.delete_queue(q)
    cleaner.close()


def test_a_connection_dropped_soon_after_connecting_is_ridden_out_by_the_default_retries(prefix):
    """aio-pika's robust connection sleeps ``reconnect_interval`` (5 s by default) after each
    (re)connect before it reacts to a drop, and the default 5 retries wait ~0.4-1.1 s in
    all: a drop in those 5 s failed every call until the sleep ended. Here the broker drops
    a 3.5 s old connection (no heartbeats while the loop is blocked)."""
    async def main() -> None:
        async with AsyncRabbitMQBackend("amqp://guest:guest@127.0.0.1:5672/?heartbeat=1",
                                        prefix=prefix, timeout=5.0) as b:
            await b.create_queue("q")
            time.sleep(3.5)  # blocks the loop: no heartbeats for 3.5 s, the broker drops us
            started = time.monotonic()
            mid = await b.publish("q", b"k", b"after the drop")  # default retries=5
            took = time.monotonic() - started
            assert took < 1.0, f"a publish after one dropped connection took {took:.2f} s"
            got = await b.consume("q", "g", timeout=5.0)
            assert [(m.id, m.value) for m in got] == [(mid, b"after the drop")]

    asyncio.run(main())
