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
