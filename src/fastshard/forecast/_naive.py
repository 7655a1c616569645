"""Seasonal naive kernels over the shared seasonal ring, and the per-step input conversion.

The ring ``ring`` has shape ``(L, n_series)`` for the longest season ``L``: slot
``tau % L`` holds the latest value observed at that phase of the season. Every series shares
one clock, so at each step all series read and write the *same* row, a contiguous run of
``n_series`` floats; that layout (instead of one row per series) keeps a step over 10,000
series streaming through the cache rather than striding across it.

A missing value (NaN) leaves the previous cycle's value in its slot, so a gap repeats the
older observation instead of turning the forecast into NaN. A phase never observed falls
back to ``last``, the most recent observed value of the series.

The ring, ``last`` and the error sums are float32 (see ``_state``): the step
is bound by memory traffic, and seven significant digits are more than a forecast has.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fastshard.forecast._state import TINY

F32_MAX = float(np.finfo(np.float32).max)


@njit(cache=True, nogil=True, error_model="numpy")
def to_float32(y, out):  # pragma: no cover - compiled
    """``out[:] = y`` rounded to float32 (values below ``TINY`` in magnitude to 0); returns how
    many values are outside float32's range (infinities included), so the caller can reject
    the step before any state changes."""
    bad = 0
    for i in range(y.shape[0]):
        v = y[i]
        a = abs(v)
        bad += 1 if a > F32_MAX else 0
        out[i] = np.float32(0.0 if a < TINY else v)  # NaN compares false: stays NaN
    return bad


@njit(cache=True, nogil=True, error_model="numpy")
def naive_step(ring, last, clock, y, n_obs, err_sum, err_wt, err_recent, decay, recent):
    # pragma: no cover - compiled
    """Score the seasonal naive forecast of step ``clock`` against ``y``, record ``y``, advance
    ``n_obs`` where a value arrived; returns the smallest ``n_obs`` afterwards.

    The forecast is the ring's value at this phase (the latest observed one), else ``last``.
    Scoring keeps decayed sums of absolute error and of weight, and the short-memory mean
    ``err_recent`` (see ``_select``); a missing value or a series never seen is not scored,
    and sums that decay below ``TINY`` are flushed to 0 (see ``_state.TINY``). ``err_wt`` is
    the weight shared with the Holt-Winters sets, which are scored under exactly the same
    condition (a value arrived for a series seen before), so it is kept once. A missing value leaves the ring untouched.
    ``y`` is float32, like the state. Branch-free, so the loop vectorises.
    """
    L = ring.shape[0]
    row = ring[clock % L]
    dec = np.float32(decay)
    rec = np.float32(recent)
    gain = np.float32(1.0 - recent)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    tiny = np.float32(TINY)
    low = 1 << 62
    for i in range(y.shape[0]):
        v = row[i]
        prev = last[i]
        f = prev if v != v else v
        yi = y[i]
        d = abs(yi - f)
        ok = d == d
        es = dec * err_sum[i] + d
        er = rec * err_recent[i] + gain * d
        err_sum[i] = (es if es >= tiny else zero) if ok else err_sum[i]
        err_wt[i] = dec * err_wt[i] + one if ok else err_wt[i]
        err_recent[i] = (er if er >= tiny else zero) if ok else err_recent[i]
        seen = yi == yi
        row[i] = yi if seen else v
        last[i] = yi if seen else prev
        cnt = n_obs[i] + (1 if seen else 0)
        n_obs[i] = cnt
        low = min(low, cnt)
    return low


@njit(cache=True, nogil=True)
def naive_predict(ring, last, clock, w, acc):  # pragma: no cover - compiled
    """``acc[j, i] += w[i] * forecast`` of step ``clock + j`` (``acc`` is ``(h, n)``).

    Step ``clock + j`` repeats the phase ``(clock + j) % L``: the value of one season ago for
    ``j < L``, of ``ceil((j + 1) / L)`` seasons ago beyond. A phase never seen repeats the
    last value; a series never seen contributes NaN (the caller masks those series).
    """
    L = ring.shape[0]
    h = acc.shape[0]
    for j in range(h):
        src = ring[(clock + j) % L]
        out = acc[j]
        for i in range(src.shape[0]):
            v = np.float64(src[i])
            v = np.float64(last[i]) if v != v else v
            out[i] += w[i] * v
