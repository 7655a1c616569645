"""Publish throughput on RabbitMQ: through fastshard (placement + backend) vs raw pika.

Both sides publish the same 500 keyed messages with publisher confirms (one confirm per
message, pika's BlockingChannel) to the local server in the same run, persistent and
mandatory, through a direct exchange to the same 4 shard queues. The raw side uses routing
keys computed before the clock starts; the fastshard side places each key with jump hash
and publishes through RabbitMQBackend (validation, headers with key and epoch, message id),
so the ratio is the cost of fastshard's routing and bookkeeping.

    pytest bench/test_bench_backend_rabbitmq.py --benchmark-group-by=group
"""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("fastshard_rabbitmq", reason="fastshard-rabbitmq plugin not installed")

import pika  # noqa: E402

from fastshard.testing.servers import require_server  # noqa: E402
from fastshard_rabbitmq import RabbitMQBackend, ShardRouter, shard_for  # noqa: E402

N_MESSAGES = 500
SHARDS = [f"shard{i}" for i in range(4)]
ITEMS = [(f"user-{i % 100}".encode(), b"x" * 100) for i in range(N_MESSAGES)]


@pytest.fixture
def prefix():
    require_server("RabbitMQ", "127.0.0.1", 5672)
    return f"bench{uuid.uuid4().hex[:8]}."


@pytest.mark.benchmark(group="rabbitmq-publish-500")
def test_raw_pika_publish(benchmark, prefix):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    ch = conn.channel()
    ch.confirm_delivery()
    exchange = prefix + "raw"
    ch.exchange_declare(exchange, exchange_type="direct", durable=True)
    for s in SHARDS:
        ch.queue_declare(prefix + s, durable=True)
        ch.queue_bind(prefix + s, exchange, routing_key=s)
    routed = [(shard_for(key, SHARDS), value) for key, value in ITEMS]
    props = pika.BasicProperties(delivery_mode=2)

    def run():
        for routing_key, value in routed:
            ch.basic_publish(exchange, routing_key, value, properties=props, mandatory=True)

    try:
        benchmark(run)
    finally:
        for s in SHARDS:
            ch.queue_delete(prefix + s)
        ch.exchange_delete(exchange)
        conn.close()


@pytest.mark.benchmark(group="rabbitmq-publish-500")
def test_fastshard_router_publish(benchmark, prefix):
    backend = RabbitMQBackend(prefix=prefix)
    for s in SHARDS:
        backend.create_queue(s)
    router = ShardRouter(backend, SHARDS, epoch=1)
    try:
        result = benchmark(lambda: router.publish_batch(ITEMS))
        assert len(result) == N_MESSAGES
    finally:
        require_server("RabbitMQ management API", "127.0.0.1", 15672)
        for s in SHARDS:
            backend.delete_queue(s)
        backend.close()


# ---------------------------------------------------------------------------- asyncio
# AsyncRabbitMQBackend.publish_batch (validation, stamp, ids, properties; every publish sent,
# then every confirm awaited) vs raw aio-pika sending the same 2,000 persistent messages with
# the same id, key header and stamp, mandatory, on a confirm channel, confirms awaited the same
# way (asyncio.gather). Rounds alternate raw and fastshard inside one benchmark so both see
# the same machine load; the medians and the median of per-round ratios land in extra_info.
N_ASYNC = 2_000
ASYNC_ROUNDS = 15
ASYNC_ITEMS = [(f"user-{i % 100}".encode(), b"x" * 100) for i in range(N_ASYNC)]


@pytest.mark.benchmark(group="rabbitmq-aio-publish-batch-2000-paired")
def test_aio_publish_batch_paired(benchmark, prefix):
    import asyncio
    import statistics
    import time

    import aio_pika

    from fastshard_rabbitmq.aio import AsyncRabbitMQBackend

    loop = asyncio.new_event_loop()
    backend = AsyncRabbitMQBackend(prefix=prefix, timeout=30.0)
    times: dict[str, list[float]] = {"raw": [], "fastshard": []}

    async def setup():
        await backend.create_queue("fs")
        await backend.create_queue("raw")
        conn = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1:5672/%2F")
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.declare_exchange(backend.exchange, aio_pika.ExchangeType.DIRECT,
                                                  durable=True)
        return conn, exchange

    conn, exchange = loop.run_until_complete(setup())
    counter = iter(range(10**9))

    async def raw():
        messages = [aio_pika.Message(value, message_id=f"raw{next(counter):x}",
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                     headers={"fastshard-key": bytearray(key), "fs": "1"})
                    for key, value in ASYNC_ITEMS]
        await asyncio.gather(*[exchange.publish(m, "raw", mandatory=True) for m in messages])

    async def fastshard():
        assert len(await backend.publish_batch("fs", ASYNC_ITEMS, epoch=1)) == N_ASYNC

    order = [("raw", raw), ("fastshard", fastshard)]

    def pair():
        order.reverse()  # alternate who goes first
        for side, run in order:
            t0 = time.perf_counter()
            loop.run_until_complete(run())
            times[side].append(time.perf_counter() - t0)

    async def teardown():
        await conn.close()
        await backend.delete_queue("fs")
        await backend.delete_queue("raw")
        await backend.close()

    try:
        benchmark.pedantic(pair, rounds=ASYNC_ROUNDS, iterations=1, warmup_rounds=1)
    finally:
        require_server("RabbitMQ management API", "127.0.0.1", 15672)
        loop.run_until_complete(teardown())
        loop.close()
    raw_s, fs_s = statistics.median(times["raw"]), statistics.median(times["fastshard"])
    pair_ratio = statistics.median(f / r for f, r in zip(times["fastshard"], times["raw"], strict=True))
    benchmark.extra_info.update(raw_median_s=raw_s, fastshard_median_s=fs_s,
                                ratio_of_medians=fs_s / raw_s, median_pair_ratio=pair_ratio)
    print(f"\naio publish_batch {N_ASYNC}, paired medians: raw aio-pika {raw_s * 1e3:.1f} ms, "
          f"fastshard {fs_s * 1e3:.1f} ms, ratio of medians {fs_s / raw_s:.3f}, "
          f"median per-round ratio {pair_ratio:.3f}")
