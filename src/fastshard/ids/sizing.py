"""Predictive block sizing: how many IDs to lease at once, from a forecast of usage.

Meituan Leaf's segment mode doubles its step when a segment lasted less than 15 minutes and
halves it when it lasted more than 30: it reacts one segment late and oscillates around a
ramp. Here a host forecasts its usage of the *next* time shard (Holt's linear trend on the
per-shard counts, plus a band of 3 smoothed absolute errors as an upper bound) and leases a
block covering that upper bound before the shard starts, so a host at a steady or trending
rate needs one coordinator round trip per shard, and one extra only after a surprise. Within
a shard, a refill is sized from the forecast remainder or the pace seen so far, whichever is
larger.

The forecaster is a single series updated once per shard, so it is plain Python: it costs
nanoseconds per shard and needs no JIT warm-up in short-lived processes.
"""

from __future__ import annotations

import math

from fastshard.errors import InvalidValueError, check_int


class UsageForecaster:
    """Holt's linear exponential smoothing with an absolute-error band (one series)."""

    def __init__(self, alpha: float = 0.5, beta: float = 0.2, band: float = 3.0) -> None:
        for name, v in (("alpha", alpha), ("beta", beta)):
            if not 0.0 < v <= 1.0:
                raise InvalidValueError(f"{name} must be in (0, 1], got {v}")
        if not 0.0 <= band <= 100.0:
            raise InvalidValueError(f"band must be in [0, 100], got {band}")
        self.alpha, self.beta, self.band = alpha, beta, band
        self.level = 0.0
        self.trend = 0.0
        self.abs_error = 0.0
        self.observations = 0

    def observe(self, used: float) -> None:
        if not math.isfinite(used) or used < 0:
            raise InvalidValueError(f"used must be a finite count >= 0, got {used}")
        if self.observations == 0:
            self.level = used
        else:
            predicted = self.level + self.trend
            err = used - predicted
            self.abs_error += 0.3 * (abs(err) - self.abs_error)
            prev = self.level
            self.level = self.alpha * used + (1 - self.alpha) * predicted
            self.trend = self.beta * (self.level - prev) + (1 - self.beta) * self.trend
        self.observations += 1

    def forecast(self) -> tuple[float, float]:
        """``(point, upper)`` forecast of the next shard's usage (both >= 0)."""
        point = max(0.0, self.level + self.trend)
        return point, point + self.band * self.abs_error


class BlockSizer:
    """Turns forecasts and the pace within a shard into block sizes in ``[min_block, max_block]``."""

    def __init__(self, capacity: int, min_block: int = 1024, max_block: int | None = None,
                 forecaster: UsageForecaster | None = None) -> None:
        self.capacity = check_int("capacity", capacity, 1)
        self.min_block = min(check_int("min_block", min_block, 1), self.capacity)
        top = self.capacity if max_block is None else check_int("max_block", max_block, 1)
        self.max_block = max(self.min_block, min(top, self.capacity))
        self.forecaster = forecaster or UsageForecaster()
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
