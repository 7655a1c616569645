"""Seasonal naive kernels over the shared seasonal ring.

The ring ``ring`` has shape ``(L, n_series)`` for the longest season ``L``: slot
``tau % L`` holds the latest value observed at that phase of the season. Every series shares
one clock, so at each step all series read and write the *same* row, a contiguous run of
``n_series`` floats; that layout (instead of one row per series) keeps a step over 10,000
series streaming through the cache rather than striding across it.

A missing value (NaN) leaves the previous cycle's value in its slot, so a gap repeats the
older observation instead of turning the forecast into NaN. A phase never observed falls
back to ``last``, the most recent observed value of the series.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def naive_step(ring, last, clock, y, err_sum, err_wt, decay):  # pragma: no cover - compiled
    """Score the seasonal naive forecast of step ``clock`` against ``y``, then record ``y``.

    The forecast is the ring's value at this phase (the latest observed one), else ``last``.
    Scoring keeps decayed sums of absolute error and of weight (see ``_select``); a missing
    value or a series never seen is not scored. A missing value leaves the ring untouched.
    """
    L = ring.shape[0]
    row = ring[clock % L]
    for i in range(y.shape[0]):
        v = row[i]
        f = last[i] if v != v else v
        yi = y[i]
        d = abs(yi - f)
        ok = d == d
        err_sum[i] = decay * err_sum[i] + d if ok else err_sum[i]
        err_wt[i] = decay * err_wt[i] + 1.0 if ok else err_wt[i]
        if yi == yi:
            row[i] = yi
            last[i] = yi


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
            v = src[i]
            v = last[i] if v != v else v
            out[i] += w[i] * v
