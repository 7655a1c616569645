"""Routed publish through fastshard vs the raw client, per backend, in the same run.

``routed-publish-<backend>``: N keyed messages, one at a time, each confirmed before the
next (what :meth:`fastshard.sharding.Router.publish` promises: it returns the message id).

* fastshard: ``Router(ShardMap(8), backend).publish(key, value)`` — key hash, shard-map
  lookup, the router's gate and sequence number, the epoch/``fs-seq``/``fs-hash`` stamp
  (one ``fs`` header on Kafka and RabbitMQ, through their ``publish_stamped``), the checks,
  then the backend's confirmed publish.
* raw: the backend's own client library publishing the same key and value, confirmed one by
  one, to the same partition / queue / stream, which was computed before the clock started.

  ========== ========================================================================
  Kafka      ``Producer.produce(topic, key, value, partition, on_delivery)`` + ``flush()``,
             the report checked for an error (``flush()`` returning 0 alone does not tell a
             failed delivery from a good one; ``Router.publish`` returns an id or raises).
             Produced through the backend's own ``Producer`` (``KafkaBackend.producer``):
             on this machine two Producer instances in one process ran the identical
             loop at 0.64-1.27x of each other (mock cluster, paired rounds), which swamps
             a 5 % comparison. ``..._paired_own_producer`` keeps the earlier
             variant (a second Producer with the same settings) for comparison.
  RabbitMQ   pika ``basic_publish`` on a confirm channel, persistent and mandatory
  Redis      redis-py ``XADD`` to the same stream
  PostgreSQL psycopg ``INSERT`` of (queue, key, value, epoch) into a table, autocommit
  ========== ========================================================================

``epoch-change-<backend>``: the latency from "a writer publishes epoch N+1 through its own
backend client" to "a router in another client routes a key under N+1": ``ShardMapStore``
publish (versioned CAS + notify) -> ``ShardMapWatcher.poll`` in the second client wakes and
loads the map -> ``shard_for`` on it. Peer: the raw client writing a value and notifying,
the other client receiving the notification and reading the value back.

    .venv/bin/pytest bench/test_bench_routing.py --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds
    .venv/bin/pytest bench/test_bench_routing.py --benchmark-disable      # quick mode (CI)

Each backend's cases skip when its plugin or server is missing (and fail under CI=true).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastshard.sharding.router import Router, key_bytes
from fastshard.shardmap import ShardMap
from fastshard.shardmap_store import ShardMapStore
from fastshard.testing.servers import require_server

N_MESSAGES = 200
SHARDS = 8
EPOCH_HISTORY = 16
VALUE = b"x" * 100
KEYS = [key_bytes(f"user-{i % 97}") for i in range(N_MESSAGES)]
REDIS_URL = os.environ.get("FASTSHARD_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("FASTSHARD_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


# throughput: one batch of N_BATCH keyed messages (Router.publish_many vs the client's batch path)
N_BATCH = 2000
BATCH_KEYS = [key_bytes(f"user-{i % 997}") for i in range(N_BATCH)]
BATCH_VALUES = [VALUE] * N_BATCH


def _map() -> ShardMap:
    return ShardMap(SHARDS, ["n0", "n1"], name=f"b{uuid.uuid4().hex[:6]}")


def _targets(router: Router) -> list[tuple[str, bytes]]:
    """(queue, key) per message, computed outside the timed region for the raw client."""
    return [(router.queue_of(router.route(k)), k) for k in KEYS]


def _routed(router: Router) -> Callable[[], int]:
    publish = router.publish

    def run() -> int:
        for k in KEYS:
            publish(k, VALUE)
        return len(KEYS)

    return run


def _routed_many(router: Router) -> Callable[[], int]:
    publish_many = router.publish_many

    def run() -> int:
        return len(publish_many(BATCH_KEYS, BATCH_VALUES))

    return run


def _raw_placement(n_targets: int) -> Callable[[bytes], int]:
    """The raw side's own routing: XXH3-64 of the key modulo the number of queues. It is
    computed inside the timed region, per message, as fastshard routes inside it: without
    it the raw side would skip work the comparison is about (it places keys differently
    from the shard map's slices, which does not matter for the cost)."""
    import xxhash

    digest = xxhash.xxh3_64_intdigest
    return lambda key: digest(key) % n_targets


# Each backend has three cases: fastshard alone and raw alone (pytest-benchmark medians, one
# after the other), and "paired", which alternates raw and fastshard rounds inside one
# benchmark so that both see the same background load; its medians and ratio go into
# extra_info and the table printed at the end of the module. On a shared, loaded machine the
# paired ratio is the number to trust.
PAIRED_ROUNDS = 11
PAIRED: list[tuple[str, float, float, float]] = []


@pytest.fixture(scope="module", autouse=True)
def _paired_summary(pytestconfig: Any) -> Iterator[None]:
    yield
    if not PAIRED:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"routed publish: {N_MESSAGES} messages confirmed one by one, or (throughput) "
                        f"{N_BATCH} in one batch; paired rounds (medians)")
    for col in ("backend", "raw ms", "fastshard ms", "fastshard / raw", "median of per-round ratios"):
        table.add_column(col, justify="right")
    for name, raw_s, fs_s, pair_ratio in PAIRED:
        table.add_row(name, f"{raw_s * 1e3:.2f}", f"{fs_s * 1e3:.2f}", f"{fs_s / raw_s:.3f}",
                      f"{pair_ratio:.3f}")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # module teardown output is otherwise swallowed
        console = Console(width=110)
        console.print()
        console.print(table)
    PAIRED.clear()


