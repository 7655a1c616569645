"""IdGenerator on the embedded coordinator: validation, blocks, overflow, clock, persistence."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from fastshard.backends.memory import MemoryBackend
from fastshard.errors import (
    IdExhaustedError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
)
from fastshard.ids import Coordinator, IdGenerator, IdLayout, parse

SMALL = IdLayout(time_bits=30, host_bits=4, counter_bits=8, shard_seconds=1.0)


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def wait_for_roll(gen: IdGenerator, timeout: float = 3.0) -> None:
    """Wait until the background worker has retired the block of the previous shard."""
    deadline = time.monotonic() + timeout
    while gen.remaining() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_ids_carry_host_and_time_shard_and_increase() -> None:
    clock = FakeClock()
    with IdGenerator(9, clock=clock) as gen:
        ids = [gen.next_id() for _ in range(100)] + gen.next_ids(1000).tolist()
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        shard, host, _ = parse(ids[0])
        assert host == 9
        assert shard == gen.layout.shard_of(clock.t)


def test_next_ids_returns_uint64_array() -> None:
    with IdGenerator(1) as gen:
        arr = gen.next_ids(5000)
        assert arr.dtype == np.uint64 and arr.shape == (5000,)
        assert (np.diff(arr.astype(np.int64)) > 0).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        ({"host_id": 1024}, InvalidValueError, "host_id"),
        ({"host_id": -1}, InvalidValueError, "host_id"),
        ({"host_id": "3"}, InvalidTypeError, "host_id"),
        ({"host_id": 1, "lease_ttl": 0}, InvalidValueError, "lease_ttl"),
        ({"host_id": 1, "max_wait": -1}, InvalidValueError, "max_wait"),
        ({"host_id": 1, "max_lead_shards": -1}, InvalidValueError, "max_lead_shards"),
        ({"host_id": 1, "prefetch_at": 2}, InvalidValueError, "prefetch_at"),
        ({"host_id": 1, "min_block": 0}, InvalidValueError, "min_block"),
        ({"host_id": 1, "clock": 5}, InvalidTypeError, "clock"),
        ({"host_id": 1, "clock": lambda: 0.0}, InvalidValueError, "unix_time"),
        ({"host_id": 1, "layout": "x"}, InvalidTypeError, "layout"),
        ({"host_id": 1, "coordinator": object()}, InvalidTypeError, "coordinator"),
    ],
)
def test_invalid_arguments_raise_before_anything_is_leased(kwargs: dict, exc: type, field: str) -> None:
    backend = MemoryBackend()
    coord = Coordinator(backend)
    if "coordinator" not in kwargs and "layout" not in kwargs:
        kwargs["coordinator"] = coord
    with pytest.raises(exc, match=field):
        IdGenerator(**kwargs)
    assert backend.lease_info(coord.lease_name(1)) is None  # nothing half-applied


def test_layout_must_match_coordinator() -> None:
    with pytest.raises(InvalidValueError, match="layout"):
        IdGenerator(1, layout=SMALL, coordinator=Coordinator())


def test_host_id_is_a_lease_a_second_owner_is_refused() -> None:
    coord = Coordinator()
    with IdGenerator(4, coordinator=coord, owner="a") as a:
        a.next_id()
        with pytest.raises(LeaseLostError, match="host_id 4 is leased by 'a'"):
            IdGenerator(4, coordinator=coord, owner="b")
    # released on close: b can take it now, with a larger fencing token
    with IdGenerator(4, coordinator=coord, owner="b") as b:
        assert b.token > a.token


def test_host_id_none_leases_free_host_ids() -> None:
    coord = Coordinator(layout=SMALL)
    gens = [IdGenerator(coordinator=coord, clock=FakeClock()) for _ in range(3)]
    assert sorted(g.host_id for g in gens) == [0, 1, 2]
    for g in gens:
        g.close()


def test_overflow_pauses_then_raises_and_never_wraps() -> None:
    clock = FakeClock()
    gen = IdGenerator(1, layout=SMALL, coordinator=Coordinator(layout=SMALL), clock=clock,
                      min_block=16, max_lead_shards=1, max_wait=0.2, background=False)
    cap = SMALL.counter_capacity
    ids = [gen.next_id() for _ in range(2 * cap)]  # this shard and one shard ahead
    t0 = time.monotonic()
    with pytest.raises(IdExhaustedError, match="counter range"):
        gen.next_id()
    assert 0.15 <= time.monotonic() - t0 < 2.0  # a bounded pause, not an immediate failure
    with pytest.raises(IdExhaustedError):
        gen.next_ids(3)
    clock.t += 1.0  # the clock catches up with the shard we ran ahead into
    ids.append(gen.next_id())
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    shards = [parse(i, SMALL)[0] for i in ids]
    base = SMALL.shard_of(1_800_000_000.0)
    assert shards[:cap] == [base] * cap and shards[cap:2 * cap] == [base + 1] * cap
    assert shards[-1] == base + 2
    gen.close()


def test_clock_stepped_backwards_never_goes_below_issued_ids() -> None:
    clock = FakeClock()
    gen = IdGenerator(2, layout=SMALL, coordinator=Coordinator(layout=SMALL), clock=clock,
                      min_block=8, max_wait=0.1, background=False)
    ids = [gen.next_id() for _ in range(50)]
    clock.t += 5.0
    ids += [gen.next_id() for _ in range(50)]
    top_shard = parse(ids[-1], SMALL)[0]
    clock.t -= 3600.0  # NTP step back by an hour
    ids += [gen.next_id() for _ in range(100)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(parse(i, SMALL)[0] >= top_shard for i in ids[100:])
    assert gen.time_shard == top_shard
    gen.close()


def test_restart_from_state_file_never_reissues(tmp_path) -> None:
    path = tmp_path / "ids.json"
    clock = FakeClock()
    g1 = IdGenerator(3, layout=SMALL, coordinator=Coordinator(layout=SMALL), clock=clock,
                     state_path=path, min_block=32, background=False)
    first = [g1.next_id() for _ in range(40)]
    g1.close()
    marks = json.loads(path.read_text())["marks"]
    assert int(marks["3"]) >= SMALL.position_of(first[-1]) + 1
    clock.t -= 10.0  # and the clock went back while we were down
    # a fresh coordinator (the embedded one forgot everything), same state file
    g2 = IdGenerator(3, layout=SMALL, coordinator=Coordinator(layout=SMALL), clock=clock,
                     state_path=path, min_block=32, background=False)
    second = [g2.next_id() for _ in range(40)]
    assert min(second) > max(first)
    g2.close()


def test_state_file_for_another_layout_is_refused(tmp_path) -> None:
    path = tmp_path / "ids.json"
    IdGenerator(3, state_path=path).close()
    with pytest.raises(InvalidValueError, match="layout"):
        IdGenerator(3, layout=SMALL, coordinator=Coordinator(layout=SMALL), state_path=path)
    path.write_text("{not json")
    with pytest.raises(InvalidValueError, match="not a fastshard ID state"):
        IdGenerator(3, state_path=path)


def test_closed_generator_refuses() -> None:
    gen = IdGenerator(1)
    gen.next_id()
    gen.close()
    with pytest.raises(IdExhaustedError, match="closed"):
        gen.next_id()


def wait_for_observations(gen: IdGenerator, n: int, timeout: float = 30.0) -> None:
    """Wait until the worker has fed ``n`` finished shards to the usage forecaster (the first
    one loads the Numba kernels, which takes seconds on a cold cache)."""
    deadline = time.monotonic() + timeout
    while gen.sizer.forecaster.observations < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert gen.sizer.forecaster.observations >= n


class RecordingForecaster:
    """A usage forecaster that records which thread fed it."""

    def __init__(self) -> None:
        self.observations = 0
        self.threads: set[str] = set()

    def observe(self, used: float) -> None:
        self.threads.add(threading.current_thread().name)
        self.observations += 1

    def forecast(self) -> tuple[float, float]:
        return 3000.0, 4000.0


def test_usage_is_fed_to_the_forecaster_by_the_worker_not_the_caller() -> None:
    """The forecaster (Numba, slow on first use) never runs on a thread waiting for IDs."""
    clock = FakeClock()
    recorder = RecordingForecaster()
    gen = IdGenerator(7, clock=clock, min_block=64, usage_forecaster=recorder)
    for _ in range(3):
        gen.next_ids(2000)
        clock.t += 1.0
        wait_for_roll(gen)
    gen.next_id()
    wait_for_observations(gen, 3)
    assert threading.current_thread().name not in recorder.threads
    assert gen.sizer.next_shard_block() == 4400  # the plugged-in forecast sizes blocks
    gen.close()


def test_without_a_worker_usage_is_observed_inline() -> None:
    clock = FakeClock()
    recorder = RecordingForecaster()
    gen = IdGenerator(8, clock=clock, min_block=64, usage_forecaster=recorder, background=False)
    gen.next_ids(100)
    clock.t += 1.0
    gen.next_ids(gen.remaining() + 1)  # exhausts the block: the refill installs the new shard's
    assert recorder.observations == 1 and recorder.threads == {threading.current_thread().name}
    gen.close()


def test_background_prefetch_keeps_a_spare_and_rolls_shards() -> None:
    clock = FakeClock()
    gen = IdGenerator(5, clock=clock, min_block=1000)
    gen.next_ids(900)  # 90% of the first block: the worker leases a spare
    deadline = time.monotonic() + 3
    while gen.stats()["spares"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gen.stats()["spares"] >= 1
    before = gen.next_id()
    clock.t += 1.0  # next shard: the worker invalidates the block of the old one
    wait_for_roll(gen)
    after = gen.next_id()
    assert parse(after)[0] == parse(before)[0] + 1
    gen.close()


def test_forecast_sizes_the_next_shards_block_to_its_usage() -> None:
    clock = FakeClock()
    gen = IdGenerator(6, clock=clock, min_block=64)
    for _ in range(6):  # steady 5000 IDs per shard
        gen.next_ids(5000)
        clock.t += 1.0
        wait_for_roll(gen)
    gen.next_id()
    wait_for_observations(gen, 5)  # the worker feeds finished shards to the forecaster
    point, upper = gen.sizer.forecaster.forecast()
    assert 4000 < point < 6000
    assert 5000 <= gen.sizer.next_shard_block() <= 12_000
    gen.close()
