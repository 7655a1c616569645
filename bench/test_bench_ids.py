"""ID generation speed next to the installable peers, measured in the same run.

* ``id-single``: 1,000 calls per round of ``IdGenerator.next_id()``, ``uuid_utils.uuid7()``,
  ``snowflake-id``'s ``next(SnowflakeGenerator)`` and stdlib ``uuid.uuid4()``, each driven
  by the same ``for _ in repeat(None, 1000)`` loop (median in us == ns per ID, loop
  included). ``loop-baseline`` is that loop calling ``(0).bit_length``, a no-argument C
  method like ``next_id``, so ``median - baseline`` is roughly the work of the call itself.
* ``id-batch``: ``next_ids(65536)``; divide the median by 65,536 for ns per ID.
  ``numpy.arange`` of the same size is the memory-bandwidth floor.
* ``id-backend``: the same single-ID loop on a generator whose coordinator is Redis vs the
  embedded one, blocks warm (skipped without the fastshard-redis plugin / a Redis server).

The generators use a layout with room for 2**30 IDs per host per second so that a benchmark
issuing billions of IDs per second measures the hot path, not the overflow pause.

    .venv/bin/pytest bench/test_bench_ids.py --benchmark-columns=median,iqr,rounds \
        --benchmark-group-by=group --benchmark-sort=mean
    .venv/bin/pytest bench/test_bench_ids.py --benchmark-disable   # quick mode (CI)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from itertools import repeat

import numpy as np
import pytest

from fastshard.ids import Coordinator, IdGenerator, IdLayout, parse
from fastshard.testing.servers import require_server

uuid_utils = pytest.importorskip("uuid_utils", reason="peer library: pip install fastshard[bench]")
snowflake = pytest.importorskip("snowflake", reason="peer library: pip install fastshard[bench]")

LAYOUT = IdLayout(time_bits=28, host_bits=5, counter_bits=30)
CALLS = 1000
BATCH = 65536


def _loop(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        last = None
        for _ in repeat(None, CALLS):
            last = fn()
        return last

    return run


@pytest.fixture(scope="module")
def gen() -> Iterator[IdGenerator]:
    g = IdGenerator(1, coordinator=Coordinator(layout=LAYOUT), min_block=1 << 20)
    yield g
    g.close()


@pytest.mark.benchmark(group="id-single")
def test_loop_baseline(benchmark):
    benchmark(_loop((0).bit_length))  # a METH_NOARGS C method that does almost nothing


@pytest.mark.benchmark(group="id-single")
def test_fastshard_next_id(benchmark, gen):
    last = benchmark(_loop(gen.next_id))
    assert parse(last, LAYOUT)[1] == 1


@pytest.mark.benchmark(group="id-single")
def test_peer_uuid_utils_uuid7(benchmark):
    last = benchmark(_loop(uuid_utils.uuid7))
    assert last.version == 7


@pytest.mark.benchmark(group="id-single")
def test_peer_snowflake_id(benchmark):
    sf = snowflake.SnowflakeGenerator(1)
    # snowflake-id returns None once its 4096 IDs of a millisecond are used up (no wait)
    benchmark(_loop(sf.__next__))


@pytest.mark.benchmark(group="id-single")
def test_peer_stdlib_uuid4(benchmark):
    last = benchmark(_loop(uuid.uuid4))
    assert last.version == 4


@pytest.mark.benchmark(group="id-batch")
def test_fastshard_next_ids_65536(benchmark, gen):
    out = benchmark(gen.next_ids, BATCH)
    assert out.shape == (BATCH,) and out[-1] > out[0]


@pytest.mark.benchmark(group="id-batch")
def test_floor_numpy_arange_65536(benchmark):
    benchmark(np.arange, BATCH, dtype=np.uint64)


@pytest.fixture(scope="module")
def redis_gen() -> Iterator[IdGenerator]:
    from fastshard import backends

    if "redis" not in backends.available():
        pytest.skip("the fastshard-redis plugin is not installed")
    require_server("redis", "127.0.0.1", 6379)
    backend = backends.get("redis", url="redis://127.0.0.1:6379/0")
    ns = f"bench{uuid.uuid4().hex[:10]}"
    g = IdGenerator(2, coordinator=Coordinator(backend, namespace=ns, layout=LAYOUT), min_block=1 << 20)
    g.next_ids(BATCH)  # warm: blocks are flowing
    yield g
    g.close()
    for key in backend.kv_keys(ns):
        backend.kv_delete(key)
    backend.close()


@pytest.mark.benchmark(group="id-backend")
def test_backend_memory_next_id(benchmark, gen):
    benchmark(_loop(gen.next_id))


@pytest.mark.benchmark(group="id-backend")
def test_backend_redis_next_id(benchmark, redis_gen):
    last = benchmark(_loop(redis_gen.next_id))
    assert parse(last, LAYOUT)[1] == 2


@pytest.mark.benchmark(group="id-backend")
def test_backend_memory_next_ids_65536(benchmark, gen):
    benchmark(gen.next_ids, BATCH)


@pytest.mark.benchmark(group="id-backend")
def test_backend_redis_next_ids_65536(benchmark, redis_gen):
    benchmark(redis_gen.next_ids, BATCH)


# ---------------------------------------------------------------------- block sizing
# ``id-sizing``: what predictive block sizing costs per finished time shard, on the worker
# thread (never on next_id's path). fastshard.forecast's one-series model (update +
# predict + predict_interval) next to Leaf's segment rule, the stand-in peer (it forecasts
# nothing: double or halve the step by how long the last segment lasted).
SHARD_USAGE = [int(50_000 * (1.5 + np.sin(2 * np.pi * (h % 24) / 24))) for h in range(24 * 14)]


@pytest.mark.benchmark(group="id-sizing")
def test_sizing_usage_forecaster_observe_per_shard(benchmark):
    from fastshard.ids import UsageForecaster

    f = UsageForecaster(24)
    for used in SHARD_USAGE:  # warm: kernels loaded, seasons initialised
        f.observe(used)
    it = iter(SHARD_USAGE * 1000)
    benchmark(lambda: f.observe(next(it)))
    assert f.forecast()[1] > 0


@pytest.mark.benchmark(group="id-sizing")
def test_sizing_peer_leaf_segment_rule_per_shard(benchmark):
    state = {"step": 1024}

    def leaf(used: int = 60_000) -> int:
        step = state["step"]
        lasted = step / used  # in shards
        if lasted < 0.25:
            step *= 2
        elif lasted > 1.0:
            step = max(1024, step // 2)
        state["step"] = step
        return step

    benchmark(leaf)


_STARTUP = {
    "import": "import fastshard.ids",
    "first_observe": "from fastshard.ids import UsageForecaster; UsageForecaster(24).observe(1000)",
}


@pytest.mark.parametrize("what", sorted(_STARTUP))
@pytest.mark.benchmark(group="id-sizing-startup")
def test_sizing_startup_in_a_new_process(benchmark, what):
    """A fresh interpreter importing fastshard.ids, with and without the first observation
    (Numba kernels loaded from a warm cache): the difference is the one-off cost a
    generator's worker pays at its first finished shard."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", _STARTUP[what]]
    subprocess.run(cmd, check=True, capture_output=True)  # fill Numba's cache
    benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"check": True}, rounds=5)
