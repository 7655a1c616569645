"""Publish throughput on Kafka: through fastshard (placement + backend) vs the raw client.

Both sides publish the same 2000 keyed messages to the same librdkafka mock cluster, in
the same run, and wait for every delivery report. The raw side is confluent-kafka's
Producer with its default partitioner; the fastshard side places each key with jump hash
and publishes through KafkaBackend (idempotent producer, confirmed batch per partition).

    pytest bench/test_bench_backend_kafka.py --benchmark-group-by=group
"""

from __future__ import annotations

import itertools
import uuid

import pytest

pytest.importorskip("fastshard_kafka", reason="fastshard-kafka plugin not installed")

from confluent_kafka import Producer  # noqa: E402

from fastshard_kafka import KafkaBackend, PlacementPublisher  # noqa: E402
from fastshard_kafka.testing import MockCluster  # noqa: E402

N_MESSAGES = 2000
PARTITIONS = 8
ITEMS = [(f"user-{i % 500}".encode(), b"x" * 100) for i in range(N_MESSAGES)]
_round = itertools.count()


@pytest.fixture(scope="module")
def cluster():
    with MockCluster(3) as c:
        yield c


@pytest.fixture(scope="module")
def topic(cluster):
    name = f"bench{uuid.uuid4().hex[:8]}"
    cluster.create_topic(name, PARTITIONS)
    return name


@pytest.mark.benchmark(group="kafka-publish-2000")
def test_raw_confluent_kafka_publish(benchmark, cluster, topic):
    producer = Producer({"bootstrap.servers": cluster.bootstrap_servers, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 1, "log_level": 3})
    failed: list = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    def run():
        for key, value in ITEMS:
            producer.produce(topic, value=value, key=key, on_delivery=report)
        assert producer.flush(30) == 0

    benchmark(run)
    assert not failed


@pytest.mark.benchmark(group="kafka-publish-2000")
def test_fastshard_placement_publish(benchmark, cluster, topic):
    backend = KafkaBackend(cluster.bootstrap_servers, topic_manager=cluster, timeout=30.0)
    backend.create_queue(f"{topic}:0")
    publisher = PlacementPublisher(backend, topic, PARTITIONS, epoch=1)
    try:
        result = benchmark(lambda: publisher.publish_batch(ITEMS))
        assert len(result) == N_MESSAGES
    finally:
        backend.close()


@pytest.mark.benchmark(group="kafka-publish-2000-paired")
def test_paired_publish(benchmark, cluster, topic):
    """Raw and fastshard rounds alternate in one benchmark, so both see the same machine load;
    the medians and their ratio land in extra_info (``--benchmark-json``)."""
    import statistics
    import time

    producer = Producer({"bootstrap.servers": cluster.bootstrap_servers, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 1, "log_level": 3})
    backend = KafkaBackend(cluster.bootstrap_servers, topic_manager=cluster, timeout=30.0)
    publisher = PlacementPublisher(backend, topic, PARTITIONS, epoch=1)
    times: dict[str, list[float]] = {"raw": [], "fastshard": []}
    failed: list = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    def raw():
        for key, value in ITEMS:
            producer.produce(topic, value=value, key=key, on_delivery=report)
        assert producer.flush(30) == 0 and not failed

    def fastshard():
        assert len(publisher.publish_batch(ITEMS)) == N_MESSAGES

    order = [("raw", raw), ("fastshard", fastshard)]

    def pair():
        order.reverse()
        for side, run in order:
            t0 = time.perf_counter()
            run()
            times[side].append(time.perf_counter() - t0)

    try:
        benchmark.pedantic(pair, rounds=15, iterations=1, warmup_rounds=1)
    finally:
        backend.close()
    raw_s, fs_s = statistics.median(times["raw"]), statistics.median(times["fastshard"])
    benchmark.extra_info.update(raw_median_s=raw_s, fastshard_median_s=fs_s, ratio=fs_s / raw_s)
    print(f"\nkafka publish {N_MESSAGES}, paired medians: raw {raw_s * 1e3:.2f} ms, "
          f"fastshard {fs_s * 1e3:.2f} ms, ratio {fs_s / raw_s:.3f}")
