"""Argument checks of the Forecaster: every one names the field and the accepted range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastshard.errors import InvalidTypeError, InvalidValueError, check_finite, check_int
from fastshard.forecast._rls import MAX_FEATURES

MAX_SEASON = 100_000


def check_positive_float(name: str, value: Any) -> float:
    v = check_finite(name, value)
    if v <= 0:
        raise InvalidValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_seasons(season_lengths: Any) -> tuple[int, ...]:
    if isinstance(season_lengths, (str, bytes)) or not isinstance(season_lengths, Sequence):
        raise InvalidTypeError(
            f"season_lengths must be a sequence of ints, got {type(season_lengths).__name__}"
        )
    out = sorted({check_int("season_lengths[]", s, 2, MAX_SEASON) for s in season_lengths})
    if len(out) > 4:
        raise InvalidValueError(f"season_lengths must have at most 4 seasons, got {len(out)}")
    return tuple(out)


def check_hw_sets(sets: Any) -> tuple[tuple[float, float, float, float], ...]:
    try:
        rows = [tuple(s) for s in sets]
    except TypeError:
        raise InvalidTypeError("hw_sets must be a sequence of (alpha, beta, phi, gamma)") from None
    if not 1 <= len(rows) <= 8:
        raise InvalidValueError(f"hw_sets must hold 1-8 parameter sets, got {len(rows)}")
    out = []
    for r in rows:
        if len(r) != 4:
            raise InvalidValueError(f"each hw_sets entry must be (alpha, beta, phi, gamma), got {r!r}")
        alpha, beta, phi, gamma = (check_finite("hw_sets[]", x) for x in r)
        if not (0 < alpha <= 1 and 0 <= beta <= 1 and 0 < phi <= 1 and 0 <= gamma <= 1):
            raise InvalidValueError(
                "hw_sets entries need alpha in (0, 1], beta in [0, 1], phi in (0, 1], gamma in "
                f"[0, 1]; got {r!r}"
            )
        out.append((alpha, beta, phi, gamma))
    return tuple(out)


def check_lags(ar_lags: Any, seasons: tuple[int, ...]) -> tuple[int, ...]:
    if ar_lags is None:
        lags = [1, 2]  # measured best on the pedestrian windows among (1), (1,2), (1,24), (1,2,24)
    else:
        lags = [check_int("ar_lags[]", x, 1, MAX_SEASON) for x in ar_lags]
    lags = sorted(set(lags))
    if not 1 <= len(lags) <= MAX_FEATURES:
        raise InvalidValueError(f"ar_lags must hold 1-{MAX_FEATURES} distinct lags, got {len(lags)}")
    return tuple(lags)


def check_groups(groups: Any, n: int) -> np.ndarray:
    if groups is None:
        return np.full(n, -1, dtype=np.int64)
    arr = np.asarray(groups)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidValueError(f"groups must be {n} integer labels (-1 = none), got shape {arr.shape}")
    if (arr < -1).any():
        raise InvalidValueError("groups labels must be >= -1")
    return arr.astype(np.int64)


def as_vector(name: str, values: Any, n: int, *, allow_nan: bool,
              allow_inf: bool = False) -> np.ndarray:
    """``values`` as a contiguous float64 vector of length ``n``. ``allow_inf``: the caller
    checks the range itself (``update`` does, in the same pass that converts to float32)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name} must be an array of {n} numbers") from None
    if arr.shape != (n,):
        raise InvalidValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if (not allow_inf and np.isinf(arr).any()) or (not allow_nan and np.isnan(arr).any()):
        raise InvalidValueError(f"{name} must be finite numbers (NaN = missing), got inf")
    return np.ascontiguousarray(arr)
