"""ShardMap lookup speed next to the obvious pure-Python peer, measured in the same run.

Peer: ``bisect.bisect_right`` over a Python list of slice starts after
``xxhash.xxh3_64_intdigest`` (per key), and ``numpy.searchsorted`` over xxhash digests (batch).
Each benchmark routes the same 10,000 str keys; divide the median by 10,000 for ns/key.

    .venv/bin/pytest bench/test_bench_shardmap.py --benchmark-columns=median,iqr,rounds \
        --benchmark-group-by=group,param:slices
    .venv/bin/pytest bench/test_bench_shardmap.py --benchmark-disable     # quick mode (CI)
"""

from __future__ import annotations

import bisect
import random
from collections import deque

import numpy as np
import pytest
import xxhash

from fastshard.shardmap import ShardMap

N_KEYS = 10_000
KEYS = [f"user-{i * 7919}" for i in range(N_KEYS)]


def _uneven_map(slices: int) -> ShardMap:
    """A map after many splits: uneven slice widths, as a manager leaves it."""
    m = ShardMap(16, [f"node-{i}" for i in range(8)], name="bench")
    rng = random.Random(7)
    with m.batch():
        while len(m.slices) < slices:
            sl = m.slices
            i = rng.randrange(len(sl))
            if sl[i].end - sl[i].start > 2:
                m.split(i, at=rng.randrange(sl[i].start + 1, sl[i].end))
    return m


@pytest.fixture(scope="module", params=[64, 1024], ids=lambda n: f"slices={n}")
def shard_map(request) -> ShardMap:
    return _uneven_map(request.param)


class BisectPeer:
    """The pure-Python implementation a user would write first."""

    def __init__(self, m: ShardMap) -> None:
        sl = m.slices
        self.starts = [s.start for s in sl]
        self.owner = [s.shard for s in sl]
        self.shards = m.shards
        self.index = {s: i for i, s in enumerate(self.shards)}
        self.starts_array = np.array(self.starts, dtype=np.uint64)
        self.slice_shard = np.array([self.index[o] for o in self.owner], dtype=np.int32)

    def shard_for(self, key: str) -> str:
        return self.owner[bisect.bisect_right(self.starts, xxhash.xxh3_64_intdigest(key.encode())) - 1]

    def shards_for_many(self, keys: list[str]) -> np.ndarray:
        hashes = np.fromiter((xxhash.xxh3_64_intdigest(k.encode()) for k in keys), np.uint64, len(keys))
        return self.slice_shard[np.searchsorted(self.starts_array, hashes, side="right") - 1]


def _consume(fn, keys) -> None:
    deque(map(fn, keys), maxlen=0)  # the cheapest Python loop: same for both sides


@pytest.mark.benchmark(group="shard_for (10k str keys)")
def test_shard_for_fastshard(benchmark, shard_map):
    peer = BisectPeer(shard_map)
    assert [shard_map.shard_for(k) for k in KEYS[:500]] == [peer.shard_for(k) for k in KEYS[:500]]
    benchmark(_consume, shard_map.shard_for, KEYS)


@pytest.mark.benchmark(group="shard_for (10k str keys)")
def test_shard_for_peer_bisect_xxhash(benchmark, shard_map):
    benchmark(_consume, BisectPeer(shard_map).shard_for, KEYS)


@pytest.mark.benchmark(group="shards_for_many (10k str keys)")
def test_shards_for_many_fastshard(benchmark, shard_map):
    peer = BisectPeer(shard_map)
    assert (shard_map.shards_for_many(KEYS) == peer.shards_for_many(KEYS)).all()
    benchmark(shard_map.shards_for_many, KEYS)


@pytest.mark.benchmark(group="shards_for_many (10k str keys)")
def test_shards_for_many_peer_numpy_searchsorted(benchmark, shard_map):
    benchmark(BisectPeer(shard_map).shards_for_many, KEYS)


@pytest.mark.benchmark(group="shards_for_many (10k uint64 hashes)")
def test_shards_for_many_hashes_fastshard(benchmark, shard_map):
    hashes = np.array([xxhash.xxh3_64_intdigest(k.encode()) for k in KEYS], dtype=np.uint64)
    peer = BisectPeer(shard_map)
    expect = peer.slice_shard[np.searchsorted(peer.starts_array, hashes, side="right") - 1]
    assert (shard_map.shards_for_many(hashes) == expect).all()
    benchmark(shard_map.shards_for_many, hashes)


@pytest.mark.benchmark(group="shards_for_many (10k uint64 hashes)")
def test_shards_for_many_hashes_peer_numpy_searchsorted(benchmark, shard_map):
    hashes = np.array([xxhash.xxh3_64_intdigest(k.encode()) for k in KEYS], dtype=np.uint64)
    peer = BisectPeer(shard_map)
    benchmark(lambda: peer.slice_shard[np.searchsorted(peer.starts_array, hashes, side="right") - 1])
