"""Upper bounds from the forecaster's own track record: a calibrated relative band.

Message volumes are counts whose errors grow with the level (a quiet night hour is off by a
few dozen messages, a busy hour by thousands), so an additive interval fitted on the whole
day is far too wide at night and about right only at the busiest hours. The shard manager
needs the bound where it matters, near capacity, i.e. at busy hours. :class:`RatioBand`
records, for every series and every step ahead ``j``, the ratio ``actual / forecast`` once
the actual value arrives, and serves the ``q`` quantile of those ratios over the last
``window`` steps, weighted by the actual volume (so busy hours dominate, as they should for
a capacity guard). ``upper_j = point_j x ratio_q(j)``: empirical (split-conformal style)
coverage, no distribution assumed.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from fastshard.errors import InvalidValueError, check_finite, check_int


class RatioBand:
    """Weighted empirical quantiles of ``actual / forecast`` per step ahead."""

    def __init__(self, horizon: int, *, window: int = 168, min_scored: int = 24) -> None:
        self.horizon = check_int("horizon", horizon, 1, 1000)
        self.window = check_int("window", window, 8, 1_000_000)
        self.min_scored = check_int("min_scored", min_scored, 1, self.window)
        # forecasts made at the last `horizon` steps, newest first: pending[k][:, j] was made
        # k steps ago for step (now - k + j + 1)
        self._pending: deque[np.ndarray] = deque(maxlen=self.horizon)
        self._ratios = [deque(maxlen=self.window) for _ in range(self.horizon)]
        self._weights = [deque(maxlen=self.window) for _ in range(self.horizon)]

    def scored(self, j: int = 0) -> int:
        """Steps scored for ``j + 1`` steps ahead."""
        return len(self._ratios[j])

    @property
    def ready(self) -> bool:
        return self.scored(self.horizon - 1) >= self.min_scored

    def observe(self, actual: np.ndarray) -> None:
        """Score the forecasts made for this step (call before forecasting the next ones)."""
        y = np.asarray(actual, dtype=np.float64)
        for k, fc in enumerate(self._pending):  # made k + 1 steps ago for this step: j = k
            f = fc[:, k]
            ok = np.isfinite(y) & np.isfinite(f) & (f > 0) & (y >= 0)
            ratio = np.full(y.shape, np.nan)
            ratio[ok] = y[ok] / f[ok]
            self._ratios[k].append(ratio)
            self._weights[k].append(np.where(ok, np.maximum(y, 1e-9), 0.0))

    def record(self, forecast: np.ndarray) -> None:
        """The point forecasts just made, shape ``(n_series, horizon)``."""
        f = np.asarray(forecast, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.horizon:
            raise InvalidValueError(f"forecast must have shape (n_series, {self.horizon}), got {f.shape}")
        self._pending.appendleft(f)

    def surge(self, steps: int = 2, above: float = 1.15, most: float = 2.0) -> np.ndarray:
        """Per series: the factor by which the last ``steps`` one-step forecasts all fell
        short of what arrived, when each fell short by more than ``above`` (a surge the
        seasonal models have not caught up with yet: an event day), else 1; at most
        ``most``."""
        recent = list(self._ratios[0])[-steps:]
        if len(recent) < steps:
            return np.ones(0)
        r = np.vstack(recent)
        low = np.nanmin(np.where(np.isfinite(r), r, 0.0), axis=0)
        return np.where(low > above, np.minimum(low, most), 1.0)

    def factor(self, q: float) -> np.ndarray:
        """``(horizon,)``: the ``q`` quantile of ``actual / forecast`` per step ahead, >= 1."""
        q = check_finite("q", q)
        if not 0.0 < q < 1.0:
            raise InvalidValueError(f"q must be in (0, 1), got {q}")
        out = np.ones(self.horizon)
        for j in range(self.horizon):
            if not self._ratios[j]:
                continue
            r = np.concatenate(self._ratios[j])
            w = np.concatenate(self._weights[j])
            keep = np.isfinite(r)
            r, w = r[keep], w[keep]
            if not r.size:
                continue
            order = np.argsort(r, kind="stable")
            cw = np.cumsum(w[order])
            k = int(np.searchsorted(cw, q * cw[-1], side="left"))
            out[j] = max(1.0, float(r[order][min(k, r.size - 1)]))
        return out
