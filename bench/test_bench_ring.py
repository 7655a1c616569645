"""Ring lookup speed next to the installable peers, measured in the same run.

Peers (``bench`` extra): ``jump-consistent-hash`` after ``xxhash`` (``jump.hash(
xxhash.xxh3_64_intdigest(k.encode()), n)``, the fastest consistent placement a Python user
can install today) and ``uhashring.HashRing.get_node`` (ketama ring).

Every benchmark places the same 1,000 str keys per round, so the median in microseconds is
the cost per key in nanoseconds (the Python loop around the calls is included, equally for
every contender). Ratios: see the "(x.xx)" column pytest-benchmark prints within a group.

    .venv/bin/pytest bench/test_bench_ring.py --benchmark-columns=median,iqr,rounds \
        --benchmark-group-by=group
    .venv/bin/pytest bench/test_bench_ring.py --benchmark-disable      # quick mode (CI)
"""

from __future__ import annotations

import numpy as np
import pytest
import xxhash

from fastshard.hashing import hash_many
from fastshard.ring import Ring

jump = pytest.importorskip("jump", reason="peer library: pip install fastshard[bench]")
uhashring = pytest.importorskip("uhashring", reason="peer library: pip install fastshard[bench]")

N_KEYS = 1_000
KEYS = [f"user:{i * 7919}" for i in range(N_KEYS)]
BATCH_KEYS = [f"session-{i * 104729}" for i in range(100_000)]


@pytest.fixture(scope="module", params=[64, 1024], ids=lambda n: f"nodes={n}")
def nodes(request) -> list[str]:
    return [f"node-{i}" for i in range(request.param)]


@pytest.fixture(scope="module")
def ring(nodes) -> Ring:
    return Ring(nodes)


def _check_spread(owners: list, n_nodes: int) -> None:
    # every contender must really place keys on many nodes (guards against a no-op bench)
    assert len(set(owners)) > min(n_nodes, N_KEYS) // 2


def test_fastshard_ring_lookup(benchmark, ring, nodes):
    benchmark.group = f"ring-lookup-str nodes={len(nodes)}"
    lookup = ring.lookup

    def run():
        return [lookup(k) for k in KEYS]

    _check_spread(benchmark(run), len(nodes))


def test_floor_builtin_len_call(benchmark, nodes):
    """Floor, not a contender: the same loop calling the builtin len() per key."""
    benchmark.group = f"ring-lookup-str nodes={len(nodes)}"

    def run():
        return [len(k) for k in KEYS]

    assert benchmark(run)[0] == len(KEYS[0])


def test_peer_jump_plus_xxhash(benchmark, nodes):
    benchmark.group = f"ring-lookup-str nodes={len(nodes)}"
    jh, xx, n = jump.hash, xxhash.xxh3_64_intdigest, len(nodes)

    def run():
        return [nodes[jh(xx(k.encode()), n)] for k in KEYS]

    _check_spread(benchmark(run), len(nodes))


def test_peer_uhashring(benchmark, nodes):
    benchmark.group = f"ring-lookup-str nodes={len(nodes)}"
    get_node = uhashring.HashRing(nodes=nodes).get_node

    def run():
        return [get_node(k) for k in KEYS]

    _check_spread(benchmark(run), len(nodes))


def test_fastshard_lookup_many_str(benchmark, ring, nodes):
    benchmark.group = f"ring-lookup-many nodes={len(nodes)}"
    """100,000 str keys per round: the median in ms x 10 is ns per key."""
    out = benchmark(ring.lookup_many, BATCH_KEYS)
    assert out.shape == (len(BATCH_KEYS),) and int(out.max()) < len(nodes)


def test_fastshard_lookup_many_prehashed(benchmark, ring, nodes):
    benchmark.group = f"ring-lookup-many nodes={len(nodes)}"
    """100,000 pre-hashed keys (uint64 array) per round, placed without the GIL."""
    hashes = hash_many(BATCH_KEYS)
    out = benchmark(ring.lookup_many, hashes)
    assert np.array_equal(out, ring.lookup_many(BATCH_KEYS))


def test_peer_lookup_many_jump_plus_xxhash(benchmark, nodes):
    benchmark.group = f"ring-lookup-many nodes={len(nodes)}"
    """The peer has no batch API: a list comprehension over the same 100,000 keys."""
    jh, xx, n = jump.hash, xxhash.xxh3_64_intdigest, len(nodes)

    def run():
        return np.array([jh(xx(k.encode()), n) for k in BATCH_KEYS], dtype=np.int32)

    out = benchmark(run)
    assert out.shape == (len(BATCH_KEYS),)
