"""Planning and routing costs of fastshard.sharding.

* ``planning`` – one ``ShardManager.adjust_sharding`` round on a map of 10,000 slices (the
  goal: <= 100 ms), with per-slice loads where ~5% of shards are over their high-water mark
  and many neighbours are cold, with and without a 65,536-key sample. There is no peer
  library that plans shard splits; the reference measured in the same run is the cost of
  just reading the map into arrays (``MapView.from_map``), which every planner must pay.
* ``routing`` – publishing 1000 messages through ``Router.publish`` (route + epoch stamp +
  fence bookkeeping) against calling the in-memory backend's ``publish`` directly with the
  queue already known: the ratio is the routing layer's overhead.

    pytest bench/test_bench_planning.py --benchmark-group-by=group
"""

from __future__ import annotations

import numpy as np
import pytest

from fastshard.backends.memory import MemoryBackend
from fastshard.sharding import LoadForecast, PlannerConfig, Router, ShardManager
from fastshard.sharding.planner import MapView
from fastshard.shardmap import ShardMap

N_SLICES = 10_000
CAPACITY = 100.0


@pytest.fixture(scope="module")
def big_map():
    return ShardMap(N_SLICES, [f"node-{i}" for i in range(50)], name="bench")


@pytest.fixture(scope="module")
def loads():
    rng = np.random.default_rng(0)
    upper = rng.lognormal(mean=np.log(45.0), sigma=0.45, size=N_SLICES)
    point = upper * 0.9
    return point, upper


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, size=65_536, dtype=np.uint64) * np.uint64(2)
    return hashes, rng.pareto(1.5, size=hashes.size) + 1.0


def _plan(m, point, upper, sample=None):
    mgr = ShardManager(m, CAPACITY, config=PlannerConfig())
    kh, kl = sample if sample is not None else (None, None)
    return mgr.adjust_sharding(LoadForecast(m.epoch, upper, point=point, measured=point,
                                            key_hashes=kh, key_load=kl))


@pytest.mark.benchmark(group="planning 10k slices")
def test_plan_10k_slices(benchmark, big_map, loads):
    plan = benchmark(_plan, big_map, *loads)
    assert len(plan) > 0 and plan.moved_fraction <= 0.09 + 1e-9


@pytest.mark.benchmark(group="planning 10k slices")
def test_plan_10k_slices_with_key_sample(benchmark, big_map, loads, sample):
    plan = benchmark(_plan, big_map, *loads, sample)
    assert len(plan) > 0


@pytest.mark.benchmark(group="planning 10k slices")
def test_reference_read_map_into_arrays(benchmark, big_map):
    view = benchmark(MapView.from_map, big_map)
    assert view.n_slices == N_SLICES


KEYS = [f"user-{i}" for i in range(1000)]


@pytest.fixture
def routed():
    m = ShardMap(16, ["a", "b"], name="rb")
    backend = MemoryBackend()
    return Router(m, backend), backend


@pytest.mark.benchmark(group="publish 1000 messages")
def test_router_publish(benchmark, routed):
    router, _ = routed

    def run():
        for k in KEYS:
            router.publish(k, b"x")

    benchmark(run)


@pytest.mark.benchmark(group="publish 1000 messages")
def test_reference_backend_publish_queue_known(benchmark, routed):
    router, backend = routed
    queues = [router.queue_of(router.route(k)) for k in KEYS]

    def run():
        for k, q in zip(KEYS, queues, strict=True):
            backend.publish(q, k, b"x")

    benchmark(run)
