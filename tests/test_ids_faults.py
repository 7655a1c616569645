"""Fault injection in one process: many threads, coordinator outages, lease failover, fork.

Every test checks exhaustively that no ID was issued twice and that each thread's IDs are
increasing with non-decreasing time shards (k-sorted by shard).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from fastshard.backends.memory import MemoryBackend
from fastshard.errors import BackendUnavailableError, IdExhaustedError, LeaseLostError
from fastshard.ids import Coordinator, IdGenerator, IdLayout, parse
from fastshard.testing.faults import OutageBackend


def assert_unique_and_k_sorted(per_thread: list[list[int]]) -> None:
    everything = [x for seq in per_thread for x in seq]
    assert len(everything) == len(set(everything)), "duplicate IDs"
    for seq in per_thread:
        assert seq == sorted(seq)
        shards = [parse(x)[0] for x in seq]
        assert shards == sorted(shards)


def run_threads(n: int, work) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n)]
    threads = [threading.Thread(target=work, args=(out[i], i)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_many_threads_small_blocks_no_duplicates() -> None:
    gen = IdGenerator(1, min_block=64, max_block=512, prefetch_at=0.1)

    def work(out: list[int], i: int) -> None:
        for j in range(4000):
            if j % 10 == 0:
                out.extend(gen.next_ids(37).tolist())
            else:
                out.append(gen.next_id())

    per_thread = run_threads(8, work)
    assert_unique_and_k_sorted(per_thread)
    assert gen.stats()["blocks_leased"] > 50  # the refill path really was exercised
    gen.close()


def test_coordinator_unreachable_for_a_while_issuance_pauses_then_resumes() -> None:
    backend = OutageBackend(MemoryBackend())
    gen = IdGenerator(2, coordinator=Coordinator(backend), min_block=256, max_block=256,
                      lease_ttl=5.0, max_wait=2.0)
    stop = time.monotonic() + 1.2
    leased_when_back: list[int] = []

    def work(out: list[int], i: int) -> None:
        while time.monotonic() < stop:
            out.append(gen.next_id())
            out.extend(gen.next_ids(20).tolist())
            time.sleep(0.0005)

    def outage() -> None:
        time.sleep(0.3)
        backend.down = True
        time.sleep(0.5)
        leased_when_back.append(gen.stats()["blocks_leased"])
        backend.down = False

    t = threading.Thread(target=outage)
    t.start()
    per_thread = run_threads(4, work)
    t.join()
    assert backend.refused > 0  # the outage really was hit
    assert_unique_and_k_sorted(per_thread)
    assert gen.stats()["blocks_leased"] > leased_when_back[0] > 1  # leased before and after
    gen.close()


def test_outage_longer_than_max_wait_raises_clearly_and_recovers() -> None:
    backend = OutageBackend(MemoryBackend())
    gen = IdGenerator(3, coordinator=Coordinator(backend), min_block=16, max_block=16,
                      max_wait=0.3, background=False)
    before = gen.next_ids(16).tolist()
    backend.down = True
    with pytest.raises(IdExhaustedError, match="unreachable") as info:
        gen.next_ids(100)  # the in-hand block has nothing left
    assert isinstance(info.value.__cause__, BackendUnavailableError)
    backend.down = False
    after = gen.next_ids(100).tolist()
    assert_unique_and_k_sorted([before + after])
    gen.close()


def test_lease_lapse_stops_issuance_even_with_ids_in_hand_then_renewal_resumes() -> None:
    # hour-long time shards: no shard boundary (which also retires a block) can fall inside
    # the test, so only the lapsed lease can empty the block
    layout = IdLayout(shard_seconds=3600.0)
    backend = OutageBackend(MemoryBackend())
    gen = IdGenerator(4, layout=layout, coordinator=Coordinator(backend, layout=layout),
                      min_block=100_000, lease_ttl=0.4, max_wait=0.2)
    ids = gen.next_ids(10).tolist()
    backend.down = True
    deadline = time.monotonic() + 5.0  # 0.8 * ttl without a renewal, plus a worker poll
    while gen.remaining() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gen.remaining() == 0  # the block was set aside although it still had room
    assert time.monotonic() >= gen._lease_ok_until  # and only once the lease had lapsed
    with pytest.raises(IdExhaustedError, match="unreachable"):
        gen.next_id()
    backend.down = False  # nobody took the host id meanwhile: renewal succeeds
    ids += gen.next_ids(10).tolist()
    assert_unique_and_k_sorted([ids])
    assert not gen.fenced
    gen.close()


def test_failover_to_standby_while_old_host_comes_back() -> None:
    shared = MemoryBackend()
    link_a = OutageBackend(shared)
    a = IdGenerator(5, coordinator=Coordinator(link_a), owner="host-a", lease_ttl=0.6,
                    min_block=64, max_block=64, max_wait=0.2)
    ids_a = a.next_ids(500).tolist()
    link_a.down = True  # host a is partitioned away

    standby_coord = Coordinator(shared)
    with pytest.raises(LeaseLostError, match="leased by 'host-a'"):
        IdGenerator(5, coordinator=standby_coord, owner="host-b")  # too early: lease alive

    issued_a_while_partitioned: list[int] = []
    stop = threading.Event()

    def keep_a_busy() -> None:  # the old host keeps trying to issue through all of this
        while not stop.is_set():
            try:
                issued_a_while_partitioned.append(a.next_id())
            except (IdExhaustedError, LeaseLostError):
                time.sleep(0.01)

    t = threading.Thread(target=keep_a_busy)
    t.start()
    t0 = time.monotonic()
    b = IdGenerator(5, coordinator=standby_coord, owner="host-b", takeover_wait=5.0,
                    min_block=64, max_block=64)
    waited = time.monotonic() - t0
    assert b.token > a.token
    assert waited > 0.1  # it waited for the old lease to expire
    ids_b = b.next_ids(500).tolist()

    link_a.down = False  # host a comes back
    deadline = time.monotonic() + 3.0
    while not a.fenced and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    t.join()
    assert a.fenced, "the revived old host must learn it was fenced"
    with pytest.raises(LeaseLostError):
        a.next_id()
    with pytest.raises(LeaseLostError, match="taken over"):
        Coordinator(shared).allocate(5, a.token, 0, 10, 2**40)  # stale token refused
    ids_b += b.next_ids(500).tolist()
    assert_unique_and_k_sorted([ids_a + issued_a_while_partitioned, ids_b])
    status = standby_coord.host_status(5)
    assert status.lease is not None and status.lease.owner == "host-b"
    assert status.token == b.token
    a.close()
    b.close()


def test_failed_hosts_are_reported() -> None:
    coord = Coordinator()
    g = IdGenerator(8, coordinator=coord, lease_ttl=0.1, background=False)
    g.next_id()
    time.sleep(0.15)
    assert coord.failed_hosts() == [8]
    assert coord.host_status(8).failed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_with_embedded_coordinator_refuses_instead_of_duplicating() -> None:
    gen = IdGenerator(6)
    parent_ids = gen.next_ids(10)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            gen.next_id()
            code = b"issued"
        except LeaseLostError as exc:
            code = b"refused" if "fork" in str(exc) else b"wrong-message"
        except BaseException:
            code = b"other-error"
        os.write(w, code)
        os._exit(0)
    os.close(w)
    got = os.read(r, 100)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"refused"
    more = gen.next_ids(10)  # the parent is unaffected
    assert np.intersect1d(parent_ids, more).size == 0
    gen.close()
