"""The Forecaster's state arrays: names, shapes, dtypes, and where they sit in memory.

Every array puts the *series* on its last axis: all series share one step clock, so a step
touches one contiguous row per state component.

Precision: one step over 10,000 series is bound by memory traffic (measured: the default
bank touches ~35 rows of 10,000 values per step), so everything a model only accumulates --
the seasonal ring, the Holt-Winters states, the error sums -- is float32: half the bytes,
and eight series per 256-bit vector instead of four. Seven significant digits are far more
than any forecast has. The autoregression's RLS state stays float64: its covariance update
subtracts nearly equal numbers. Values must therefore lie within float32's range
(+-3.4e38), which the Forecaster checks.

Version history (``state_dict()["version"]``):

1. all float64; ``P`` the full ``(p, p, n)`` matrix; one error weight row per model.
2. float32 as above; ``P`` the packed upper triangle ``(p (p + 1) / 2, n)``; ``err_wt`` two
   rows (naive and Holt-Winters share one, the autoregression has its own); ``zring`` one
   row longer than the largest lag; ``err_recent``, the short-memory error that weights the
   models, and the config field ``weight_halflife``.
"""

from __future__ import annotations

import numpy as np

STATE_VERSION = 2

#: Smallest normal float32. Decaying state (error sums of a series whose forecasts became
#: exact, a damped trend, the AR's scale of a flat series) is flushed to 0 below it: left to
#: decay into subnormal numbers, every operation on it takes a microcode assist -- measured
#: here, an update of 10,000 constant series went from 13 us to 92 us that way. (The kernels
#: freeze this value when compiled, and Numba's cache tracks only their own files: a change
#: here needs the ``__pycache__`` of the kernel modules cleared.)
TINY = float(np.finfo(np.float32).tiny)

F32 = np.float32
F64 = np.float64
I64 = np.int64

#: the axis of each state array that runs over series (``add_series`` grows it)
SERIES_AXIS = {
    "ring": 1, "last": 0, "n_obs": 0, "season_prior": 0, "groups": 0, "level": 1, "trend": 1,
    "seas": 2, "theta": 1, "P": 1, "zring": 1, "scale": 0, "err_sum": 1, "err_wt": 1,
    "err_recent": 1, "rep_pending": 0, "rep_sum": 0, "rep_wt": 0,
}


def allocate(n: int, *, L: int, K: int, sum_l: int, p: int, Z: int, M: int,
             p0: float) -> dict[str, np.ndarray]:
    """Fresh state for ``n`` series (``L`` the longest season, ``K`` Holt-Winters sets with
    ``sum_l`` seasonal slots each, ``p`` AR lags up to ``Z``, ``M`` models)."""
    a: dict[str, np.ndarray] = {
        "ring": np.full((L, n), np.nan, dtype=F32),
        "last": np.full(n, np.nan, dtype=F32),
        "n_obs": np.zeros(n, dtype=I64),
        "season_prior": np.zeros(n, dtype=I64),
        "groups": np.full(n, -1, dtype=I64),
        "level": np.zeros((K, n), dtype=F32),
        "trend": np.zeros((K, n), dtype=F32),
        "seas": np.zeros((K, sum_l, n), dtype=F32),
        "theta": np.zeros((p, n), dtype=F64),
        "P": np.zeros((p * (p + 1) // 2, n), dtype=F64),
        "zring": np.full((Z + 1, n), np.nan, dtype=F64),
        "scale": np.zeros(n, dtype=F64),
        "err_sum": np.zeros((M, n), dtype=F32),
        "err_wt": np.zeros((2, n), dtype=F32),
        "err_recent": np.zeros((M, n), dtype=F32),
        "rep_pending": np.full(n, np.nan, dtype=F64),
        "rep_sum": np.zeros(n, dtype=F64),
        "rep_wt": np.zeros(n, dtype=F64),
    }
    row = 0
    for m in range(p):  # the packed diagonal: rows 0, p, p + (p - 1), ...
        a["P"][row] = p0
        row += p - m
    return a


_PAGE = 4096
_STAGGER = 7 * 64  # seven cache lines: 64 distinct offsets per page before any repeats


def staggered(arr: np.ndarray, slot: int) -> np.ndarray:
    """A C-contiguous copy of ``arr`` starting ``slot * 448`` bytes (mod 4096) into a page.

    The kernels stream several arrays at once; when their start addresses are congruent
    modulo 4096 (likely for large allocations, which are page aligned), loads and stores
    alias in the CPU's store buffer ("4K aliasing") and a pass can run ~20x slower.
    Measured on this project's benchmark VM: 8 us vs 180 us for the same 10,000-series
    scoring pass depending only on where the arrays happened to be allocated.
    """
    nbytes = arr.nbytes
    raw = np.empty(nbytes + 2 * _PAGE, dtype=np.uint8)
    start = (-raw.ctypes.data) % _PAGE + (slot * _STAGGER) % _PAGE
    out = raw[start : start + nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out