def _paired(benchmark: Any, name: str, fastshard_run: Callable[[], int], raw_run: Callable[[], int],
            n: int = N_MESSAGES) -> None:
    times: dict[str, list[float]] = {"raw": [], "fastshard": []}
    order = [("raw", raw_run), ("fastshard", fastshard_run)]

    def pair() -> None:
        order.reverse()  # alternate who goes first, so neither always runs on a warm socket
        for side, run in order:
            t0 = time.perf_counter()
            assert run() == n
            times[side].append(time.perf_counter() - t0)

    benchmark.pedantic(pair, rounds=PAIRED_ROUNDS, iterations=1, warmup_rounds=1)
    raw_s, fs_s = statistics.median(times["raw"]), statistics.median(times["fastshard"])
    pair_ratio = statistics.median(f / r for f, r in zip(times["fastshard"], times["raw"], strict=True))
    benchmark.extra_info.update(raw_median_s=raw_s, fastshard_median_s=fs_s,
                                ratio_of_medians=fs_s / raw_s, median_pair_ratio=pair_ratio)
    PAIRED.append((name, raw_s, fs_s, pair_ratio))


# ---------------------------------------------------------------------------- Kafka
@pytest.fixture(scope="module")
def kafka() -> Iterator[Any]:
    pytest.importorskip("fastshard_kafka", reason="fastshard-kafka plugin not installed")
    from fastshard_kafka import KafkaBackend
    from fastshard_kafka.testing import MockCluster

    with MockCluster(3) as cluster:
        backend = KafkaBackend(cluster.bootstrap_servers, topic_manager=cluster, timeout=30.0)
        router = Router(_map(), backend)  # creates one single-partition topic per shard
        try:
            yield cluster, backend, router
        finally:
            backend.close()


def _kafka_raw(kafka: Any, *, own_producer: bool = False) -> Callable[[], int]:
    from confluent_kafka import Producer

    cluster, backend, router = kafka
    producer = backend.producer if not own_producer else Producer({
        "bootstrap.servers": cluster.bootstrap_servers, "enable.idempotence": True,
        "acks": "all", "linger.ms": 1, "log_level": 3})
    targets = [(*backend.topic_partition(q), k) for q, k in _targets(router)]
    failed: list[Any] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    def run() -> int:
        for topic, p, k in targets:
            producer.produce(topic, value=VALUE, key=k, partition=p, on_delivery=report)
            producer.flush(30)
        assert not failed, failed
        return len(targets)

    return run


