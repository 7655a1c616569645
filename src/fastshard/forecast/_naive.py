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

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def naive_push(ring, last, clock, y):  # pragma: no cover - compiled
    """Record step ``clock``'s values ``y`` (NaN = missing) in the ring and in ``last``."""
    L = ring.shape[0]
    slot = clock % L
    for i in range(y.shape[0]):
        v = y[i]
        if not np.isnan(v):
            ring[slot, i] = v
            last[i] = v


@njit(cache=True, nogil=True)
def naive_predict1(ring, last, clock, out):  # pragma: no cover - compiled
    """Seasonal naive forecast of step ``clock`` (the next one), for every series."""
    L = ring.shape[0]
    slot = clock % L
    for i in range(ring.shape[1]):
        v = ring[slot, i]
        out[i] = last[i] if np.isnan(v) else v


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
