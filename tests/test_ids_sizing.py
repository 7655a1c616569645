"""Predictive block sizing: the forecaster and the block-size policy."""

from __future__ import annotations

import math
import random

import pytest

from fastshard.errors import InvalidTypeError, InvalidValueError
from fastshard.forecast import Forecaster
from fastshard.ids import BlockSizer, UsageForecaster
from fastshard.ids.sizing import USAGE_HW_SETS, daily_season


def blocks_needed_and_leased(sizer: BlockSizer, usage: list[int]) -> tuple[list[int], list[int]]:
    """Coordinator round trips and IDs leased per shard: one block ahead of the shard,
    refills as needed."""
    trips, leased = [], []
    for used in usage:
        have = sizer.next_shard_block()
        n = 1
        while have < used:
            have += sizer.in_shard_block(have, have / used, sizer.max_block, 1.0, 1.0)
            n += 1
        trips.append(n)
        leased.append(have)
        sizer.observe_shard(len(trips), used)
    return trips, leased


def blocks_needed(sizer: BlockSizer, usage: list[int]) -> list[int]:
    return blocks_needed_and_leased(sizer, usage)[0]


def test_steady_rate_needs_one_round_trip_per_shard() -> None:
    sizer = BlockSizer(capacity=1 << 24, min_block=1024)
    trips = blocks_needed(sizer, [50_000] * 20)
    assert trips[5:] == [1] * 15


def test_ramp_is_followed_with_few_extra_round_trips() -> None:
    sizer = BlockSizer(capacity=1 << 24, min_block=1024)
    usage = [10_000 + 5_000 * i for i in range(40)]
    trips = blocks_needed(sizer, usage)
    assert sum(trips[5:]) <= 1.2 * len(trips[5:])  # the trend term anticipates the growth
    # leased-but-unused headroom stays bounded (IDs left in a block at shard end are skipped)
    point, upper = sizer.forecaster.forecast()
    assert usage[-1] < upper < 1.5 * (usage[-1] + 5_000)


def test_doubling_halving_segments_need_more_round_trips_on_a_ramp() -> None:
    """Leaf's segment rule (double when a segment lasts < 1/4 shard, halve when > 1 shard),
    simulated on the same ramp, pays more coordinator round trips than forecasting."""
    usage = [10_000 + 5_000 * i for i in range(40)]
    step, leaf_trips = 1024, 0
    for used in usage:
        left = used
        while left > 0:
            leaf_trips += 1
            lasted = step / used  # in shards
            left -= step
            if lasted < 0.25:
                step *= 2
            elif lasted > 1.0:
                step = max(1024, step // 2)
    ours = sum(blocks_needed(BlockSizer(capacity=1 << 24, min_block=1024), usage))
    assert ours < leaf_trips


def test_in_shard_refill_follows_a_burst() -> None:
    sizer = BlockSizer(capacity=1 << 24, min_block=1024)
    for i in range(10):
        sizer.observe_shard(i, 10_000)
    # 40,000 used in the first 20% of the shard: at this pace 160,000 more are coming
    size = sizer.in_shard_block(40_000, 0.2, 10_000, 0.05, 1.0)
    assert size >= 160_000
    assert size <= sizer.max_block


def test_idle_shards_count_as_zero_usage() -> None:
    sizer = BlockSizer(capacity=1 << 20, min_block=16)
    for i in range(5):
        sizer.observe_shard(i, 100_000)
    sizer.observe_shard(100, 0)  # a long idle gap
    assert sizer.forecaster.forecast()[0] < 50_000


def test_block_sizes_stay_within_bounds() -> None:
    sizer = BlockSizer(capacity=4096, min_block=100, max_block=10**9)
    assert sizer.max_block == 4096  # never more than one shard's range
    assert sizer.next_shard_block() == 100
    sizer.observe_shard(0, 10**7)
    assert sizer.next_shard_block() == 4096


def test_forecaster_validation() -> None:
    with pytest.raises(InvalidValueError, match="season_length"):
        UsageForecaster(season_length=1)
    with pytest.raises(InvalidValueError, match="quantile"):
        UsageForecaster(quantile=1.0)
    f = UsageForecaster()
    for bad in (math.nan, -1.0, math.inf):
        with pytest.raises(InvalidValueError, match="used"):
            f.observe(bad)
    assert f.observations == 0 and f.forecast() == (0.0, 0.0)  # nothing half-applied
    with pytest.raises(InvalidValueError, match="min_block"):
        BlockSizer(capacity=10, min_block=0)
    with pytest.raises(InvalidTypeError, match="forecaster"):
        BlockSizer(capacity=10, forecaster=object())  # type: ignore[arg-type]


def test_usage_forecast_is_fastshard_forecast_of_the_shard_counts() -> None:
    """The sizer's forecast is fastshard.forecast's, fed one observation per shard."""
    usage = [20_000 + 300 * (i % 24) + 50 * i for i in range(60)]
    f = UsageForecaster(season_length=24, quantile=0.95)
    twin = Forecaster(1, (24,), hw_sets=USAGE_HW_SETS)
    for used in usage:
        f.observe(used)
        twin.update([float(used)])
    point, upper = f.forecast()
    assert point == pytest.approx(float(twin.predict(1)[0, 0]))
    assert upper == pytest.approx(float(twin.predict_interval(1, 0.95)[1][0, 0]))
    assert point < upper


def test_daily_cycle_is_leased_in_one_round_trip_per_shard_with_less_headroom() -> None:
    """Hourly shards with a daily cycle: after two days, one round trip per shard, and
    the seasonal model leases less unused headroom than the same forecaster without it."""
    rng = random.Random(1)
    usage = [int(50_000 * (1.5 + math.sin(2 * math.pi * (h % 24) / 24)) * rng.uniform(0.9, 1.1))
             for h in range(24 * 14)]
    leased = {}
    for season in (24, None):
        sizer = BlockSizer(capacity=1 << 24, min_block=1024, forecaster=UsageForecaster(season))
        trips, have = blocks_needed_and_leased(sizer, usage)
        assert trips[48:] == [1] * len(trips[48:])
        leased[season] = sum(have[48:]) / sum(usage[48:])
    assert leased[24] < leased[None] < 1.6


def test_daily_season_matches_whole_days_only() -> None:
    assert daily_season(3600) == 24 and daily_season(600) == 144
    assert daily_season(60) is None  # 1,440 shards a day: too fine to model the cycle
    assert daily_season(7 * 3600) is None and daily_season(86_400) is None