@pytest.mark.benchmark(group="routed-publish-kafka")
def test_kafka_routed_fastshard(benchmark: Any, kafka: Any) -> None:
    assert benchmark(_routed(kafka[2])) == N_MESSAGES


@pytest.mark.benchmark(group="routed-publish-kafka")
def test_kafka_routed_raw_confluent(benchmark: Any, kafka: Any) -> None:
    assert benchmark(_kafka_raw(kafka)) == N_MESSAGES


@pytest.mark.benchmark(group="routed-publish-paired")
def test_kafka_routed_paired(benchmark: Any, kafka: Any) -> None:
    _paired(benchmark, "kafka (mock cluster)", _routed(kafka[2]), _kafka_raw(kafka))


@pytest.mark.benchmark(group="routed-publish-paired")
def test_kafka_routed_paired_own_producer(benchmark: Any, kafka: Any) -> None:
    """The earlier peer: raw publishes through a second Producer (see the module docstring)."""
    _paired(benchmark, "kafka, raw on its own Producer", _routed(kafka[2]), _kafka_raw(kafka, own_producer=True))


def _kafka_raw_batch(kafka: Any) -> Callable[[], int]:
    """confluent-kafka's batch path: produce every message, then one flush; the reports
    checked for errors, as publish_many raises on a failed delivery."""
    _, backend, router = kafka
    producer = backend.producer
    targets = [backend.topic_partition(router.queue_of(s)) for s in router.shard_map.shards]
    place = _raw_placement(len(targets))
    failed: list[Any] = []
    delivered = [0]

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)
        else:
            delivered[0] += 1

    def run() -> int:
        delivered[0] = 0
        produce = producer.produce
        for k, v in zip(BATCH_KEYS, BATCH_VALUES, strict=True):
            topic, p = targets[place(k)]
            produce(topic, value=v, key=k, partition=p, on_delivery=report)
        producer.flush(30)
        assert not failed and delivered[0] == N_BATCH, failed
        return N_BATCH

    return run


@pytest.mark.benchmark(group="routed-throughput-kafka")
def test_kafka_throughput_paired(benchmark: Any, kafka: Any) -> None:
    _paired(benchmark, "kafka throughput", _routed_many(kafka[2]), _kafka_raw_batch(kafka), N_BATCH)


# ---------------------------------------------------------------------------- RabbitMQ
@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[Any]:
    pytest.importorskip("fastshard_rabbitmq", reason="fastshard-rabbitmq plugin not installed")
    require_server("RabbitMQ", "127.0.0.1", 5672)
    import pika

    from fastshard_rabbitmq import RabbitMQBackend

    backend = RabbitMQBackend(prefix=f"bench{uuid.uuid4().hex[:8]}.")
    router = Router(_map(), backend)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    try:
        yield backend, router, conn
    finally:
        conn.close()
        require_server("RabbitMQ management API", "127.0.0.1", 15672)
        for q in router.live_queues():
            backend.delete_queue(q)
        backend.close()


def _rabbitmq_raw(rabbitmq: Any) -> Callable[[], int]:
    import pika

    backend, router, conn = rabbitmq
    ch = conn.channel()
    ch.confirm_delivery()
    # the backend's exchange routes a fastshard queue name to its RabbitMQ queue; the key
    # travels in a header, as AMQP has no message key
    targets = _targets(router)
    props = pika.BasicProperties

    def run() -> int:
        for q, k in targets:
            ch.basic_publish(backend.exchange, q, VALUE, mandatory=True,
                             properties=props(delivery_mode=2, headers={"k": k}))
        return len(targets)

    return run


