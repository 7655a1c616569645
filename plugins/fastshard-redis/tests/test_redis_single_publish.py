"""The single-publish path: one XADD per message, and retries that never duplicate it."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard.errors import BackendUnavailableError, InvalidValueError
from fastshard.testing.faults import publish_from_threads
from fastshard_redis import RedisBackend
from fastshard_redis.single import SinglePublisher

REDIS_URL = os.environ.get("FASTSHARD_REDIS_URL", "redis://127.0.0.1:6379/0")
Make = Callable[..., RedisBackend]


def _raw() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def _entries(b: RedisBackend, queue: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    raw = _raw()
    try:
        return raw.xrange(b.keys.stream(queue))
    finally:
        raw.close()


def _first_link_conn(b: RedisBackend) -> Any:
    """The connection the next single publish will use (made by publishing once)."""
    single = b._single
    assert single is not None and len(single._idle) == 1
    return single._idle[0].conn


def _fail_once(conn: Any, method: str, make_error: Callable[[Any, Callable[..., Any], tuple], Exception]) -> list[int]:
    """Make ``conn.<method>`` raise ``make_error(conn, real, args)`` on its next call only."""
    real = getattr(conn, method)
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise make_error(conn, real, args)
        return real(*args, **kwargs)

    setattr(conn, method, flaky)
    return calls


def _lose_reply(conn: Any, real: Callable[..., Any], args: tuple) -> Exception:
    real()  # the server ran the command and replied; the client never sees the reply
    conn.disconnect()
    return redis.exceptions.ConnectionError("connection reset after the server replied")


def test_single_publish_is_one_xadd_with_its_request_id_and_no_dedup_key(make_backend: Make) -> None:
    b = make_backend()
    b.create_queue("q")
    mid = b.publish("q", b"k", b"v", headers={"a": "1"}, epoch=4)
    (eid, fields), = _entries(b, "q")
    assert eid.decode() == mid
    assert list(fields) == [b"k", b"v", b"e", b"h", b"r"]
    assert (fields[b"k"], fields[b"v"], fields[b"e"], fields[b"h"]) == (b"k", b"v", b"4", b'{"a":"1"}')
    raw = _raw()
    try:
        assert not list(raw.scan_iter(match=f"{b.namespace}:*:req:*")), "no de-duplication key"
    finally:
        raw.close()
    got = b.consume("q", "g")
    assert [(m.id, m.headers, m.epoch) for m in got] == [(mid, {"a": "1"}, 4)]
    with pytest.raises(InvalidValueError, match="queue 'missing' does not exist"):
        b.publish("missing", b"k", b"v")  # NOMKSTREAM: no stream is created
    assert not _raw().exists(b.keys.stream("missing"))


def test_lost_reply_is_retried_and_lands_once_with_its_first_id(make_backend: Make) -> None:
    b = make_backend(retry_base_delay=0.001)
    b.create_queue("q")
    b.publish("q", b"k", b"first")
    calls = _fail_once(_first_link_conn(b), "read_response", _lose_reply)
    mid = b.publish("q", b"k", b"second")
    assert calls[0] >= 2, "the reply was lost and the publish retried"
    assert [(e.decode(), f[b"v"]) for e, f in _entries(b, "q")][1:] == [(mid, b"second")]


def test_lost_reply_of_a_message_already_acked_and_trimmed_is_not_published_again(
    make_backend: Make,
) -> None:
    b = make_backend(retry_base_delay=0.001)
    consumer = make_backend()
    b.create_queue("q")
    consumer.consume("q", "g")
    b.publish("q", b"k", b"warm-up")
    consumer.ack("q", "g", [m.id for m in consumer.consume("q", "g")])
    delivered: list[str] = []

    def lose_after_a_consumer_acked(conn: Any, real: Callable[..., Any], args: tuple) -> Exception:
        real()
        conn.disconnect()
        got = consumer.consume("q", "g")  # before the retry: consumed, acked, trimmed
        delivered.extend(m.id for m in got)
        consumer.ack("q", "g", [m.id for m in got])
        assert _entries(b, "q") == [], "the stream no longer holds the entry"
        return redis.exceptions.TimeoutError("reply lost")

    _fail_once(_first_link_conn(b), "read_response", lose_after_a_consumer_acked)
    mid = b.publish("q", b"k", b"once")
    assert delivered == [mid], "the retry found the trimmed entry's id"
    assert consumer.consume("q", "g", timeout=0.2) == [], "and did not publish it again"
    assert b.backlog("q", "g") == 0


def test_attempt_that_never_reached_the_server_is_published_by_the_retry(make_backend: Make) -> None:
    b = make_backend(retry_base_delay=0.001)
    b.create_queue("q")
    b.publish("q", b"k", b"first")

    def refuse(conn: Any, real: Callable[..., Any], args: tuple) -> Exception:
        conn.disconnect()
        return redis.exceptions.ConnectionError("connection reset before sending")

    _fail_once(_first_link_conn(b), "send_packed_command", refuse)
    mid = b.publish("q", b"k", b"second")
    assert [(e.decode(), f[b"v"]) for e, f in _entries(b, "q")][1:] == [(mid, b"second")]


def test_a_timed_out_attempt_is_fenced_off_before_the_retry(make_backend: Make) -> None:
    """The first attempt's command is still on its way when the client gives up (half of it
    sent, the socket left open). The retry must kill that connection first: otherwise the
    rest arriving later would complete the XADD after the retry added the message."""
    b = make_backend(retry_base_delay=0.001)
    b.create_queue("q")
    b.publish("q", b"k", b"first")
    stalled: list[tuple[socket.socket, bytes]] = []

    def stall_half_way(conn: Any, real: Callable[..., Any], args: tuple) -> Exception:
        data = b"".join(args[0])
        sock = conn._sock
        sock.sendall(data[:-7])  # the server now holds an incomplete XADD
        conn._sock = None  # detach: the client gives up without closing this socket
        conn.disconnect()
        stalled.append((sock, data[-7:]))
        return redis.exceptions.TimeoutError("Timeout writing to socket")

    _fail_once(_first_link_conn(b), "send_packed_command", stall_half_way)
    mid = b.publish("q", b"k", b"second")
    (sock, rest), = stalled
    try:
        try:
            sock.sendall(rest)  # the stalled attempt's last bytes finally arrive
            sock.settimeout(1.0)
            sock.recv(100)
        except OSError:
            pass  # reset: the server closed that connection, as it should have
    finally:
        sock.close()
    time.sleep(0.2)
    assert [(e.decode(), f[b"v"]) for e, f in _entries(b, "q")][1:] == [(mid, b"second")]


def test_retry_later_than_dedup_ttl_is_refused_as_unknown(make_backend: Make) -> None:
    b = make_backend(retry_base_delay=0.01, dedup_ttl=1)
    b.create_queue("q")
    b.publish("q", b"k", b"first")
    _fail_once(_first_link_conn(b), "read_response", _lose_reply)
    # the retry (>= 5 ms after the first send) would need to look back further than
    # dedup_ttl (1 s) minus the 1 s margin for the server clock
    with pytest.raises(BackendUnavailableError, match="may or may not have been published"):
        b.publish("q", b"k", b"second")


def test_unreachable_server_single_publish_gives_up_after_the_attempts(unreachable_backend) -> None:
    b = unreachable_backend()
    with pytest.raises(BackendUnavailableError, match="publish to 'q' .* failed after 2 attempts"):
        b.publish("q", b"k", b"v")


_fields = st.binary(max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    key=_fields,
    value=st.one_of(_fields, st.binary(min_size=16385, max_size=16400)),
    epoch=st.integers(0, 2**63 - 1),
    headers=st.one_of(st.just(b""), st.binary(min_size=1, max_size=30)),
)
def test_packed_xadd_equals_redis_py_packing(key: bytes, value: bytes, epoch: int, headers: bytes) -> None:
    """The hand-packed command is byte for byte what redis-py would send."""
    single = SinglePublisher.__new__(SinglePublisher)
    single._prefixes = {}
    conn = redis.Connection()
    stream, rid, e = "ns:q:{orders-1}", b"0123abcd", b"%d" % epoch
    args: list[Any] = ["XADD", stream, "NOMKSTREAM", "*", "k", key, "v", value, "e", e]
    if headers:
        args += ["h", headers]
    args += ["r", rid]
    assert b"".join(single.pack(stream, key, value, e, headers, rid)) == b"".join(conn.pack_command(*args))


def test_more_publishing_threads_than_connections_wait_and_lose_nothing(make_backend: Make) -> None:
    b = make_backend(max_connections=2)
    b.create_queue("q")
    publish_from_threads(b, "q", threads=6, per_thread=60)
    assert b._single is not None and b._single._created <= 2, "never more than max_connections"
    seen: dict[bytes, list[int]] = {}
    for _, f in _entries(b, "q"):
        seen.setdefault(f[b"k"], []).append(int(f[b"v"].split(b":")[1]))
    assert seen == {f"key-{t}".encode(): list(range(60)) for t in range(6)}


def test_publish_many_through_the_batch_hook_matches_publishing_one_by_one(backend: RedisBackend) -> None:
    from fastshard.testing.publish_many import check_publish_many_matches_one_by_one

    check_publish_many_matches_one_by_one(backend)


def test_the_batch_hook_sends_every_message_with_its_own_stamp(backend: RedisBackend) -> None:
    backend.create_queue("q")
    ids = backend.publish_stamped_batch("q", [b"a", b"b"], [b"1", "2"], 7, 5, [11, 12], {"x": "y"})
    assert len(ids) == 2
    entries = _entries(backend, "q")
    assert [e[0].decode() for e in entries] == ids
    assert [json.loads(e[1][b"h"]) for e in entries] == [
        {"x": "y", "fs-seq": "5", "fs-hash": "11"}, {"x": "y", "fs-seq": "6", "fs-hash": "12"}]
    with pytest.raises(InvalidValueError, match="does not exist"):
        backend.publish_stamped_batch("missing", [b"a"], [b"1"], 1, 1, [5])
