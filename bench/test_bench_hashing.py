"""Key hashing and bucket-function speed next to the installable peers, in the same run.

Peers: ``xxhash.xxh3_64_intdigest`` (the C library behind the same hash; a str must be
encoded first) and ``jump-consistent-hash``'s ``jump.hash``.

Per-key benchmarks hash/place 1,000 keys per round (median in us == ns per key); batch
benchmarks 100,000 per round (median in ms x 10 == ns per key).

    .venv/bin/pytest bench/test_bench_hashing.py --benchmark-columns=median,iqr,rounds \
        --benchmark-group-by=group
    .venv/bin/pytest bench/test_bench_hashing.py --benchmark-disable   # quick mode (CI)
"""

from __future__ import annotations

import numpy as np
import pytest
import xxhash

from fastshard.hashing import (
    hash_key,
    hash_many,
    jump_hash_many,
    jumpback_hash,
    jumpback_hash_many,
)

jump = pytest.importorskip("jump", reason="peer library: pip install fastshard[bench]")

KEYS = [f"user:{i * 7919}" for i in range(1_000)]
BATCH_KEYS = [f"session-{i * 104729}" for i in range(100_000)]
HASHES = np.random.default_rng(1).integers(0, 1 << 64, size=100_000, dtype=np.uint64)
HASH_LIST = [int(h) for h in HASHES[:1_000]]


@pytest.mark.benchmark(group="hash-key-str")
def test_fastshard_hash_key(benchmark):
    out = benchmark(lambda: [hash_key(k) for k in KEYS])
    assert out[0] == xxhash.xxh3_64_intdigest(KEYS[0].encode())


@pytest.mark.benchmark(group="hash-key-str")
def test_peer_xxhash_intdigest(benchmark):
    xx = xxhash.xxh3_64_intdigest
    out = benchmark(lambda: [xx(k.encode()) for k in KEYS])
    assert out[0] == hash_key(KEYS[0])


@pytest.mark.benchmark(group="hash-many-str")
def test_fastshard_hash_many(benchmark):
    out = benchmark(hash_many, BATCH_KEYS)
    assert out.dtype == np.uint64 and out.shape == (len(BATCH_KEYS),)


@pytest.mark.benchmark(group="hash-many-str")
def test_peer_xxhash_list_to_array(benchmark):
    xx = xxhash.xxh3_64_intdigest
    out = benchmark(lambda: np.array([xx(k.encode()) for k in BATCH_KEYS], dtype=np.uint64))
    assert out[0] == hash_key(BATCH_KEYS[0])


@pytest.mark.parametrize("n", [64, 1000, 40960], ids=lambda n: f"n={n}")
def test_fastshard_jumpback_hash_many(benchmark, n):
    benchmark.group = f"bucket-batch n={n}"
    out = benchmark(jumpback_hash_many, HASHES, n)
    assert int(out.max()) < n


@pytest.mark.parametrize("n", [64, 1000, 40960], ids=lambda n: f"n={n}")
def test_fastshard_jump_hash_many(benchmark, n):
    benchmark.group = f"bucket-batch n={n}"
    out = benchmark(jump_hash_many, HASHES, n)
    assert int(out.max()) < n


@pytest.mark.parametrize("n", [64, 1000], ids=lambda n: f"n={n}")
def test_fastshard_jumpback_hash(benchmark, n):
    benchmark.group = f"bucket-scalar n={n}"
    out = benchmark(lambda: [jumpback_hash(h, n) for h in HASH_LIST])
    assert max(out) < n


@pytest.mark.parametrize("n", [64, 1000], ids=lambda n: f"n={n}")
def test_peer_jump_hash(benchmark, n):
    benchmark.group = f"bucket-scalar n={n}"
    jh = jump.hash
    out = benchmark(lambda: [jh(h, n) for h in HASH_LIST])
    assert max(out) < n