def _rabbitmq_raw_batch(rabbitmq: Any) -> Callable[[], int]:
    """pika's batch path on a blocking channel: publish every message inside one AMQP
    transaction, then one tx.commit (a confirm channel would wait per message), with the
    returns for unroutable messages checked as publish_many raises on them."""
    import pika

    backend, router, conn = rabbitmq
    ch = conn.channel()
    ch.tx_select()
    returned: list[bytes] = []
    ch.add_on_return_callback(lambda _c, _m, _p, body: returned.append(body))
    queues = [router.queue_of(s) for s in router.shard_map.shards]
    place = _raw_placement(len(queues))
    props = pika.BasicProperties

    def run() -> int:
        publish, exchange = ch.basic_publish, backend.exchange
        for k, v in zip(BATCH_KEYS, BATCH_VALUES, strict=True):
            publish(exchange, queues[place(k)], v, mandatory=True, properties=props(delivery_mode=2, headers={"k": k}))
        ch.tx_commit()
        conn.process_data_events(0)
        assert not returned
        return N_BATCH

    return run


@pytest.mark.benchmark(group="routed-throughput-rabbitmq")
def test_rabbitmq_throughput_paired(benchmark: Any, rabbitmq: Any) -> None:
    _paired(benchmark, "rabbitmq throughput", _routed_many(rabbitmq[1]), _rabbitmq_raw_batch(rabbitmq), N_BATCH)


@pytest.mark.benchmark(group="routed-publish-rabbitmq")
def test_rabbitmq_routed_fastshard(benchmark: Any, rabbitmq: Any) -> None:
    assert benchmark(_routed(rabbitmq[1])) == N_MESSAGES


@pytest.mark.benchmark(group="routed-publish-rabbitmq")
def test_rabbitmq_routed_raw_pika(benchmark: Any, rabbitmq: Any) -> None:
    assert benchmark(_rabbitmq_raw(rabbitmq)) == N_MESSAGES


@pytest.mark.benchmark(group="routed-publish-paired")
def test_rabbitmq_routed_paired(benchmark: Any, rabbitmq: Any) -> None:
    _paired(benchmark, "rabbitmq", _routed(rabbitmq[1]), _rabbitmq_raw(rabbitmq))


# ---------------------------------------------------------------------------- Redis
def _require_redis() -> None:
    from urllib.parse import urlparse

    u = urlparse(REDIS_URL)
    require_server("Redis", u.hostname or "127.0.0.1", u.port or 6379)


@pytest.fixture(scope="module")
def redis_env() -> Iterator[Any]:
    fastshard_redis = pytest.importorskip("fastshard_redis", reason="fastshard-redis plugin not installed")
    import redis

    _require_redis()
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    writer = fastshard_redis.RedisBackend(url=REDIS_URL, namespace=ns)
    reader = fastshard_redis.RedisBackend(url=REDIS_URL, namespace=ns)
    raw = redis.Redis.from_url(REDIS_URL)
    router = Router(_map(), writer)
    try:
        yield writer, reader, raw, ns, router
    finally:
        writer.drop_namespace()
        for c in (writer, reader, raw):
            c.close()


def _redis_raw(redis_env: Any) -> Callable[[], int]:
    backend, _, raw, _, router = redis_env
    targets = [(backend.keys.stream(q), k) for q, k in _targets(router)]
    xadd = raw.xadd

    def run() -> int:
        for stream, k in targets:
            xadd(stream, {"k": k, "v": VALUE})
        return len(targets)

    return run


@pytest.mark.benchmark(group="routed-publish-redis")
def test_redis_routed_fastshard(benchmark: Any, redis_env: Any) -> None:
    assert benchmark(_routed(redis_env[4])) == N_MESSAGES


@pytest.mark.benchmark(group="routed-publish-redis")
def test_redis_routed_raw_xadd(benchmark: Any, redis_env: Any) -> None:
    assert benchmark(_redis_raw(redis_env)) == N_MESSAGES


@pytest.mark.benchmark(group="routed-publish-paired")
def test_redis_routed_paired(benchmark: Any, redis_env: Any) -> None:
    _paired(benchmark, "redis", _routed(redis_env[4]), _redis_raw(redis_env))


def _redis_raw_batch(redis_env: Any) -> Callable[[], int]:
    """redis-py's batch path: one non-transactional pipeline of XADDs, sent and answered
    in one round trip."""
    backend, _, raw, _, router = redis_env
    streams = [backend.keys.stream(router.queue_of(s)) for s in router.shard_map.shards]
    place = _raw_placement(len(streams))

    def run() -> int:
        pipe = raw.pipeline(transaction=False)
        for k, v in zip(BATCH_KEYS, BATCH_VALUES, strict=True):
            pipe.xadd(streams[place(k)], {"k": k, "v": v})
        return len(pipe.execute())

    return run


