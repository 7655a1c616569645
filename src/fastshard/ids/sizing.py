"""Predictive block sizing: how many IDs to lease at once, from a forecast of usage.

Meituan Leaf's segment mode doubles its step when a segment lasted less than 15 minutes and
halves it when it lasted more than 30: it reacts one segment late and oscillates around a
ramp. Here a host forecasts its usage of the *next* time shard with :mod:`fastshard.forecast`
(one series, observed once per shard: Holt-Winters sets with trend, an online AR on the
differences and the naive model, weighted by their rolling errors) and leases a block
covering the forecast's upper bound before the shard starts, so a host at a steady or
trending rate needs one coordinator round trip per shard, and one extra only after a
surprise. Within a shard, a refill is sized from the forecast remainder or the pace seen so
far, whichever is larger.

The forecaster's kernels are Numba functions: the first observation of a process pays their
load from Numba's cache (~0.2 s, seconds on a cold cache). :class:`UsageForecaster` therefore
imports and builds the :class:`~fastshard.forecast.Forecaster` only on its first
observation, and :class:`~fastshard.ids.IdGenerator` feeds observations from its background
worker, never from a thread that is waiting for IDs. :meth:`UsageForecaster.forecast` is a
read of two floats computed at the last observation, so it is safe on any path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from fastshard.errors import InvalidTypeError, InvalidValueError, check_int

if TYPE_CHECKING:
    from fastshard.forecast import Forecaster

#: Holt-Winters sets ``(alpha, beta, phi, gamma)`` for per-shard ID counts: unlike traffic
#: series (fastshard.forecast's defaults), a host's usage ramps with deploys and load, so the
#: level and trend must follow within a few shards; the AR model on the differences and the
#: naive model run beside these and win where they forecast better.
USAGE_HW_SETS: tuple[tuple[float, float, float, float], ...] = (
    (0.5, 0.2, 1.0, 0.1),
    (0.2, 0.05, 0.9, 0.1),
)
SECONDS_PER_DAY = 86_400
#: The longest daily season worth modelling: at 10-minute shards a day is 144 steps; finer
#: shards change within minutes, where a daily cycle tells little about the next shard.
MAX_DAILY_SEASON = 144


class ShardUsageForecaster(Protocol):
    """What :class:`BlockSizer` needs from a forecaster (any object with these two methods)."""

    def observe(self, used: float) -> None: ...

    def forecast(self) -> tuple[float, float]: ...


def daily_season(shard_seconds: float) -> int | None:
    """Shards per day when a day is a whole number of at most ``MAX_DAILY_SEASON`` shards."""
    if shard_seconds <= 0 or SECONDS_PER_DAY % shard_seconds:
        return None
    per_day = int(SECONDS_PER_DAY // shard_seconds)
    return per_day if 2 <= per_day <= MAX_DAILY_SEASON else None


class UsageForecaster:
    """One host's IDs per time shard, forecast one shard ahead with :mod:`fastshard.forecast`.

    ``season_length``: shards per cycle (e.g. 24 for hourly shards and a daily cycle), or
    ``None``. ``quantile``: the upper bound is this quantile of the forecast distribution
    (default 0.99: running short costs a synchronous coordinator round trip, leasing too
    much only skips IDs). ``hw_sets``: Holt-Winters parameter sets run side by side.
    """

    def __init__(
        self,
        season_length: int | None = None,
        *,
        quantile: float = 0.99,
        hw_sets: Sequence[Sequence[float]] = USAGE_HW_SETS,
    ) -> None:
        if season_length is not None:
            check_int("season_length", season_length, 2, 100_000)
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)):
            raise InvalidTypeError(f"quantile must be a number, got {type(quantile).__name__}")
        if not 0.5 <= quantile < 1.0:
            raise InvalidValueError(f"quantile must be in [0.5, 1), got {quantile}")
        self.season_length = season_length
        self.quantile = float(quantile)
        self.hw_sets = tuple(tuple(float(x) for x in s) for s in hw_sets)
        self._model: Forecaster | None = None
        self._forecast = (0.0, 0.0)
        self.observations = 0

    def _build(self) -> Forecaster:
        from fastshard.forecast import Forecaster  # imports Numba: only when first needed

        seasons = () if self.season_length is None else (self.season_length,)
        return Forecaster(1, seasons, hw_sets=self.hw_sets)

    def observe(self, used: float) -> None:
        """Record one finished shard's usage and recompute the next shard's forecast.

        One observer at a time (the generator's worker); :meth:`forecast` may be called
        from any thread meanwhile: it reads a tuple replaced in one assignment.
        """
        if isinstance(used, bool) or not isinstance(used, (int, float)) or not math.isfinite(used) or used < 0:
            raise InvalidValueError(f"used must be a finite count >= 0, got {used!r}")
        if self._model is None:
            self._model = self._build()
        self._model.update([float(used)])
        point = max(0.0, float(self._model.predict(1)[0, 0]))
        _lower, upper = self._model.predict_interval(1, self.quantile)
        self._forecast = (point, max(point, float(upper[0, 0])))
        self.observations += 1

    def forecast(self) -> tuple[float, float]:
        """``(point, upper)`` forecast of the next shard's usage (both >= 0; 0 before any)."""
        return self._forecast


class BlockSizer:
    """Turns forecasts and the pace within a shard into block sizes in ``[min_block, max_block]``."""

    def __init__(self, capacity: int, min_block: int = 1024, max_block: int | None = None,
                 forecaster: ShardUsageForecaster | None = None) -> None:
        self.capacity = check_int("capacity", capacity, 1)
        self.min_block = min(check_int("min_block", min_block, 1), self.capacity)
        top = self.capacity if max_block is None else check_int("max_block", max_block, 1)
        self.max_block = max(self.min_block, min(top, self.capacity))
        if forecaster is not None and not (callable(getattr(forecaster, "observe", None))
                                           and callable(getattr(forecaster, "forecast", None))):
            raise InvalidTypeError("forecaster must have observe(used) and forecast() methods")
        self.forecaster: ShardUsageForecaster = forecaster or UsageForecaster()
        self._last_observed_shard: int | None = None

    def observe_shard(self, shard: int, used: int) -> None:
        """Record a finished shard's usage; shards skipped since the last one count as idle
        (at most 8 of them, after that the history says little anyway)."""
        if self._last_observed_shard is not None:
            gap = shard - self._last_observed_shard - 1
            for _ in range(min(max(gap, 0), 8)):
                self.forecaster.observe(0.0)
        self.forecaster.observe(float(used))
        self._last_observed_shard = shard

    def clamp(self, n: float) -> int:
        return int(min(self.max_block, max(self.min_block, math.ceil(n))))

    def next_shard_block(self) -> int:
        """Size of the block leased ahead of a new shard: the upper forecast, 10% headroom."""
        _point, upper = self.forecaster.forecast()
        return self.clamp(upper * 1.1)

    def in_shard_block(self, used_so_far: int, elapsed_fraction: float, last_block: int,
                       last_block_seconds: float, shard_seconds: float) -> int:
        """Size of a refill within a shard.

        The larger of the forecast's remainder and the remaining shard at the current pace,
        with 25% headroom; at least double the last block if that one lasted under a tenth of
        a shard (a burst the forecast has not seen yet).
        """
        elapsed = min(max(elapsed_fraction, 0.05), 1.0)
        _point, upper = self.forecaster.forecast()
        at_pace = used_so_far / elapsed * (1.0 - elapsed) if used_so_far else 0.0
        want = max(upper - used_so_far, at_pace) * 1.25
        if last_block and last_block_seconds < 0.1 * shard_seconds:
            want = max(want, 2 * last_block)
        return self.clamp(want)
