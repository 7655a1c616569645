"""The ``Forecaster``: many series, one step at a time, a bank of online models per series.

A thin Python class over the Numba kernels: it owns the state arrays, validates at the
boundary and calls the kernels; no per-series Python work happens in ``update``/``predict``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from fastshard.errors import InvalidTypeError, InvalidValueError, check_finite, check_int
from fastshard.forecast._checks import (
    as_vector,
    check_groups,
    check_hw_sets,
    check_lags,
    check_positive_float,
    check_seasons,
)
from fastshard.forecast._holtwinters import hw_cycle_init, hw_predict, hw_update
from fastshard.forecast._naive import F32_MAX, naive_predict, naive_step, to_float32
from fastshard.forecast._rls import rls_predict, rls_update
from fastshard.forecast._select import blend_reported, model_weights, track_reported
from fastshard.forecast._state import SERIES_AXIS, STATE_VERSION, allocate, staggered

MODELS = ("auto", "select", "naive", "holtwinters", "ar")
MAX_HORIZON = 100_000
# Gaussian factor turning a mean absolute error into a standard deviation (sqrt(pi / 2))
MAE_TO_SD = math.sqrt(math.pi / 2.0)

#: Holt-Winters parameter sets run side by side: (alpha, beta, phi, gamma per season).
#: A stable level with slowly learned seasons, and a very stable level with seasons that
#: track the last few cycles. Chosen on held-out data (bench/: pedestrian windows outside the
#: evaluated 200, bank calls before the evaluated 4 weeks; docs/forecast.md): with a third,
#: faster set with a damped trend (0.1, 0.002, 0.95, 0.5) the bank scored MASE 0.6484 and
#: 0.5679 there, without it 0.6478 and 0.5665, and the step is a third cheaper; a fast level
#: (alpha 0.2) helped bank calls (0.534) but hurt pedestrian counts (0.660). Trends are
#: still followed: the autoregression on the seasonal difference extrapolates one.
DEFAULT_HW_SETS: tuple[tuple[float, float, float, float], ...] = (
    (0.05, 0.0, 1.0, 0.05),
    (0.02, 0.0, 1.0, 0.3),
)

#: Half-life (steps) of the recent error that weights the models; chosen on the same held-out
#: data among 1-8 (pedestrian counts preferred 1-2, bank calls 4-8). Weighting by the
#: long-memory error (half-life one season) had scored 0.684 and 0.587 there.
DEFAULT_WEIGHT_HALFLIFE = 4.0


class Forecaster:
    """Online forecasts for ``n_series`` series observed on one shared step clock.

    Parameters
    ----------
    n_series:
        number of series (more can be added later with :meth:`add_series`).
    season_lengths:
        seasonal periods in steps, e.g. ``(24, 168)`` for daily and weekly cycles of hourly
        data. Empty: no seasonality (naive = last value, AR on first differences).
    model:
        ``"auto"`` (default) combines, per series, the models' forecasts with weights
        ``1 / e_m^4`` from each model's recent one-step error ``e_m`` (so the model that
        forecasts a series best dominates it, and close competitors share); ``"select"``
        uses only the model with the smallest recent error; ``"naive"``, ``"holtwinters"``
        or ``"ar"`` forecast with that family only, and skip the other families' updates
        (cheaper steps; the seasonal naive model is always run, as the fallback before a
        model has a track record and as the cap on interval widths).
    step:
        the step length in seconds (informational; kept in ``state_dict``).
    hw_sets:
        Holt-Winters parameter sets ``(alpha, beta, phi, gamma)`` run side by side.
    ar_lags:
        lags of the seasonal difference used by the RLS autoregression (default ``(1, 2)``).
    forgetting:
        RLS forgetting factor in (0.9, 1]: memory of about ``1 / (1 - forgetting)`` steps.
    error_halflife:
        half-life, in steps, of the rolling error that sizes intervals, is reported by
        :meth:`rolling_error` and measures each model's track record (default: the longest
        season, at least 24).
    weight_halflife:
        half-life, in steps, of the recent error that weights and selects the models
        (default ``DEFAULT_WEIGHT_HALFLIFE``): short, because which model forecasts a series
        best changes with the series' regime (a holiday, an outage, a shift in the daily
        shape) and a long memory keeps trusting yesterday's winner.
    groups:
        a group label per series (``-1`` = none); a series added later with the same group
        starts from the group's seasonal shape.
    """

    def __init__(
        self,
        n_series: int,
        season_lengths: Sequence[int] = (),
        *,
        model: str = "auto",
        step: float | None = None,
        hw_sets: Sequence[Sequence[float]] = DEFAULT_HW_SETS,
        ar_lags: Sequence[int] | None = None,
        forgetting: float = 0.995,
        error_halflife: float | None = None,
        weight_halflife: float = DEFAULT_WEIGHT_HALFLIFE,
        groups: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        n = check_int("n_series", n_series, 0, 10_000_000)
        seasons = check_seasons(season_lengths)
        if not isinstance(model, str) or model not in MODELS:
            raise InvalidValueError(f"model must be one of {', '.join(MODELS)}; got {model!r}")
        step_s = None if step is None else check_positive_float("step", step)
        sets = check_hw_sets(hw_sets)
        lags = check_lags(ar_lags, seasons)
        lam = check_finite("forgetting", forgetting)
        if not 0.9 < lam <= 1.0:
            raise InvalidValueError(f"forgetting must be in (0.9, 1], got {forgetting}")
        if error_halflife is None:
            halflife = float(max(24, seasons[-1] if seasons else 24))
        else:
            halflife = check_positive_float("error_halflife", error_halflife)
        recent_halflife = check_positive_float("weight_halflife", weight_halflife)
        group_arr = check_groups(groups, n)

        self._model = model
        self._step = step_s
        self._seasons = seasons
        self._hw_sets = sets
        self._lags = lags
        self._forgetting = lam
        self._halflife = halflife
        self._recent_halflife = recent_halflife
        self._clock = 0
        self._derive_config()
        self._alloc(n)
        self._a["groups"][:] = group_arr

    # ------------------------------------------------------------------ configuration
    def _derive_config(self) -> None:
        seasons = self._seasons
        self._L = seasons[-1] if seasons else 1
        self._seas_len = np.asarray(seasons, dtype=np.int64)
        self._seas_off = np.concatenate(([0], np.cumsum(self._seas_len)[:-1])).astype(np.int64)
        self._sum_l = int(self._seas_len.sum())
        sets = np.asarray(self._hw_sets, dtype=np.float64)
        self._alpha = np.ascontiguousarray(sets[:, 0])
        self._beta = np.ascontiguousarray(sets[:, 1])
        self._phi = np.ascontiguousarray(sets[:, 2])
        self._gamma = np.ascontiguousarray(np.repeat(sets[:, 3:4], max(1, len(seasons)), axis=1))
        self._K = len(self._hw_sets)
        self._M = self._K + 2
        self._lags_arr = np.asarray(self._lags, dtype=np.int64)
        self._Z = max(self._lags)
        self._p = len(self._lags)
        self._decay = 0.5 ** (1.0 / self._halflife)
        self._recent = 0.5 ** (1.0 / self._recent_halflife)
        # a model (or a service's own forecast) needs this much track record to count:
        # the decayed weight of min(L, 24) scored steps, at least 3 (less a margin for the
        # float32 rounding of the weights; one more step adds about 1)
        count = max(3, min(self._L, 24))
        self._min_wt = (1.0 - self._decay**count) / (1.0 - self._decay) - 1e-3
        # error weight row of each model: naive and Holt-Winters share row 0, the AR row 1
        self._wt_row = np.zeros(self._M, dtype=np.int64)
        self._wt_row[self._M - 1] = 1
        allowed = np.zeros(self._M, dtype=np.bool_)
        if self._model in ("auto", "select", "naive"):
            allowed[0] = True
        if self._model in ("auto", "select", "holtwinters"):
            allowed[1 : 1 + self._K] = True
        if self._model in ("auto", "select", "ar"):
            allowed[self._M - 1] = True
        self._allowed = allowed  # may be chosen for forecasts
        scored = allowed.copy()  # run and scored each step
        scored[0] = True  # naive always: the fallback, and the cap on interval widths
        self._scored = scored
        self._p0 = 100.0

    def _alloc(self, n: int) -> None:
        self._set_state(allocate(n, L=self._L, K=self._K, sum_l=self._sum_l, p=self._p,
                                 Z=self._Z, M=self._M, p0=self._p0), n)

    def _set_state(self, arrays: dict[str, np.ndarray], n: int) -> None:
        """Install state arrays, each copied to its own offset within a 4 KiB page (see
        ``_state.staggered``), plus the per-step scratch."""
        self._a = {name: staggered(arr, slot) for slot, (name, arr) in enumerate(arrays.items())}
        self._n = n
        self._y32 = staggered(np.empty(n, dtype=np.float32), len(arrays))  # this step, float32
        self._work = staggered(np.empty((2 * self._p + 3, n)), len(arrays) + 1)
        # a lower bound of every series' observation count: kernels take their steady paths
        # once it shows every series past warm-up (only ever raised by naive_step's report)
        self._min_obs = int(self._a["n_obs"].min(initial=1 << 62))
        # whether any service forecast may be pending (else scoring them is skipped)
        self._rep_live = bool(np.isfinite(self._a["rep_pending"]).any())

    # ------------------------------------------------------------------ properties
    @property
    def n_series(self) -> int:
        return self._n

    @property
    def season_lengths(self) -> tuple[int, ...]:
        return self._seasons

    @property
    def step(self) -> float | None:
        return self._step

    @property
    def steps_seen(self) -> int:
        """Number of :meth:`update` calls so far (the shared clock)."""
        return self._clock

    @property
    def groups(self) -> np.ndarray:
        """Group label per series (``-1`` = none); a read-only view."""
        v = self._a["groups"].view()
        v.flags.writeable = False
        return v

    @property
    def model_names(self) -> tuple[str, ...]:
        return ("naive",) + tuple(f"holtwinters[{k}]" for k in range(self._K)) + ("ar",)

    def selected_models(self) -> np.ndarray:
        """Per series, the model with the least recent error (index into :attr:`model_names`)."""
        return self._weights()[1]

    def model_weights(self) -> np.ndarray:
        """``(n_models, n_series)``: how much each model contributes to each series' forecast."""
        return self._weights()[0]

    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        w = np.empty((self._M, self._n))
        best = np.empty(self._n, dtype=np.int64)
        model_weights(self._a["err_recent"], self._a["err_wt"], self._wt_row, self._min_wt,
                      self._allowed, self._model == "auto", self._a["season_prior"], w, best)
        return w, best

    def rolling_error(self) -> np.ndarray:
        """``(n_models, n_series)`` rolling mean absolute one-step error (NaN before any, and
        for a model that ``model`` keeps from running)."""
        a = self._a
        wt = a["err_wt"][self._wt_row].astype(np.float64)
        run = self._scored[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((wt > 0) & run, a["err_sum"] / wt, np.nan)

    # ------------------------------------------------------------------ stepping
    def update(self, values: Any, reported: Any = None) -> None:
        """Absorb one step for every series. NaN marks a missing value.

        ``reported``: optionally, each service's own forecast of the *next* step (NaN where it
        sent none). It is scored against what then arrives and blended into ``predict``'s first
        step with a weight learned from that track record.
        """
        y = as_vector("values", values, self._n, allow_nan=True, allow_inf=True)
        rep = None if reported is None else as_vector("reported", reported, self._n, allow_nan=True)
        y32 = self._y32
        outside = to_float32(y, y32)
        if outside:
            raise InvalidValueError(
                f"values must be finite numbers within +-{F32_MAX:.4g} (NaN = missing); "
                f"got {outside} outside that range"
            )
        a = self._a
        c = self._clock
        allowed = self._scored
        es, ew, er = a["err_sum"], a["err_wt"], a["err_recent"]
        dec, rec = self._decay, self._recent
        K, M = self._K, self._M
        low = self._min_obs
        # a model family excluded by ``model`` is not run at all; the seasonal ring is shared
        # state (naive, AR, cycle initialisation) and the AR must read it before it is updated
        if allowed[1]:
            hw_update(y32, c, a["n_obs"], a["season_prior"], a["level"], a["trend"], a["seas"],
                      self._seas_len, self._seas_off, self._alpha, self._beta, self._phi,
                      self._gamma, es[1 : 1 + K], er[1 : 1 + K], dec, rec, low)
        if allowed[M - 1]:
            rls_update(y, a["ring"], c, a["n_obs"], self._lags_arr, a["theta"], a["P"],
                       a["zring"], a["scale"], self._forgetting, self._p0, self._work,
                       es[M - 1], ew[1], er[M - 1], dec, rec, low)
        low = naive_step(a["ring"], a["last"], c, y32, a["n_obs"], es[0], ew[0], er[0], dec,
                         rec)
        self._min_obs = low
        if self._rep_live:
            track_reported(y, dec, a["rep_pending"], a["rep_sum"], a["rep_wt"])
        # a first cycle completes only where n_obs reached a season length
        if allowed[1] and low <= self._L:
            hw_cycle_init(y32, a["ring"], c, a["n_obs"], a["season_prior"], a["level"],
                          a["trend"], a["seas"], self._seas_len, self._seas_off)
        if rep is not None:
            np.copyto(a["rep_pending"], rep)
            self._rep_live = True
        elif self._rep_live:
            a["rep_pending"].fill(np.nan)
            self._rep_live = False
        self._clock = c + 1

    def predict(self, h: int) -> np.ndarray:
        """Point forecasts of the next ``h`` steps: an array ``(n_series, h)``.

        NaN for a series that has never been observed. The array is a transposed view of a
        step-major buffer (the kernels work step by step across all series).
        """
        h = check_int("h", h, 1, MAX_HORIZON)
        w, best = self._weights()
        return self._predict(h, w, best)

    def predict_model(self, h: int, model: str) -> np.ndarray:
        """Forecasts of one model of the bank (a name from :attr:`model_names`) for every
        series, without combination or service blending: for diagnostics and comparisons."""
        h = check_int("h", h, 1, MAX_HORIZON)
        names = self.model_names
        if model not in names:
            raise InvalidValueError(f"model must be one of {', '.join(names)}; got {model!r}")
        w = np.zeros((self._M, self._n))
        w[names.index(model)] = 1.0
        best = np.full(self._n, names.index(model), dtype=np.int64)
        saved = self._a["rep_pending"]
        self._a["rep_pending"] = np.full(self._n, np.nan)
        try:
            return self._predict(h, w, best)
        finally:
            self._a["rep_pending"] = saved

    def _predict(self, h: int, w: np.ndarray, best: np.ndarray) -> np.ndarray:
        a = self._a
        n = self._n
        c = self._clock
        acc = np.zeros((h, n))
        used = np.asarray(w.any(axis=1), dtype=np.bool_)
        if used[0]:
            naive_predict(a["ring"], a["last"], c, w[0], acc)
        for k in range(self._K):
            if used[1 + k]:
                hw_predict(k, c, a["level"], a["trend"], a["seas"], self._seas_len,
                           self._seas_off, self._phi, w[1 + k], acc)
        if used[self._M - 1]:
            zbuf = np.empty((self._Z + h, n))
            rls_predict(c, a["ring"], a["last"], self._lags_arr, a["theta"], a["zring"],
                        a["scale"], zbuf, w[self._M - 1], acc)
        blend_reported(acc, best, a["err_sum"], a["err_wt"], self._wt_row, a["rep_pending"],
                       a["rep_sum"], a["rep_wt"], self._min_wt)
        if self._min_obs == 0:  # else every series has been observed
            never = a["n_obs"] == 0
            acc[:, never] = np.nan
        return acc.T

    def predict_interval(self, h: int, q: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central ``q`` prediction interval of the next ``h`` steps: ``(lower, upper)``.

        Width from the best model's rolling one-step error, assumed Gaussian, growing like
        ``sqrt(j)`` with the horizon ``j`` but capped at the seasonal naive model's error (a
        forecast ``j`` steps ahead is never less certain than "same as one season ago").
        """
        h = check_int("h", h, 1, MAX_HORIZON)
        qv = check_finite("q", q)
        if not 0.0 < qv < 1.0:
            raise InvalidValueError(f"q must be in (0, 1), got {q}")
        w, best = self._weights()
        mid = self._predict(h, w, best)
        z = NormalDist().inv_cdf(0.5 + qv / 2.0)
        err = np.nan_to_num(self.rolling_error(), nan=0.0)
        sd1 = MAE_TO_SD * np.take_along_axis(err, best[None, :], axis=0)[0]
        sd_cap = np.maximum(sd1, MAE_TO_SD * err[0])
        j = np.sqrt(np.arange(1, h + 1, dtype=np.float64))
        sd = np.minimum(sd1[:, None] * j[None, :], sd_cap[:, None])
        return mid - z * sd, mid + z * sd

    # ------------------------------------------------------------------ growth
    def add_series(self, k: int = 1, group: int | None = None) -> range:
        """Append ``k`` new series; returns their indices.

        With ``group``, the new series get that group label and start from the group's
        average seasonal shape (relative to level) over members with a full season of
        history; their first observation sets the scale. Without history in the group they
        start cold.
        """
        k = check_int("k", k, 1, 10_000_000)
        g = -1 if group is None else check_int("group", group, 0, 2**62)
        old = self._n
        fresh = Forecaster.__new__(Forecaster)
        fresh.__dict__.update({x: y for x, y in self.__dict__.items() if x != "_a"})
        fresh._alloc(k)
        shape = self._group_shape(g) if g >= 0 else None
        if shape is not None:
            fresh._a["seas"][:] = shape[:, :, None]
            fresh._a["season_prior"][:] = 2
        fresh._a["groups"][:] = g
        grown = {name: np.concatenate((arr, fresh._a[name]), axis=SERIES_AXIS[name])
                 for name, arr in self._a.items()}
        self._set_state(grown, old + k)
        return range(old, old + k)

    def _group_shape(self, g: int) -> np.ndarray | None:
        a = self._a
        members = np.flatnonzero((a["groups"] == g) & (a["n_obs"] >= max(1, self._L)))
        if members.size == 0 or self._sum_l == 0:
            return None
        lv = a["level"][:, members]  # (K, m)
        ok = lv > 0
        if not ok.any():
            return None
        rel = a["seas"][:, :, members] / np.where(ok, lv, 1.0)[:, None, :]
        weights = ok[:, None, :].astype(np.float64)
        denom = np.maximum(weights.sum(axis=2), 1.0)
        return (rel * weights).sum(axis=2) / denom  # (K, sum_l), relative to level

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: config plus copies of the state arrays."""
        return {
            "version": STATE_VERSION,
            "config": {
                "season_lengths": list(self._seasons),
                "model": self._model,
                "step": self._step,
                "hw_sets": [list(s) for s in self._hw_sets],
                "ar_lags": list(self._lags),
                "forgetting": self._forgetting,
                "error_halflife": self._halflife,
                "weight_halflife": self._recent_halflife,
            },
            "clock": self._clock,
            "n_series": self._n,
            "arrays": {name: arr.copy() for name, arr in self._a.items()},
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> Forecaster:
        """Rebuild a forecaster saved by :meth:`state_dict`; shapes are checked first."""
        if not isinstance(d, dict):
            raise InvalidTypeError(f"state must be a dict, got {type(d).__name__}")
        if d.get("version") != STATE_VERSION:
            raise InvalidValueError(
                f"state version must be {STATE_VERSION}, got {d.get('version')!r}"
                + (" (saved by fastshard before the float32 state layout; it cannot be "
                   "resumed, start a new Forecaster)" if d.get("version") == 1 else "")
            )
        try:
            cfg, arrays = d["config"], d["arrays"]
            n, clock = d["n_series"], d["clock"]
        except KeyError as exc:
            raise InvalidValueError(f"state is missing the field {exc.args[0]!r}") from None
        f = cls(n, cfg["season_lengths"], model=cfg["model"], step=cfg["step"],
                hw_sets=cfg["hw_sets"], ar_lags=cfg["ar_lags"], forgetting=cfg["forgetting"],
                error_halflife=cfg["error_halflife"], weight_halflife=cfg["weight_halflife"])
        clock = check_int("clock", clock, 0)
        missing = set(SERIES_AXIS) - set(arrays)
        if missing:
            raise InvalidValueError(f"state arrays missing: {sorted(missing)}")
        loaded = {}
        for name, ref in f._a.items():
            arr = np.asarray(arrays[name])
            if arr.shape != ref.shape:
                raise InvalidValueError(
                    f"state array {name!r} must have shape {ref.shape}, got {arr.shape}"
                )
            loaded[name] = np.asarray(arr, dtype=ref.dtype)
        f._set_state(loaded, f._n)
        f._clock = clock
        return f