@pytest.mark.benchmark(group="routed-throughput-redis")
def test_redis_throughput_paired(benchmark: Any, redis_env: Any) -> None:
    _paired(benchmark, "redis throughput", _routed_many(redis_env[4]), _redis_raw_batch(redis_env), N_BATCH)


# ---------------------------------------------------------------------------- PostgreSQL
def _require_postgres() -> None:
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(PG_DSN)
    require_server("PostgreSQL", str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))


@pytest.fixture(scope="module")
def pg_env() -> Iterator[Any]:
    fastshard_postgres = pytest.importorskip("fastshard_postgres", reason="fastshard-postgres plugin not installed")
    import psycopg

    _require_postgres()
    schema = f"fs_bench_{uuid.uuid4().hex[:10]}"
    writer = fastshard_postgres.PostgresBackend(dsn=PG_DSN, schema=schema)
    reader = fastshard_postgres.PostgresBackend(dsn=PG_DSN, schema=schema)
    raw = psycopg.connect(PG_DSN, autocommit=True)
    raw.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # the backends create theirs lazily
    raw.execute(f"CREATE TABLE {schema}.raw_messages (queue text NOT NULL, seq bigserial, "
                "key bytea NOT NULL, value bytea NOT NULL, epoch bigint NOT NULL, "
                "PRIMARY KEY (queue, seq))")
    raw.execute(f"CREATE TABLE {schema}.raw_map (name text PRIMARY KEY, value bytea NOT NULL)")
    raw.execute(f"INSERT INTO {schema}.raw_map VALUES ('m', 'epoch-0')")
    router = Router(_map(), writer)
    try:
        yield writer, reader, raw, schema, router
    finally:
        raw.close()
        reader.close()
        writer.drop_schema()
        writer.close()


def _postgres_raw(pg_env: Any) -> Callable[[], int]:
    _, _, raw, schema, router = pg_env
    targets = _targets(router)
    sql = f"INSERT INTO {schema}.raw_messages (queue, key, value, epoch) VALUES (%s, %s, %s, 1)"
    execute = raw.execute

    def run() -> int:
        for q, k in targets:
            execute(sql, (q, k, VALUE))
        return len(targets)

    return run


@pytest.mark.benchmark(group="routed-publish-postgres")
def test_postgres_routed_fastshard(benchmark: Any, pg_env: Any) -> None:
    assert benchmark(_routed(pg_env[4])) == N_MESSAGES


@pytest.mark.benchmark(group="routed-publish-postgres")
def test_postgres_routed_raw_psycopg(benchmark: Any, pg_env: Any) -> None:
    assert benchmark(_postgres_raw(pg_env)) == N_MESSAGES


@pytest.mark.benchmark(group="routed-publish-paired")
def test_postgres_routed_paired(benchmark: Any, pg_env: Any) -> None:
    _paired(benchmark, "postgres", _routed(pg_env[4]), _postgres_raw(pg_env))


def _postgres_raw_batch(pg_env: Any) -> Callable[[], int]:
    """psycopg's batch path: one transaction, one COPY of every row (the fastest way in)."""
    _, _, raw, schema, router = pg_env
    queues = [router.queue_of(s) for s in router.shard_map.shards]
    place = _raw_placement(len(queues))
    sql = f"COPY {schema}.raw_messages (queue, key, value, epoch) FROM STDIN"

    def run() -> int:
        with raw.transaction(), raw.cursor().copy(sql) as copy:
            copy.set_types(["text", "bytea", "bytea", "int8"])
            for k, v in zip(BATCH_KEYS, BATCH_VALUES, strict=True):
                copy.write_row((queues[place(k)], k, v, 1))
        return N_BATCH

    return run


