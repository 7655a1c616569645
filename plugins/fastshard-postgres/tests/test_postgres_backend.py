"""PostgreSQL-specific behaviour: consumer death, lost connections, order, large notifications."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

import fastshard.backends
from fastshard.errors import BackendUnavailableError, InvalidValueError
from fastshard.testing.faults import check_publishing_survives_connection_kills
from fastshard_postgres import PostgresBackend

PG_DSN = os.environ.get("FASTSHARD_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
Make = Callable[..., PostgresBackend]


def _terminate(name: str) -> int:
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def _rows(b: PostgresBackend, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        return admin.execute(sql.replace("{s}", f'"{b.schema}"'), args).fetchall()


def test_registered_under_entry_point_name(make_backend: Make) -> None:
    assert "postgres" in fastshard.backends.available()
    make_backend()  # the fixture owns the schema; a second backend on it is cleaned up too
    b = fastshard.backends.get("postgres", dsn=PG_DSN, schema=f"fs_ep_{uuid.uuid4().hex[:8]}")
    try:
        assert isinstance(b, PostgresBackend)
        b.ping()
    finally:
        b.drop_schema()
        b.close()


def test_dead_consumer_messages_stay_pending_and_another_consumer_gets_them(make_backend: Make) -> None:
    b = make_backend(visibility_timeout=0.4)
    b.create_queue("orders")
    b.publish_batch("orders", [(b"k", f"m{i}") for i in range(5)])
    taken = b.consume("orders", "workers", "worker-a", max_messages=3)
    assert [m.value for m in taken] == [b"m0", b"m1", b"m2"]
    pending = _rows(b, "SELECT consumer, count(*) FROM {s}.pending GROUP BY consumer")
    assert pending == [("worker-a", 3)]
    fresh = b.consume("orders", "workers", "worker-b", max_messages=10)
    assert [m.value for m in fresh] == [b"m3", b"m4"]
    b.ack("orders", "workers", [m.id for m in fresh])
    time.sleep(0.5)
    again = b.consume("orders", "workers", "worker-b", max_messages=10)
    assert [m.id for m in again] == [m.id for m in taken]
    assert all(m.delivery_count == 2 for m in again)
    assert _rows(b, "SELECT DISTINCT consumer FROM {s}.pending") == [("worker-b",)]
    assert b.ack("orders", "workers", [m.id for m in again]) == 3
    assert b.backlog("orders", "workers") == 0
    assert _rows(b, "SELECT count(*) FROM {s}.messages") == [(0,)], "fully acked messages are trimmed"


def test_concurrent_consumers_of_one_group_get_each_message_once_in_order(make_backend: Make) -> None:
    b = make_backend(visibility_timeout=30)
    b.create_queue("q")
    b.publish_batch("q", [(b"k", str(i)) for i in range(300)])
    seen: dict[str, list[int]] = {}

    def work(name: str) -> None:
        mine: list[int] = []
        while True:
            batch = b.consume("q", "g", name, max_messages=7)
            if not batch:
                break
            mine.extend(int(m.value) for m in batch)
            b.ack("q", "g", [m.id for m in batch])
        seen[name] = mine

    threads = [threading.Thread(target=work, args=(f"c{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = sorted(v for vs in seen.values() for v in vs)
    assert everything == list(range(300)), "each message exactly once"
    for name, vs in seen.items():
        assert vs == sorted(vs), f"{name} saw messages out of publish order"


def _lose_first_commit_reply(b: PostgresBackend) -> list[int]:
    """The next transaction commits on the server but its client sees a dropped connection."""
    b.ping()
    b._ensure_tables()
    real = b._pool.connection
    calls = [0]

    @contextmanager
    def flaky() -> Iterator[psycopg.Connection]:
        with real() as conn:
            yield conn
        calls[0] += 1
        if calls[0] == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    b._pool.connection = flaky  # type: ignore[method-assign]
    return calls


def test_retry_after_lost_commit_reply_does_not_write_twice(make_backend: Make) -> None:
    b = make_backend(retry_base_delay=0.001)
    b.create_queue("q")
    calls = _lose_first_commit_reply(b)
    ids = b.publish_batch("q", [(b"k", b"a"), (b"k", b"b")])
    assert calls[0] >= 2
    got = b.consume("q", "g", max_messages=10)
    assert [m.value for m in got] == [b"a", b"b"] and [m.id for m in got] == ids

    cases: list[tuple[Callable[[PostgresBackend], object], Callable[[PostgresBackend, object], bool]]] = [
        (lambda x: x.counter_add("ids", 1000), lambda x, r: r == 1000 and x.counter_get("ids") == 1000),
        (lambda x: x.kv_cas("map", b"e1", 0), lambda x, r: r == 1 and x.kv_get("map").version == 1),
        (lambda x: x.kv_set("map", b"e2"), lambda x, r: r == 2 and x.kv_get("map").version == 2),
        (lambda x: x.kv_delete("map"), lambda x, r: r is True and x.kv_get("map") is None),
    ]
    for op, check in cases:  # each on a backend of its own whose next COMMIT reply is lost
        fresh = make_backend(retry_base_delay=0.001)
        calls = _lose_first_commit_reply(fresh)
        assert check(fresh, op(fresh)), "a retried write is applied once and reports its first result"
        assert calls[0] >= 2


def test_publishing_while_connections_are_terminated_loses_and_duplicates_nothing(
    make_backend: Make,
) -> None:
    name = f"fs-chaos-{uuid.uuid4().hex[:8]}"
    b = make_backend(application_name=name, retry_attempts=30, retry_base_delay=0.005, retry_max_delay=0.05)
    check_publishing_survives_connection_kills(
        b, make_backend(), lambda: _terminate(name), messages=150, kill_every=0.02
    )


def test_blocking_consume_survives_terminated_connection(make_backend: Make) -> None:
    name = f"fs-kill-{uuid.uuid4().hex[:8]}"
    b = make_backend(application_name=name, retry_base_delay=0.01)
    b.create_queue("q")
    b.consume("q", "g")
    result: list = []
    consumer = threading.Thread(target=lambda: result.append(b.consume("q", "g", timeout=8.0)))
    consumer.start()
    time.sleep(0.3)
    _terminate(name)  # the pooled connections and the wake-up listener
    time.sleep(0.2)
    b.publish("q", b"k", b"after-kill")
    consumer.join(10)
    assert not consumer.is_alive()
    got = result[0] or b.consume("q", "g", timeout=2.0)
    assert [m.value for m in got] == [b"after-kill"]


def test_large_notification_and_long_channel_name(make_backend: Make) -> None:
    b = make_backend()
    channel = "shard-map." + "x" * 150  # longer than PostgreSQL's 63-byte channel names
    big = os.urandom(50_000)  # NOTIFY itself carries at most 8000 bytes
    with b.subscribe(channel) as sub:
        b.notify(channel, big)
        b.notify(channel, b"small")
        assert sub.get(timeout=5) == big
        assert sub.get(timeout=5) == b"small"


def test_missing_queue_bad_ids_and_bad_options(make_backend: Make) -> None:
    b = make_backend()
    with pytest.raises(InvalidValueError, match="queue 'nope' does not exist"):
        b.publish("nope", b"k", b"v")
    with pytest.raises(InvalidValueError, match="queue 'nope' does not exist"):
        b.consume("nope", "g")
    with pytest.raises(InvalidValueError, match="queue 'nope' does not exist"):
        b.backlog("nope", "g")
    b.create_queue("q")
    with pytest.raises(InvalidValueError, match="ids must be ids returned by consume"):
        b.ack("q", "g", ["1-0"])
    with pytest.raises(InvalidValueError, match="schema must be"):
        PostgresBackend(schema="Robert'); DROP TABLE students;--")
    with pytest.raises(InvalidValueError, match="visibility_timeout"):
        PostgresBackend(visibility_timeout=-1)


def test_counter_overflow_is_a_clear_error_and_changes_nothing(make_backend: Make) -> None:
    b = make_backend()
    b.counter_add("c", 2**63 - 10)
    with pytest.raises(InvalidValueError, match="64-bit range"):
        b.counter_add("c", 100)
    assert b.counter_get("c") == 2**63 - 10


def test_unreachable_server_raises_unavailable_quickly(unreachable_backend) -> None:
    b = unreachable_backend()
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="after 2 attempts"):
        b.kv_set("k", b"v")
    with pytest.raises(BackendUnavailableError, match="may or may not"):
        b.notify("ch", b"x")
    assert time.monotonic() - start < 10


def test_consume_racing_delete_queue_says_does_not_exist(make_backend: Make) -> None:
    """A queue deleted while a group reads it: every consume either returns messages or
    raises the contract's 'does not exist' error (it once failed inside with a TypeError)."""
    consumer, admin = make_backend(), make_backend()
    unexpected: list[BaseException] = []
    for round_ in range(15):
        q = f"race{round_}"
        admin.create_queue(q)
        admin.publish_batch(q, [(b"k", b"v")] * 20)
        stop = threading.Event()

        def read(q: str = q, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                try:
                    consumer.consume(q, "g", max_messages=2)
                except InvalidValueError as exc:
                    if "does not exist" not in str(exc):
                        unexpected.append(exc)
                    return
                except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                    unexpected.append(exc)
                    return

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        time.sleep(0.005 * (round_ % 4))
        admin.delete_queue(q)
        stop.set()
        for t in readers:
            t.join(10)
    assert not unexpected, unexpected
