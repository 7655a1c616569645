"""Three sharding policies behind one interface, so users can compare them on one workload.

* :class:`StaticPolicy` – hash once, never change (the baseline);
* :class:`ReactivePolicy` – Slicer/Dicer style: act on the load *measured* in the last
  interval; split a shard above capacity's high-water mark or above 2x the mean shard load,
  merge cold neighbours, moves capped per round;
* :class:`PredictivePolicy` – the same actions driven by forecasts ``horizon`` steps ahead,
  protecting the forecast's upper bound (quantile ``q``), so shards split *before* the load
  arrives.

Every policy turns one interval's observation into a :class:`~fastshard.sharding.plan.Plan`
through the same :class:`~fastshard.sharding.manager.ShardManager`; only the load estimate it
hands the manager, and the manager's thresholds (``planner_config``), differ.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from fastshard.errors import InvalidTypeError, InvalidValueError, check_finite, check_int
from fastshard.sharding.calibration import RatioBand
from fastshard.sharding.manager import LoadForecast, ShardManager
from fastshard.sharding.plan import Plan
from fastshard.sharding.planner import PlannerConfig


class Policy(abc.ABC):
    """Observe per-series totals each step; decide a plan from per-slice measured load."""

    name: ClassVar[str]
    planner_config: PlannerConfig

    def observe(self, series_values: np.ndarray) -> None:  # noqa: B027 - optional hook
        """One step of per-series totals (e.g. per service volume); forecasting policies learn."""

    @abc.abstractmethod
    def estimate(
        self,
        epoch: int,
        measured: np.ndarray,
        shares: np.ndarray | None,
        hot_hashes: Sequence[int],
        hot_measured: np.ndarray | None,
    ) -> LoadForecast | None:
        """The load estimate to plan against, or None for no change."""

    def decide(
        self,
        manager: ShardManager,
        measured: np.ndarray,
        *,
        shares: np.ndarray | None = None,
        hot_hashes: Sequence[int] = (),
        hot_measured: np.ndarray | None = None,
        key_hashes: np.ndarray | None = None,
        key_load: np.ndarray | None = None,
        message_type: str | None = None,
    ) -> Plan:
        """Plan one round.

        ``measured``: load per slice of the current map in the last interval. ``shares``:
        shape ``(n_series, n_slices)``, the share of each series' volume that falls in each
        slice (used to spread series forecasts over slices). ``hot_hashes`` /
        ``hot_measured``: the heaviest single keys and their measured load. ``key_hashes`` /
        ``key_load``: an optional key sample that lets cuts fall between real keys.
        """
        m = manager.shard_map(message_type)
        epoch = int(m.epoch)
        measured = np.asarray(measured, dtype=np.float64)
        est = self.estimate(epoch, measured, shares, hot_hashes, hot_measured)
        if est is None:
            return Plan(message_type, epoch)
        if key_hashes is not None:
            est = replace(est, key_hashes=key_hashes, key_load=key_load)
        return manager.adjust_sharding(est, message_type)


class StaticPolicy(Policy):
    """Hash once: the map never changes (what plain consistent hashing gives)."""

    name = "static"

    def __init__(self) -> None:
        self.planner_config = PlannerConfig()

    def estimate(self, epoch, measured, shares, hot_hashes, hot_measured):  # noqa: ANN001, ANN201
        return None


class ReactivePolicy(Policy):
    """Act on what was measured in the last interval (Slicer / Dicer / Cruise Control style)."""

    name = "reactive"

    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.planner_config = config or PlannerConfig(split_above_mean=2.0)

    def estimate(self, epoch, measured, shares, hot_hashes, hot_measured):  # noqa: ANN001, ANN201
        return LoadForecast(
            epoch=epoch, upper=measured, point=measured, measured=measured,
            hot_hashes=list(hot_hashes), hot_upper=hot_measured,
        )


class PredictivePolicy(Policy):
    """Plan against forecasts over the next ``horizon`` steps, point and upper bound.

    The manager protects the ``q`` quantile (``q=0.5``: the point forecast) of the largest
    load predicted over the horizon. ``interval="calibrated"`` (default) takes that quantile
    from the forecaster's own record (:class:`~fastshard.sharding.calibration.RatioBand`:
    the volume-weighted ``q`` quantile of actual / forecast over the last ``window`` steps,
    per step ahead), falling back to the forecaster's ``predict_interval`` until enough steps
    are scored; ``interval="forecaster"`` always uses ``predict_interval``.

    ``forecaster`` follows the :class:`fastshard.forecast.Forecaster` contract (``update``,
    ``predict``, ``predict_interval``) over ``n_series`` series (e.g. one per service). Each
    step's forecasts are spread over slices with ``shares``; a slice's predicted load is the
    largest over the horizon, and never below what was just measured times ``floor`` (a
    forecast that has not caught up with a jump must not undo what the measurement shows).
    """

    name = "predictive"

    def __init__(
        self,
        forecaster: Any,
        *,
        horizon: int = 2,
        q: float = 0.9,
        floor: float = 1.0,
        warmup: int = 0,
        interval: str = "calibrated",
        window: int = 168,
        config: PlannerConfig | None = None,
    ) -> None:
        for attr in ("update", "predict", "predict_interval"):
            if not callable(getattr(forecaster, attr, None)):
                raise InvalidTypeError(f"forecaster must have a callable {attr}() (the Forecaster contract)")
        self.forecaster = forecaster
        self.horizon = check_int("horizon", horizon, 1, 1000)
        q = check_finite("q", q)
        if not 0.5 <= q < 1.0:
            raise InvalidValueError(f"q must be in [0.5, 1), got {q}")
        self.q = q
        self.floor = check_finite("floor", floor)
        if not 0.0 <= self.floor <= 1.0:
            raise InvalidValueError(f"floor must be in [0, 1], got {floor}")
        self.warmup = check_int("warmup", warmup, 0, 1_000_000)
        if interval not in ("calibrated", "forecaster"):
            raise InvalidValueError(f"interval must be 'calibrated' or 'forecaster', got {interval!r}")
        self.interval = interval
        self.band = RatioBand(self.horizon, window=window) if interval == "calibrated" else None
        self.steps_seen = 0
        # act ahead of the measured load only on a forecast of a real overload: the largest
        # point forecast over the horizon above 110% of capacity (the calibrated upper
        # bound sits ~15-20% above the point forecast at busy hours, so acting whenever it
        # crosses capacity would mostly move load for overloads that do not come)
        self.planner_config = config or PlannerConfig(act_ahead_above=1.1, guard_point=1.1)
        self.last_series_upper: np.ndarray | None = None

    def observe(self, series_values: np.ndarray) -> None:
        values = np.asarray(series_values, dtype=np.float64)
        if self.band is not None:
            self.band.observe(values)
        self.forecaster.update(values)
        self.steps_seen += 1
        if self.band is not None:
            self.band.record(np.asarray(self.forecaster.predict(self.horizon), dtype=np.float64))

    def series_upper(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(point, upper, next) per series: the largest point forecast and upper bound over
        the horizon, and the point forecast of the next interval."""
        steps = np.nan_to_num(np.asarray(self.forecaster.predict(self.horizon), dtype=np.float64),
                              nan=0.0).clip(min=0.0)
        if self.band is not None:
            surge = self.band.surge()
            if surge.size == steps.shape[0]:
                # the last forecasts all fell well short: the level has jumped (an event)
                # and the seasonal models lag it; carry the shortfall forward
                steps = steps * surge[:, None]
        if self.band is not None and self.band.ready:
            upper = (steps * self.band.factor(self.q)).max(axis=1)
        else:
            _, up = self.forecaster.predict_interval(self.horizon, self.q)
            upper = np.nan_to_num(np.asarray(up, dtype=np.float64), nan=0.0).clip(min=0.0).max(axis=1)
        point = steps.max(axis=1)
        return point, np.maximum(point, upper), steps[:, 0]

    def estimate(self, epoch, measured, shares, hot_hashes, hot_measured):  # noqa: ANN001, ANN201
        if shares is None or self.steps_seen < max(self.warmup, 1):
            # nothing to forecast with yet: behave like the reactive policy
            return LoadForecast(epoch=epoch, upper=measured, point=measured, measured=measured,
                                hot_hashes=list(hot_hashes), hot_upper=hot_measured)
        shares = np.asarray(shares, dtype=np.float64)
        if shares.ndim != 2 or shares.shape[1] != measured.shape[0]:
            raise InvalidValueError(
                f"shares must have shape (n_series, {measured.shape[0]}), got {shares.shape}"
            )
        point_s, upper_s, next_s = self.series_upper()
        if point_s.shape[0] != shares.shape[0]:
            raise InvalidValueError(
                f"shares has {shares.shape[0]} series but the forecaster has {point_s.shape[0]}"
            )
        self.last_series_upper = upper_s
        floor = self.floor * measured
        point = np.maximum(point_s @ shares, floor)
        upper = np.maximum(upper_s @ shares, point)
        hot_upper = None
        if len(hot_hashes):
            # a hot key grows with the traffic around it: scale by the growth expected over the
            # next interval (the peak over the whole horizon would isolate keys on a morning
            # ramp that never get hot enough, leaving single-key shards far below the others)
            nxt = next_s @ shares
            growth = float(nxt.sum() / max(measured.sum(), 1e-12)) if measured.sum() > 0 else 1.0
            hot_upper = np.asarray(hot_measured, dtype=np.float64) * max(growth, self.floor)
        return LoadForecast(epoch=epoch, upper=upper, point=point, measured=measured,
                            expected=np.maximum(next_s @ shares, 0.0),
                            hot_hashes=list(hot_hashes), hot_upper=hot_upper)


POLICIES = ("static", "reactive", "predictive")


def make_policy(name: str, forecaster: Any = None, **options: Any) -> Policy:
    """``"static"``, ``"reactive"`` or ``"predictive"`` (which needs ``forecaster``)."""
    if name == "static":
        return StaticPolicy()
    if name == "reactive":
        return ReactivePolicy(**options)
    if name == "predictive":
        if forecaster is None:
            raise InvalidValueError("the predictive policy needs a forecaster")
        return PredictivePolicy(forecaster, **options)
    raise InvalidValueError(f"policy must be one of {list(POLICIES)}, got {name!r}")