@pytest.mark.benchmark(group="routed-throughput-postgres")
def test_postgres_throughput_paired(benchmark: Any, pg_env: Any) -> None:
    _paired(benchmark, "postgres throughput", _routed_many(pg_env[4]), _postgres_raw_batch(pg_env), N_BATCH)


# ---------------------------------------------------------------------------- epoch change
def _epoch_change_fastshard(benchmark: Any, writer: Any, reader: Any) -> None:
    """Writer client publishes epoch N+1; the reader client's watcher learns it and routes."""
    name = f"m{uuid.uuid4().hex[:6]}"
    writer_map = ShardMap(SHARDS, ["n0", "n1"], name=name)
    # The stored map carries its last `history` change records and both sides parse them, so
    # the latency grows with that cap; 16 keeps every round alike (the default carries up to
    # the map's history_limit, 1024, which costs ~5-8 ms per change here, see docs/benchmarks.md).
    writer_store = ShardMapStore(writer, name, history=EPOCH_HISTORY)
    reader_store = ShardMapStore(reader, name, history=EPOCH_HISTORY)
    assert writer_store.publish(writer_map, 0)
    nodes = iter(range(1, 10**9))
    with reader_store.watch(ShardMap.from_dict(writer_map.to_dict()), poll_interval=60.0) as watcher:

        def change_and_route() -> int:
            before = writer_map.epoch
            writer_map.move("s0", f"n{next(nodes) % 2}")  # a new epoch (placement change)
            assert writer_store.publish(writer_map, before)
            newer = watcher.poll(timeout=5.0)
            assert newer is not None and newer.epoch == writer_map.epoch
            newer.shard_for(KEYS[0])
            return newer.epoch

        assert benchmark(change_and_route) >= 2


@pytest.mark.benchmark(group="epoch-change-redis")
def test_redis_epoch_change_fastshard(benchmark: Any, redis_env: Any) -> None:
    _epoch_change_fastshard(benchmark, redis_env[0], redis_env[1])


@pytest.mark.benchmark(group="epoch-change-redis")
def test_redis_epoch_change_raw(benchmark: Any, redis_env: Any) -> None:
    import redis

    _, _, raw, ns, _ = redis_env
    other = redis.Redis.from_url(REDIS_URL)
    key, channel = f"{ns}:raw-map", f"{ns}:raw-map-changed"
    pubsub = other.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    while not pubsub.subscribed:
        pubsub.get_message(timeout=0.1)
    versions = iter(range(1, 10**9))

    def change_and_read() -> bytes:
        value = b"epoch-%d" % next(versions)
        raw.set(key, value)
        raw.publish(channel, value)
        while pubsub.get_message(timeout=5.0) is None:
            pass
        got = other.get(key)
        assert got == value
        return got

    try:
        assert benchmark(change_and_read)
    finally:
        pubsub.close()
        other.close()


@pytest.mark.benchmark(group="epoch-change-postgres")
def test_postgres_epoch_change_fastshard(benchmark: Any, pg_env: Any) -> None:
    _epoch_change_fastshard(benchmark, pg_env[0], pg_env[1])


@pytest.mark.benchmark(group="epoch-change-postgres")
def test_postgres_epoch_change_raw(benchmark: Any, pg_env: Any) -> None:
    import psycopg

    _, _, raw, schema, _ = pg_env
    listener = psycopg.connect(PG_DSN, autocommit=True)
    channel = f"{schema}_raw"
    listener.execute(f"LISTEN {channel}")
    versions = iter(range(1, 10**9))

    def change_and_read() -> bytes:
        value = b"epoch-%d" % next(versions)
        raw.execute(f"UPDATE {schema}.raw_map SET value = %s WHERE name = 'm'", (value,))
        raw.execute("SELECT pg_notify(%s, %s)", (channel, value.decode()))
        note = next(listener.notifies(timeout=5.0, stop_after=1), None)
        assert note is not None
        got = listener.execute(f"SELECT value FROM {schema}.raw_map WHERE name = 'm'").fetchone()
        assert got is not None and bytes(got[0]) == value
        return bytes(got[0])

    try:
        assert benchmark(change_and_read)
    finally:
        listener.close()
