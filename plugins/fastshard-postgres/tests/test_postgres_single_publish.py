"""The single-publish path: one prepared autocommit statement per message."""

from __future__ import annotations

import os
from collections.abc import Callable

import psycopg
import pytest

from fastshard.backends.request_ids import REQUEST_IDS
from fastshard.errors import InvalidValueError
from fastshard.testing.faults import publish_from_threads
from fastshard_postgres import PostgresBackend
from fastshard_postgres.pool import PooledConnection

PG_DSN = os.environ.get("FASTSHARD_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
Make = Callable[..., PostgresBackend]


def _rows(b: PostgresBackend, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        return admin.execute(sql.replace("{s}", f'"{b.schema}"'), args).fetchall()


def _lose_next_reply(b: PostgresBackend) -> list[int]:
    """The next statement runs and commits on the server; its caller sees a lost connection."""
    real = b._pool.give_back
    calls = [0]

    def flaky(conn: PooledConnection) -> None:
        calls[0] += 1
        real(conn)
        if calls[0] == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    b._pool.give_back = flaky  # type: ignore[method-assign]
    return calls


def test_single_publish_is_one_statement_with_its_request_id(make_backend: Make) -> None:
    b = make_backend()
    b.create_queue("q")
    b.ping()
    before = _rows(b, "SELECT count(*) FROM {s}.requests")[0][0]
    mid = b.publish("q", b"k", b"v", headers={"a": "1"}, epoch=5)
    assert _rows(b, "SELECT seq, key, value, headers, epoch FROM {s}.messages") == [
        (int(mid), b"k", b"v", {"a": "1"}, 5)
    ]
    assert _rows(b, "SELECT next_seq FROM {s}.queues") == [(int(mid),)]
    assert _rows(b, "SELECT count(*), max(result) FROM {s}.requests")[0] == (before + 1, mid)
    with pytest.raises(InvalidValueError, match="queue 'nope' does not exist"):
        b.publish("nope", b"k", b"v")
    assert _rows(b, "SELECT count(*) FROM {s}.messages") == [(1,)]


def test_lost_reply_is_retried_and_lands_once_with_its_first_id(make_backend: Make) -> None:
    b = make_backend(retry_base_delay=0.001)
    b.create_queue("q")
    b.publish("q", b"k", b"first")
    calls = _lose_next_reply(b)
    mid = b.publish("q", b"k", b"second")
    assert calls[0] >= 2, "the reply was lost and the publish retried"
    got = b.consume("q", "g", max_messages=10)
    assert [(m.id, m.value) for m in got] == [(str(int(mid) - 1), b"first"), (mid, b"second")]
    assert _rows(b, "SELECT next_seq FROM {s}.queues") == [(int(mid),)], "no sequence number lost"


def test_first_attempt_arriving_after_its_retry_rolls_back_whole(make_backend: Make) -> None:
    """If the retry claimed the request id first, the late first attempt must fail on the
    primary key and leave no message and no used sequence number behind."""
    b = make_backend()
    b.create_queue("q")
    b.ping()
    rid = REQUEST_IDS.next()
    _rows(b, "INSERT INTO {s}.requests (id, result) VALUES (%s, '1') RETURNING 1", rid)
    conn = b._pool.borrow()
    try:
        with pytest.raises(psycopg.errors.UniqueViolation):
            b._publish_one_stmt.run(
                conn, [b"q", rid.encode(), b"k", b"v", None, b"0", b"ch"], (0, 0, 1, 1, 0, 0, 0)
            )
    finally:
        b._pool.give_back(conn)
    assert _rows(b, "SELECT count(*) FROM {s}.messages") == [(0,)]
    assert _rows(b, "SELECT next_seq FROM {s}.queues") == [(0,)]
    assert b.publish("q", b"k", b"v") == "1"


def test_statement_deallocated_on_the_connection_is_prepared_again(make_backend: Make) -> None:
    b = make_backend(max_connections=1)
    b.create_queue("q")
    assert b.publish("q", b"k", b"a") == "1"
    with b._pool.connection() as conn:
        assert conn.prepared, "the connection remembers its prepared statement"
        conn.execute("DEALLOCATE ALL")  # what psycopg does when it resets its own cache
    assert b.publish("q", b"k", b"b") == "2"
    assert [m.value for m in b.consume("q", "g")] == [b"a", b"b"]


def test_more_publishing_threads_than_connections_wait_and_lose_nothing(make_backend: Make) -> None:
    b = make_backend(max_connections=2)
    b.create_queue("q")
    publish_from_threads(b, "q", threads=6, per_thread=30)
    assert b._pool._open <= 2, "never more than max_connections"
    rows = _rows(b, "SELECT seq, key, value FROM {s}.messages ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, 181)), "dense sequence numbers"
    seen: dict[bytes, list[int]] = {}
    for _, k, v in rows:
        seen.setdefault(bytes(k), []).append(int(bytes(v).split(b":")[1]))
    assert seen == {f"key-{t}".encode(): list(range(30)) for t in range(6)}


def test_publish_many_through_the_batch_hook_matches_publishing_one_by_one(backend: PostgresBackend) -> None:
    from fastshard.testing.publish_many import check_publish_many_matches_one_by_one

    check_publish_many_matches_one_by_one(backend)


def test_the_batch_hook_is_one_transaction_with_a_stamp_per_row(backend: PostgresBackend) -> None:
    backend.create_queue("q")
    ids = backend.publish_stamped_batch("q", [b"a", b"b"], [b"1", "2"], 7, 5, [11, 12], {"x": "y"})
    assert ids == ["1", "2"]
    got = backend.consume("q", "g")
    assert [(m.id, m.key, m.value, m.epoch, dict(m.headers)) for m in got] == [
        ("1", b"a", b"1", 7, {"x": "y", "fs-seq": "5", "fs-hash": "11"}),
        ("2", b"b", b"2", 7, {"x": "y", "fs-seq": "6", "fs-hash": "12"})]
    with pytest.raises(InvalidValueError, match="does not exist"):
        backend.publish_stamped_batch("missing", [b"a"], [b"1"], 1, 1, [5])


def test_all_groups_go_in_one_transaction_or_not_at_all(backend: PostgresBackend) -> None:
    backend.create_queue("q0")
    backend.create_queue("q1")
    with pytest.raises(InvalidValueError, match="'missing' does not exist"):
        backend.publish_stamped_groups([("q0", [b"a"], [b"1"], 1, [5]), ("missing", [b"b"], [b"2"], 1, [6])], 3)
    assert backend.backlog("q0", "g") == 0  # the first group was rolled back with the second
    ids = backend.publish_stamped_groups([("q1", [b"b"], [b"2"], 9, [6]),
                                          ("q0", [b"a", b"c"], [b"1", b"3"], 4, [5, 7])], 3, {"x": "y"})
    assert ids == [["1"], ["1", "2"]]
    [m1] = backend.consume("q1", "g")
    assert (m1.epoch, dict(m1.headers)) == (3, {"x": "y", "fs-seq": "9", "fs-hash": "6"})
    assert [dict(m.headers)["fs-seq"] for m in backend.consume("q0", "g")] == ["4", "5"]
