"""The conformance suite every backend passes: memory, Redis, PostgreSQL, Kafka, RabbitMQ, ...

Use it from a plugin's tests by subclassing and providing two fixtures::

    import pytest
    from fastshard.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self):
            # a clean instance, isolated from other tests (own namespace / topic prefix),
            # created with visibility_timeout <= 1.0 s so redelivery tests stay short
            b = MyBackend(url=..., namespace=f"t-{uuid.uuid4().hex}", visibility_timeout=0.5)
            yield b
            b.close()

        @pytest.fixture
        def unreachable_backend(self):
            # a zero-argument callable creating the backend pointed at a dead port,
            # with retries small enough that it gives up within a few seconds
            return lambda: MyBackend(url="...127.0.0.1:1...", retry_attempts=2)

Tests of a family the backend does not list in ``capabilities`` are skipped with that reason.
Every test states a behaviour that code built on fastshard relies on.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict

import pytest

from fastshard.backends.base import COUNTERS, KV, LEASES, QUEUES, Backend
from fastshard.errors import (
    BackendError,
    InvalidTypeError,
    InvalidValueError,
    MessageTooLargeError,
    UnknownQueueError,
)


def _need(backend: Backend, family: str) -> None:
    if family not in backend.capabilities:
        pytest.skip(f"backend {backend.name!r} does not offer {family!r}")


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _drain(backend: Backend, queue: str, group: str, expected: int, *, deadline_s: float = 20.0,
           ack: bool = True) -> list:
    """Consume until ``expected`` messages arrived (or the deadline passed)."""
    got: list = []
    deadline = time.monotonic() + deadline_s
    while len(got) < expected and time.monotonic() < deadline:
        batch = backend.consume(queue, group, max_messages=500, timeout=0.5)
        got.extend(batch)
        if ack and batch:
            backend.ack(queue, group, [m.id for m in batch])
    return got


def _race(n: int, fn) -> list:
    """Run ``fn(worker_index)`` in ``n`` threads released together; return their results."""
    results: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def worker(w: int) -> None:
        barrier.wait()
        r = fn(w)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


class BackendConformance:
    """The shared contract tests. Subclass and provide ``backend`` and ``unreachable_backend``."""

    # ------------------------------------------------------------------ queues
    def test_publish_consume_round_trip(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        q = _fresh("rt")
        backend.create_queue(q)
        backend.create_queue(q)  # creating twice is a no-op
        assert q in backend.list_queues()
        ids = [
            backend.publish(q, b"k1", b"v1", headers={"type": "transactional"}, epoch=7),
            backend.publish(q, "k2", "v2"),
            backend.publish(q, b"k1", b"\x00\xffbinary", epoch=8),
        ]
        assert len(set(ids)) == 3, "message ids must be unique within a queue"
        got = _drain(backend, q, "g1", 3)
        assert [(m.key, m.value) for m in got] == [(b"k1", b"v1"), (b"k2", b"v2"), (b"k1", b"\x00\xffbinary")]
        assert [m.id for m in got] == ids
        assert got[0].headers.get("type") == "transactional"
        assert [m.epoch for m in got] == [7, 0, 8]
        assert all(m.queue == q and m.delivery_count == 1 for m in got)

    def test_publish_batch_keeps_order(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        q = _fresh("batch")
        backend.create_queue(q)
        ids = backend.publish_batch(q, [(b"k", str(i).encode()) for i in range(200)], epoch=3)
        assert len(ids) == 200 and len(set(ids)) == 200
        got = _drain(backend, q, "g", 200)
        assert [int(m.value) for m in got] == list(range(200))
        assert {m.epoch for m in got} == {3}

    def test_groups_each_see_every_message(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        q = _fresh("groups")
        backend.create_queue(q)
        for g in ("ga", "gb"):  # a group sees what is published after its first consume
            backend.consume(q, g, timeout=0.0)
        backend.publish_batch(q, [(b"k", b"a"), (b"k", b"b")])
        assert [m.value for m in _drain(backend, q, "ga", 2)] == [b"a", b"b"]
        assert [m.value for m in _drain(backend, q, "gb", 2)] == [b"a", b"b"]

    def test_ack_and_redelivery_after_visibility_timeout(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        assert backend.visibility_timeout <= 1.0, "the backend fixture must use visibility_timeout <= 1 s"
        q = _fresh("redeliver")
        backend.create_queue(q)
        backend.publish_batch(q, [(b"a", b"1"), (b"b", b"2")])
        first = _drain(backend, q, "g", 2, ack=False)
        assert [m.value for m in first] == [b"1", b"2"]
        assert backend.ack(q, "g", [first[0].id]) == 1
        time.sleep(backend.visibility_timeout + 0.3)
        again = _drain(backend, q, "g", 1, ack=False)
        assert [m.value for m in again] == [b"2"], "only the unacked message comes back"
        assert again[0].redelivered and again[0].delivery_count >= 2
        assert backend.ack(q, "g", [again[0].id]) == 1
        time.sleep(backend.visibility_timeout + 0.3)
        assert backend.consume(q, "g", timeout=0.3) == [], "acked messages are never redelivered"

    def test_backlog_counts_unacked(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        q = _fresh("lag")
        backend.create_queue(q)
        # register the group before publishing: a message taken now and left unacked would be
        # redelivered mid-test and could reach the drain below twice on a slow machine
        backend.consume(q, "g", timeout=0.0)
        backend.publish_batch(q, [(b"k", str(i)) for i in range(5)])
        deadline = time.monotonic() + 10
        while backend.backlog(q, "g") != 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.backlog(q, "g") == 5, "published, not yet acked: backlog"
        got = _drain(backend, q, "g", 5, ack=False)
        assert [m.value for m in got] == [b"0", b"1", b"2", b"3", b"4"]
        backend.ack(q, "g", [m.id for m in got[:2]])
        deadline = time.monotonic() + 10
        while backend.backlog(q, "g") != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.backlog(q, "g") == 3, "delivered but unacked still counts as backlog"

    def test_blocking_consume_wakes_on_publish(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        q = _fresh("wake")
        backend.create_queue(q)
        backend.consume(q, "g", timeout=0.0)
        timer = threading.Timer(0.3, lambda: backend.publish(q, b"k", b"late"))
        timer.start()
        try:
            got = backend.consume(q, "g", timeout=10.0)
            if not got:  # a broker may return early with nothing; it must deliver on the next call
                got = _drain(backend, q, "g", 1, ack=False)
        finally:
            timer.join()
        assert [m.value for m in got] == [b"late"]

    def test_concurrent_publishers_lose_nothing_and_keep_per_key_order(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        q = _fresh("conc")
        backend.create_queue(q)
        n_threads, per_thread = 4, 150
        errors: list[BaseException] = []

        def produce(t: int) -> None:
            try:
                for i in range(per_thread):
                    backend.publish(q, f"key-{t}".encode(), f"{t}:{i}".encode())
            except BaseException as exc:  # surfaced below, never swallowed
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        got = _drain(backend, q, "g", n_threads * per_thread)
        assert len(got) == n_threads * per_thread, "no message may be lost"
        seqs: dict[bytes, list[int]] = defaultdict(list)
        for m in got:
            seqs[m.key].append(int(m.value.split(b":")[1]))
        for key, s in seqs.items():
            assert s == list(range(per_thread)), f"per-key order broken for {key!r}"

    def test_bad_publish_input_is_rejected_and_nothing_is_sent(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        q = _fresh("bad")
        backend.create_queue(q)
        with pytest.raises(MessageTooLargeError, match="value must be at most"):
            backend.publish(q, b"k", b"x" * (backend.max_message_bytes + 1))
        with pytest.raises(InvalidTypeError, match="value must be bytes or str"):
            backend.publish_batch(q, [(b"k", b"ok"), (b"k", 12345)])  # type: ignore[list-item]
        with pytest.raises(InvalidValueError, match="queue must be"):
            backend.publish("bad name with spaces", b"k", b"v")
        with pytest.raises(InvalidValueError, match="max_messages"):
            backend.consume(q, "g", max_messages=0)
        backend.publish(q, b"k", b"only-this")
        got = _drain(backend, q, "g", 1)
        assert [m.value for m in got] == [b"only-this"], "a rejected batch must send nothing"
        assert backend.consume(q, "g", timeout=0.3) == []

    def test_delete_queue(self, backend: Backend) -> None:
        _need(backend, QUEUES)
        q = _fresh("del")
        backend.create_queue(q)
        backend.delete_queue(q)
        backend.delete_queue(q)  # idempotent
        assert q not in backend.list_queues()
        # publishing to a deleted shard must fail loudly (a router with a stale map must
        # not lose the message into a queue nobody reads)
        # UnknownQueueError (an InvalidValueError): routers rely on it to tell "this retired
        # queue was drained and deleted" from any other bad input
        with pytest.raises(UnknownQueueError, match="does not exist"):
            backend.publish(q, b"k", b"v")
        with pytest.raises(UnknownQueueError, match="does not exist"):
            backend.publish_batch(q, [(b"k", b"v")])
        with pytest.raises(UnknownQueueError):
            backend.consume(q, "g", timeout=0.1)

    def test_resharding_loses_nothing_and_keeps_per_key_order(self, backend: Backend) -> None:
        """Random split/isolate/merge/move plans while producers publish through the Router
        and consumers drain through the fence: every message once, each key in order."""
        _need(backend, QUEUES)
        from fastshard.testing.resharding import check_resharding

        report = check_resharding(backend, seed=7, keys=24, messages=600, rounds=5, timeout=120.0)
        assert report.ok, report
        assert report.plans_applied >= 1, "the check must actually reshard while publishing"

    # ------------------------------------------------------------------ key-value
    def test_kv_versions(self, backend: Backend) -> None:
        _need(backend, KV)
        k = _fresh("kv")
        assert backend.kv_get(k) is None
        assert backend.kv_set(k, b"a") == 1
        assert backend.kv_set(k, "b") == 2
        v = backend.kv_get(k)
        assert v is not None and (v.value, v.version) == (b"b", 2)

    def test_kv_cas(self, backend: Backend) -> None:
        _need(backend, KV)
        k = _fresh("cas")
        assert backend.kv_cas(k, b"first", 0) == 1
        assert backend.kv_cas(k, b"again", 0) is None, "expected_version 0 means must not exist"
        assert backend.kv_cas(k, b"second", 1) == 2
        assert backend.kv_cas(k, b"stale", 1) is None
        v = backend.kv_get(k)
        assert v is not None and (v.value, v.version) == (b"second", 2), "a lost CAS changes nothing"

    def test_kv_cas_exactly_one_winner_under_contention(self, backend: Backend) -> None:
        _need(backend, KV)
        k = _fresh("race")
        backend.kv_set(k, b"0")
        for round_ in range(10):
            version = backend.kv_get(k).version  # type: ignore[union-attr]
            results = _race(6, lambda w, v=version, r=round_: backend.kv_cas(k, f"{r}:{w}".encode(), v))
            winners = [r for r in results if r is not None]
            assert winners == [version + 1], f"round {round_}: exactly one writer must win, got {results}"

    def test_kv_delete_and_keys(self, backend: Backend) -> None:
        _need(backend, KV)
        p = _fresh("pre")
        for s in ("a", "b", "c"):
            backend.kv_set(f"{p}/{s}", s)
        backend.kv_set(_fresh("other"), b"x")
        assert backend.kv_keys(p + "/") == [f"{p}/a", f"{p}/b", f"{p}/c"]
        assert backend.kv_delete(f"{p}/b") is True
        assert backend.kv_delete(f"{p}/b") is False
        assert backend.kv_keys(p + "/") == [f"{p}/a", f"{p}/c"]
        assert backend.kv_cas(f"{p}/b", b"new", 0) == 1, "a deleted key can be created again"

    def test_notify_reaches_current_subscribers(self, backend: Backend) -> None:
        _need(backend, KV)
        ch = _fresh("ch")
        backend.notify(ch, b"before")  # nobody listening: dropped
        with backend.subscribe(ch) as sub:
            time.sleep(0.2)  # let a server-side subscription settle
            backend.notify(ch, b"epoch-2")
            assert sub.get(timeout=5.0) == b"epoch-2"
            assert sub.get(timeout=0.2) is None

    # ------------------------------------------------------------------ counters
    def test_counter_add_is_atomic_fetch_add(self, backend: Backend) -> None:
        _need(backend, COUNTERS)
        c = _fresh("ctr")
        assert backend.counter_get(c) == 0
        seen: list[int] = []
        lock = threading.Lock()

        def bump() -> None:
            mine = [backend.counter_add(c, 10) for _ in range(50)]
            with lock:
                seen.extend(mine)

        threads = [threading.Thread(target=bump) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert backend.counter_get(c) == 6 * 50 * 10
        assert sorted(seen) == list(range(10, 3001, 10)), "every caller gets its own block end"
        assert backend.counter_add(c, -1000) == 2000

    # ------------------------------------------------------------------ leases
    def test_lease_fencing(self, backend: Backend) -> None:
        _need(backend, LEASES)
        name = _fresh("lease")
        t1 = backend.lease_acquire(name, "host-a", ttl=0.6)
        assert t1 is not None and t1 >= 1
        assert backend.lease_acquire(name, "host-b", ttl=0.6) is None, "held leases are exclusive"
        assert backend.lease_acquire(name, "host-a", ttl=0.6) == t1, "the holder renews with the same token"
        info = backend.lease_info(name)
        assert info is not None and info.owner == "host-a" and info.token == t1 and 0 < info.expires_in <= 0.7
        time.sleep(0.9)
        assert backend.lease_info(name) is None
        t2 = backend.lease_acquire(name, "host-b", ttl=5)
        assert t2 is not None and t2 > t1, "a new holder gets a larger fencing token"
        assert backend.lease_renew(name, "host-a", t1, ttl=5) is False, "a fenced holder cannot renew"
        assert backend.lease_release(name, "host-a", t1) is False
        assert backend.lease_renew(name, "host-b", t2, ttl=5) is True
        assert backend.lease_release(name, "host-b", t2) is True
        t3 = backend.lease_acquire(name, "host-a", ttl=5)
        assert t3 is not None and t3 > t2

    def test_lease_bad_ttl_is_rejected(self, backend: Backend) -> None:
        _need(backend, LEASES)
        with pytest.raises(InvalidValueError, match="ttl must be in"):
            backend.lease_acquire(_fresh("l"), "o", ttl=0)
        with pytest.raises(InvalidValueError, match="ttl must be finite"):
            backend.lease_acquire(_fresh("l"), "o", ttl=float("nan"))

    # ------------------------------------------------------------------ failure
    def test_unreachable_server_fails_clearly(self, backend: Backend, unreachable_backend) -> None:
        if unreachable_backend is None:
            pytest.skip(f"backend {backend.name!r} has no server to lose")
        start = time.monotonic()
        with pytest.raises(BackendError):
            b = unreachable_backend()
            try:
                if QUEUES in b.capabilities:
                    b.create_queue("conformance-unreachable")
                    b.publish("conformance-unreachable", b"k", b"v")
                elif KV in b.capabilities:
                    b.kv_set("conformance-unreachable", b"v")
                else:
                    b.counter_add("conformance-unreachable", 1)
            finally:
                try:
                    b.close()
                except BackendError:
                    pass
        assert time.monotonic() - start < 60, "an unreachable server must fail within the retry budget"
