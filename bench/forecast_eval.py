"""Evaluation of fastshard's forecasters and the peers, on the same forecast origins.

Two protocols (``Protocol``); both score by MASE, the mean absolute error over the origins and
horizons of a series divided by the in-sample MAE of the seasonal naive forecast with the
*daily* period (m = 24 for hourly data), averaged over series:

* ``ROLLING_ORIGIN`` (this project's): origins every ``h`` steps from ``first_origin`` to the
  end (for the 3-week pedestrian windows, hours 336, 348, ..., 492: 14 origins covering the
  third week), each method having seen ``y[:t]`` only; the scale is taken on the data before
  the first origin. Fourteen origins per series, at midnight and noon of each day of the
  week: the harder and more informative of the two (with one origin per series a 200-window
  mean hangs on a few windows).
* ``ISSUE_PROTOCOL`` (issue #3's measurement, reconstructed): one origin per series, the last
  ``h`` points held out (statsforecast ``cross_validation``'s default ``n_windows=1``: one fit
  per series, which is what the issue's "277 ms CPU per series" for AutoETS matches on ~500
  points), the scale on the training part (``utilsforecast.losses.mase`` with
  ``seasonality=24``). The issue did not say how its 200 windows were cut; see
  ``forecast_data.pedestrian_issue_windows`` and docs/forecast.md for the conventions that
  reproduce its peer numbers and how closely.

Methods:

* fastshard ``Forecaster``: one forecaster for all series (one column each), updated one
  step at a time; ``predict(h)`` at each origin. Online only, no refit.
* seasonal naive with the weekly period: ``y[t + j - W * ceil((j + 1) / W)]``.
* river ``HoltWinters``: one model per series, ``learn_one`` per step, ``forecast`` per origin.
* statsforecast ``AutoETS`` / ``MSTL`` through ``StatsForecast.cross_validation`` with the
  same ``h``/``step_size`` so the cutoffs are the same origins; ``n_jobs=1``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    method: str
    mase: float
    n_series: int
    n_origins: int
    seconds: float  # CPU (process) seconds spent by the method, all series
    per: str = ""  # what one "unit" of cost is, e.g. "per update", "per fit"
    unit_cost_us: float = float("nan")
    notes: str = ""
    per_series: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)


def mase_scale(Y: np.ndarray, first_origin: int, period: int) -> np.ndarray:
    """In-sample MAE of the seasonal naive forecast with ``period``, per series."""
    Y = np.atleast_2d(Y)
    return np.abs(Y[:, period:first_origin] - Y[:, : first_origin - period]).mean(axis=1)


@dataclass(frozen=True)
class Protocol:
    """Where the forecast origins are and how MASE is scaled.

    ``first_origin``: origins every ``h`` steps from there to ``T - h``; ``None``: a single
    origin at ``T - h`` (the last ``h`` points held out). The scale is the in-sample MAE of
    the seasonal naive forecast with ``scale_period`` on the data before the first origin.
    """

    name: str
    first_origin: int | None
    scale_period: int = 24

    def origins(self, T: int, h: int) -> list[int]:
        if self.first_origin is None:
            return [T - h]
        return list(range(self.first_origin, T - h + 1, h))

    def scale(self, Y: np.ndarray, origins: list[int]) -> np.ndarray:
        return mase_scale(Y, origins[0], self.scale_period)


#: 14 origins over the third week of each 3-week pedestrian window (hours 336..492)
ROLLING_ORIGIN = Protocol("rolling origin", first_origin=336)
#: issue #3's measurement: the last 12 hours of each window held out, one origin per series
ISSUE_PROTOCOL = Protocol("issue protocol", first_origin=None)


def score(abs_err: np.ndarray, scale: np.ndarray) -> tuple[float, np.ndarray]:
    """``abs_err`` (n, origins, h) -> (mean MASE over series, per-series MASE)."""
    per = abs_err.mean(axis=(1, 2)) / scale
    return float(per.mean()), per


def eval_fastshard(Y, seasons, origins, h, **kwargs):
    """Online evaluation; returns (abs errors (n, origins, h), cpu seconds, updates)."""
    from fastshard.forecast import Forecaster

    Y = np.atleast_2d(Y)
    n, T = Y.shape
    cols = np.ascontiguousarray(Y.T)
    f = Forecaster(n, seasons, **kwargs)
    want = {t: k for k, t in enumerate(origins)}
    err = np.empty((n, len(origins), h))
    t0 = time.process_time()
    for t in range(T):
        k = want.get(t)
        if k is not None:
            err[:, k, :] = np.abs(Y[:, t : t + h] - f.predict(h))
        f.update(cols[t])
    return err, time.process_time() - t0, T


def eval_seasonal_naive(Y, period, origins, h):
    Y = np.atleast_2d(Y)
    n = Y.shape[0]
    err = np.empty((n, len(origins), h))
    t0 = time.process_time()
    for k, t in enumerate(origins):
        for j in range(h):
            back = period * ((j + period) // period)
            err[:, k, j] = np.abs(Y[:, t + j] - Y[:, t + j - back])
    return err, time.process_time() - t0


RIVER_PARAMS = {"alpha": 0.05, "beta": 0.001, "gamma": 0.2}


def eval_river(Y, period, origins, h, params=RIVER_PARAMS):
    """river HoltWinters (additive, one seasonality), one model per series."""
    from river import time_series

    Y = np.atleast_2d(Y)
    n, T = Y.shape
    err = np.empty((n, len(origins), h))
    want = {t: k for k, t in enumerate(origins)}
    learn_s = 0.0
    t0 = time.process_time()
    for i in range(n):
        model = time_series.HoltWinters(seasonality=period, **params)
        row = Y[i].tolist()
        for t in range(T):
            k = want.get(t)
            if k is not None:
                err[i, k, :] = np.abs(Y[i, t : t + h] - np.asarray(model.forecast(horizon=h)))
            a = time.process_time()
            model.learn_one(row[t])
            learn_s += time.process_time() - a
    return err, time.process_time() - t0, learn_s / (n * T)


def eval_statsforecast(Y, model, origins, h, *, refit=True, input_size=None):
    """``StatsForecast.cross_validation`` at the given origins (equally spaced, ending
    ``h`` before the end of each series). Returns (abs errors, cpu seconds, fits)."""
    import pandas as pd
    from statsforecast import StatsForecast

    Y = np.atleast_2d(Y)
    n, T = Y.shape
    origins = list(origins)
    step = origins[1] - origins[0] if len(origins) > 1 else h
    if origins[-1] + h != T or any(b - a != step for a, b in zip(origins, origins[1:], strict=False)):
        raise ValueError("statsforecast origins must be equally spaced and end h before T")
    df = pd.DataFrame({"unique_id": np.repeat(np.arange(n), T), "ds": np.tile(np.arange(T), n),
                       "y": Y.ravel()})
    sf = StatsForecast(models=[model], freq=1, n_jobs=1)
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = sf.cross_validation(df=df, h=h, step_size=step, n_windows=len(origins),
                                 refit=refit, input_size=input_size)
    secs = time.process_time() - t0
    col = [c for c in cv.columns if c not in ("unique_id", "ds", "cutoff", "y")][0]
    cv = cv.sort_values(["unique_id", "cutoff", "ds"])
    pred = cv[col].to_numpy().reshape(n, len(origins), h)
    truth = cv["y"].to_numpy().reshape(n, len(origins), h)
    fits = n * (len(origins) if refit is True else 1)
    return np.abs(truth - pred), secs, fits
