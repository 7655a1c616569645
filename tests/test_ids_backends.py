"""The ID coordinator on server backends (Redis, PostgreSQL) through the generic Backend API.

Runs when the backend's plugin is installed (``fastshard.backends.available()``) and the
server is reachable (``require_server``: skipped locally, a failure under CI=true).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from fastshard import backends
from fastshard.backends.base import Backend
from fastshard.errors import LeaseLostError
from fastshard.ids import Coordinator, IdGenerator, parse
from fastshard.testing.faults import OutageBackend
from fastshard.testing.servers import require_server


def assert_unique_and_k_sorted(per_thread: list[list[int]]) -> None:
    everything = [x for seq in per_thread for x in seq]
    assert len(everything) == len(set(everything)), "duplicate IDs"
    for seq in per_thread:
        assert seq == sorted(seq)
        shards = [parse(x)[0] for x in seq]
        assert shards == sorted(shards)


SERVERS = {
    "redis": ("127.0.0.1", 6379, {"url": "redis://127.0.0.1:6379/0"}),
    "postgres": ("127.0.0.1", 5432, {"dsn": "postgresql://postgres@127.0.0.1:5432/test"}),
}


@pytest.fixture(params=sorted(SERVERS))
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[[], Backend]]:
    """A factory of connections to one server (each one stands for a separate process)."""
    name = request.param
    if name not in backends.available():
        pytest.skip(f"the fastshard-{name} plugin is not installed")
    host, port, options = SERVERS[name]
    require_server(name, host, port)
    opened: list[Backend] = []

    def factory() -> Backend:
        b = backends.get(name, **options)
        opened.append(b)
        return b

    yield factory
    if opened:
        for key in opened[0].kv_keys(request.node.ids_namespace):
            opened[0].kv_delete(key)
    for b in opened:
        b.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    ns = f"t{uuid.uuid4().hex[:12]}"
    request.node.ids_namespace = ns
    return ns


def test_generators_on_separate_connections_sharing_a_host_id(connect, namespace) -> None:
    gens = [
        IdGenerator(11, coordinator=Coordinator(connect(), namespace=namespace), owner="svc-1",
                    min_block=32, max_block=128, prefetch_at=0.1)
        for _ in range(3)
    ]
    assert len({g.token for g in gens}) == 1  # one owner, one lease

    out: list[list[int]] = [[] for _ in range(6)]

    def work(i: int) -> None:
        g = gens[i % 3]
        for j in range(150):
            out[i].extend(g.next_ids(7).tolist() if j % 2 else [g.next_id()])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_unique_and_k_sorted(out)
    assert {parse(x)[1] for seq in out for x in seq} == {11}
    assert sum(g.stats()["blocks_leased"] for g in gens) > 10
    for g in gens:
        g.close()


def test_failover_and_fencing_on_the_server(connect, namespace) -> None:
    link_a = OutageBackend(connect())
    a = IdGenerator(12, coordinator=Coordinator(link_a, namespace=namespace), owner="host-a",
                    lease_ttl=0.6, min_block=64, max_block=64, max_wait=0.2)
    ids_a = a.next_ids(300).tolist()
    link_a.down = True
    standby = Coordinator(connect(), namespace=namespace)
    with pytest.raises(LeaseLostError):
        IdGenerator(12, coordinator=standby, owner="host-b")
    b = IdGenerator(12, coordinator=standby, owner="host-b", takeover_wait=5.0, min_block=64)
    assert b.token > a.token
    ids_b = b.next_ids(300).tolist()
    link_a.down = False
    deadline = time.monotonic() + 3.0
    while not a.fenced and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a.fenced
    with pytest.raises(LeaseLostError):
        a.next_ids(100)
    assert_unique_and_k_sorted([ids_a, ids_b])
    a.close()
    b.close()


def test_restart_continues_above_the_server_record(connect, namespace) -> None:
    coord = Coordinator(connect(), namespace=namespace)
    g1 = IdGenerator(13, coordinator=coord, owner="x", min_block=100)
    first = g1.next_ids(250).tolist()
    g1.close()
    # a new process (new connection, no local state file) on the same host id
    g2 = IdGenerator(13, coordinator=Coordinator(connect(), namespace=namespace), owner="y")
    second = g2.next_ids(250).tolist()
    assert min(second) > max(first)
    g2.close()
