"""The three policies behind one interface; the predictive one against the Forecaster
contract, tested with a tiny in-test forecaster."""

from __future__ import annotations

import numpy as np
import pytest

from fastshard.errors import InvalidTypeError, InvalidValueError
from fastshard.sharding import (
    PredictivePolicy,
    ReactivePolicy,
    ShardManager,
    StaticPolicy,
    make_policy,
)
from fastshard.shardmap import ShardMap


class LinearForecaster:
    """Forecaster contract in a few lines: the next values continue the last trend."""

    def __init__(self, n_series: int, spread: float = 0.1) -> None:
        self.n_series = n_series
        self.spread = spread
        self.history: list[np.ndarray] = []

    def update(self, values: np.ndarray) -> None:
        self.history.append(np.asarray(values, dtype=np.float64))

    def predict(self, h: int) -> np.ndarray:
        last = self.history[-1]
        slope = last - self.history[-2] if len(self.history) > 1 else np.zeros_like(last)
        return np.stack([last + slope * (k + 1) for k in range(h)], axis=1)

    def predict_interval(self, h: int, q: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        p = self.predict(h)
        return p * (1 - self.spread), p * (1 + self.spread)


def _setup(policy):
    m = ShardMap(2)
    return m, ShardManager(m, capacity=100.0, config=policy.planner_config)


SHARES = np.array([[0.5, 0.5]])  # one series, spread evenly over the two slices


def test_static_never_changes_the_map():
    policy = StaticPolicy()
    m, mgr = _setup(policy)
    plan = policy.decide(mgr, np.array([500.0, 10.0]))
    assert not plan and plan.base_epoch == 1
    mgr.apply(plan)
    assert m.epoch == 1


def test_reactive_splits_on_measured_overload_and_on_twice_the_mean():
    policy = ReactivePolicy()
    m, mgr = _setup(policy)
    assert policy.decide(mgr, np.array([95.0, 80.0])).count("split") == 1  # over high water
    m2 = ShardMap(4)
    mgr2 = ShardManager(m2, capacity=100.0, config=policy.planner_config)
    plan = policy.decide(mgr2, np.array([50.0, 10.0, 10.0, 10.0]))  # 50 > 2 x mean 20
    assert any(a.from_shard == "s0" for a in plan.actions)
    assert not any(getattr(a, "proactive", False) for a in plan.actions)


def test_predictive_acts_before_the_load_arrives():
    f = LinearForecaster(1)
    policy = PredictivePolicy(f, horizon=2, interval="forecaster")
    m, mgr = _setup(policy)
    for total in (40.0, 90.0, 140.0):  # rising 50 per step: 240 in two steps
        policy.observe(np.array([total]))
    measured = np.array([70.0, 70.0])  # 70% of capacity: reactive would do nothing
    assert not ReactivePolicy().decide(ShardManager(ShardMap(2), 100.0), measured)
    plan = policy.decide(mgr, measured, shares=SHARES)
    assert plan.count("split") >= 1
    assert all(a.proactive for a in plan.actions if hasattr(a, "from_shard"))


def test_predictive_waits_while_the_forecast_stays_under_capacity():
    """Acting ahead is for a forecast overload: a busy forecast under capacity (110% by
    default) is left to the measured load, so few proactive moves prove unnecessary."""
    f = LinearForecaster(1)
    policy = PredictivePolicy(f, horizon=2, interval="forecaster")
    m, mgr = _setup(policy)
    for total in (120.0, 140.0, 160.0):  # 200 in two steps: 100 per shard, at capacity
        policy.observe(np.array([total]))
    plan = policy.decide(mgr, np.array([80.0, 80.0]), shares=SHARES)
    assert not any(getattr(a, "proactive", False) for a in plan.actions)


def test_predictive_is_quiet_when_the_forecast_is_flat():
    f = LinearForecaster(1, spread=0.05)
    policy = PredictivePolicy(f, horizon=2, interval="forecaster")
    m, mgr = _setup(policy)
    for _ in range(3):
        policy.observe(np.array([120.0]))
    assert not policy.decide(mgr, np.array([60.0, 60.0]), shares=SHARES)


def test_predictive_never_plans_below_what_was_measured():
    f = LinearForecaster(1)
    policy = PredictivePolicy(f, horizon=1)
    m, mgr = _setup(policy)
    for total in (200.0, 100.0):  # falling: the forecast says 0
        policy.observe(np.array([total]))
    plan = policy.decide(mgr, np.array([95.0, 5.0]), shares=SHARES)
    assert any(a.from_shard == "s0" for a in plan.actions)


def test_policy_validation():
    with pytest.raises(InvalidTypeError, match=r"callable update\(\)"):
        PredictivePolicy(object())
    with pytest.raises(InvalidValueError, match=r"q must be in \[0.5, 1\)"):
        PredictivePolicy(LinearForecaster(1), q=1.0)
    with pytest.raises(InvalidValueError, match="policy must be one of"):
        make_policy("clairvoyant")
    with pytest.raises(InvalidValueError, match="needs a forecaster"):
        make_policy("predictive")
    with pytest.raises(InvalidValueError, match="interval must be 'calibrated' or 'forecaster'"):
        PredictivePolicy(LinearForecaster(1), interval="guess")
    f = LinearForecaster(1)
    policy = PredictivePolicy(f)
    m, mgr = _setup(policy)
    policy.observe(np.array([1.0]))
    with pytest.raises(InvalidValueError, match=r"shares must have shape \(n_series, 2\)"):
        policy.decide(mgr, np.array([1.0, 1.0]), shares=np.ones((1, 3)))
    with pytest.raises(InvalidValueError, match="shares has 2 series but the forecaster has 1"):
        policy.decide(mgr, np.array([1.0, 1.0]), shares=np.ones((2, 2)))


class ConstantForecaster(LinearForecaster):
    """Always forecasts ``level``, whatever arrives; its own interval is useless."""

    def __init__(self, level: float) -> None:
        super().__init__(1, spread=5.0)
        self.level = level

    def predict(self, h: int) -> np.ndarray:
        return np.full((1, h), self.level)


def test_calibrated_upper_bound_covers_what_arrives():
    """With interval="calibrated" the upper bound is the forecast times the q quantile of
    actual / forecast seen so far: on a series whose forecast errs by up to +-12%, about q
    of the next values fall under it (the forecaster's own 500%-wide interval is not used)."""
    rng = np.random.default_rng(3)
    policy = PredictivePolicy(ConstantForecaster(1000.0), horizon=1, q=0.9)
    inside = []
    for step in range(400):
        value = 1000.0 * rng.uniform(0.88, 1.12)
        if step > 200:
            _, upper, _ = policy.series_upper()
            assert upper[0] <= 1120.0
            inside.append(value <= upper[0])
        policy.observe(np.array([value]))
    assert 0.85 <= np.mean(inside) <= 0.95


def test_a_surge_the_forecast_missed_is_carried_forward():
    policy = PredictivePolicy(ConstantForecaster(100.0), horizon=1, q=0.9)
    for _ in range(30):
        policy.observe(np.array([100.0]))
    point, _, _ = policy.series_upper()
    assert point[0] == pytest.approx(100.0)
    policy.observe(np.array([140.0]))  # one step above the forecast: not yet a surge
    assert policy.series_upper()[0][0] == pytest.approx(100.0)
    policy.observe(np.array([150.0]))  # two in a row, both > 15% short: an event
    point, _, _ = policy.series_upper()
    assert point[0] == pytest.approx(100.0 * 1.4)  # the smaller of the two shortfalls
    for _ in range(2):
        policy.observe(np.array([100.0]))  # back to normal
    assert policy.series_upper()[0][0] == pytest.approx(100.0)
