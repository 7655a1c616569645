"""Redis-specific behaviour: consumer death and XAUTOCLAIM, lost connections, key layout."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

import pytest
import redis
from redis.crc import key_slot

import fastshard.backends
from fastshard.errors import BackendUnavailableError, InvalidValueError
from fastshard.testing.faults import check_publishing_survives_connection_kills
from fastshard_redis import RedisBackend
from fastshard_redis.keys import KeyLayout, unescape_tag

REDIS_URL = os.environ.get("FASTSHARD_REDIS_URL", "redis://127.0.0.1:6379/0")

Make = Callable[..., RedisBackend]


def _raw() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def _kill_clients(raw: redis.Redis, name: str) -> int:
    """CLIENT KILL every connection named ``name``; returns how many."""
    killed = 0
    for c in raw.client_list():
        if c.get("name") == name:
            try:
                killed += int(raw.execute_command("CLIENT", "KILL", "ID", c["id"]))
            except redis.exceptions.ResponseError:
                pass  # it closed by itself meanwhile
    return killed


def test_registered_under_entry_point_name(make_backend: Make) -> None:
    assert "redis" in fastshard.backends.available()
    b = fastshard.backends.get("redis", url=REDIS_URL, namespace=f"ep-{uuid.uuid4().hex[:8]}")
    try:
        assert isinstance(b, RedisBackend)
        b.ping()
    finally:
        b.close()


def test_dead_consumer_messages_stay_pending_and_another_consumer_claims_them(
    make_backend: Make,
) -> None:
    b = make_backend(visibility_timeout=0.4)
    b.create_queue("orders")
    b.publish_batch("orders", [(b"k", f"m{i}") for i in range(5)])
    taken = b.consume("orders", "workers", "worker-a", max_messages=3)
    assert [m.value for m in taken] == [b"m0", b"m1", b"m2"]
    # worker-a dies without acking. Its deliveries stay in the group's pending list.
    raw = _raw()
    stream = b.keys.stream("orders")
    pending = raw.xpending_range(stream, "workers", "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"worker-a"} and len(pending) == 3
    # Before the visibility timeout, worker-b only gets the never-delivered messages.
    fresh = b.consume("orders", "workers", "worker-b", max_messages=10)
    assert [m.value for m in fresh] == [b"m3", b"m4"]
    b.ack("orders", "workers", [m.id for m in fresh])
    time.sleep(0.5)
    claimed = b.consume("orders", "workers", "worker-b", max_messages=10)
    assert [m.value for m in claimed] == [b"m0", b"m1", b"m2"]
    assert [m.id for m in claimed] == [m.id for m in taken]
    assert all(m.delivery_count == 2 and m.redelivered for m in claimed)
    pending = raw.xpending_range(stream, "workers", "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"worker-b"}, "XAUTOCLAIM moved them to worker-b"
    assert b.ack("orders", "workers", [m.id for m in claimed]) == 3
    assert b.backlog("orders", "workers") == 0
    raw.close()


def test_acked_prefix_is_trimmed_from_the_stream(make_backend: Make) -> None:
    b = make_backend()
    b.create_queue("q")
    b.consume("q", "g1")
    b.consume("q", "g2")
    b.publish_batch("q", [(b"k", str(i)) for i in range(10)])
    raw = _raw()
    stream = b.keys.stream("q")
    got1 = b.consume("q", "g1", max_messages=10)
    b.ack("q", "g1", [m.id for m in got1])
    assert raw.xlen(stream) == 10, "g2 has not read them yet"
    got2 = b.consume("q", "g2", max_messages=4)
    b.ack("q", "g2", [m.id for m in got2[1:]])  # m0 still unacked in g2
    assert raw.xlen(stream) == 10
    b.ack("q", "g2", [got2[0].id])
    assert raw.xlen(stream) == 6
    assert b.backlog("q", "g2") == 6 and b.backlog("q", "g1") == 0
    raw.close()


def test_missing_queue_and_bad_ids_are_clear_errors(make_backend: Make) -> None:
    b = make_backend()
    with pytest.raises(InvalidValueError, match="queue 'nope' does not exist"):
        b.publish("nope", b"k", b"v")
    with pytest.raises(InvalidValueError, match="queue 'nope' does not exist"):
        b.consume("nope", "g")
    b.create_queue("q")
    with pytest.raises(InvalidValueError, match="ids must be ids returned by consume"):
        b.ack("q", "g", ["not-an-id"])
    with pytest.raises(InvalidValueError, match="url must be"):
        RedisBackend(url="http://localhost")
    with pytest.raises(InvalidValueError, match="socket_timeout"):
        RedisBackend(socket_timeout=0)


def _lose_first_reply(b: RedisBackend, script: str) -> list[int]:
    """Make the first run of ``script`` execute on the server but lose its reply."""
    real = b._scripts[script]
    calls = [0]

    def flaky(keys: list[str], args: list[object]) -> object:
        calls[0] += 1
        result = real(keys=keys, args=args)
        if calls[0] == 1:
            raise redis.exceptions.ConnectionError("connection reset after the server replied")
        return result

    b._scripts[script] = flaky  # type: ignore[assignment]
    return calls


def test_retry_after_lost_reply_does_not_write_twice(make_backend: Make) -> None:
    b = make_backend(retry_base_delay=0.001)
    b.create_queue("q")
    calls = _lose_first_reply(b, "PUBLISH")
    ids = b.publish_batch("q", [(b"k", b"a"), (b"k", b"b")])
    assert calls[0] == 2, "the lost reply was retried"
    got = b.consume("q", "g", max_messages=10)
    assert [m.value for m in got] == [b"a", b"b"] and [m.id for m in got] == ids

    calls = _lose_first_reply(b, "COUNTER_ADD")
    assert b.counter_add("ids", 1000) == 1000
    assert calls[0] == 2 and b.counter_get("ids") == 1000, "the block was added once"

    calls = _lose_first_reply(b, "KV_CAS")
    assert b.kv_cas("map", b"epoch-1", 0) == 1
    assert calls[0] == 2 and b.kv_get("map").version == 1  # type: ignore[union-attr]

    calls = _lose_first_reply(b, "KV_SET")
    assert b.kv_set("map", b"epoch-2") == 2
    assert calls[0] == 2 and b.kv_get("map").version == 2  # type: ignore[union-attr]


def test_blocking_consume_survives_client_kill(make_backend: Make) -> None:
    name = f"fs-kill-{uuid.uuid4().hex[:8]}"
    b = make_backend(client_name=name, retry_base_delay=0.01)
    b.create_queue("q")
    b.consume("q", "g")
    raw = _raw()
    result: list = []
    consumer = threading.Thread(target=lambda: result.append(b.consume("q", "g", timeout=8.0)))
    consumer.start()
    time.sleep(0.3)  # the consumer is now blocked in XREADGROUP
    assert _kill_clients(raw, name) >= 1
    time.sleep(0.2)
    b.publish("q", b"k", b"after-kill")
    consumer.join(10)
    assert not consumer.is_alive()
    got = result[0] or b.consume("q", "g", timeout=2.0)
    assert [m.value for m in got] == [b"after-kill"]
    raw.close()


def test_publishing_while_connections_are_killed_loses_and_duplicates_nothing(
    make_backend: Make,
) -> None:
    name = f"fs-chaos-{uuid.uuid4().hex[:8]}"
    b = make_backend(client_name=name, retry_attempts=20, retry_base_delay=0.005, retry_max_delay=0.05)
    raw = _raw()
    try:
        check_publishing_survives_connection_kills(
            b, make_backend(), lambda: _kill_clients(raw, name), messages=300, kill_every=0.01
        )
    finally:
        raw.close()


def test_unreachable_server_raises_unavailable_quickly(unreachable_backend) -> None:
    b = unreachable_backend()
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="after 2 attempts"):
        b.ping()
    with pytest.raises(BackendUnavailableError, match="may or may not"):
        b.notify("ch", b"x")  # never retried: at-most-once
    assert time.monotonic() - start < 5


def test_subscription_resumes_after_its_connection_is_killed(make_backend: Make) -> None:
    name = f"fs-sub-{uuid.uuid4().hex[:8]}"
    b = make_backend(client_name=name, retry_base_delay=0.01)
    raw = _raw()
    with b.subscribe("epochs") as sub:
        b.notify("epochs", b"1")
        assert sub.get(timeout=5) == b"1"
        _kill_clients(raw, name)
        # The next read reconnects and re-subscribes; later notifications arrive again.
        assert sub.get(timeout=0.3) is None
        b.notify("epochs", b"2")
        assert sub.get(timeout=5) == b"2"
    raw.close()


def test_key_layout_colocates_companion_keys() -> None:
    k = KeyLayout("app")
    assert key_slot(k.lease("host-7").encode()) == key_slot(k.lease_seq("host-7").encode())
    stream = k.stream("orders-3")
    assert key_slot(stream.encode()) == key_slot(k.request(stream, "abc").encode())
    for user_key in ("plain", "with{braces}", "}starts-closed", "%7B-looks-escaped", "a*b?[c]"):
        main = k.kv(user_key)
        assert key_slot(main.encode()) == key_slot(k.request(main, "r1").encode())
        assert k.kv_key_of(main) == user_key
        assert unescape_tag(main[len("app:kv:{") : -1]) == user_key
    assert k.stream("a") != k.stream("b") and key_slot(b"app:q:{a}") != key_slot(b"app:q:{b}")


def test_kv_keys_with_braces_and_glob_characters(make_backend: Make) -> None:
    b = make_backend()
    for key in ("cfg/{x}", "cfg/*", "cfg/[a]", "cfg/%7B", "other"):
        b.kv_set(key, key)
    assert b.kv_keys("cfg/") == sorted(["cfg/{x}", "cfg/*", "cfg/[a]", "cfg/%7B"])
    assert b.kv_keys("cfg/*") == ["cfg/*"]
    assert b.kv_get("cfg/{x}").value == b"cfg/{x}"  # type: ignore[union-attr]
    b.counter_add("c", 5)  # counters and queues never show up as kv keys
    assert "c" not in b.kv_keys("")
