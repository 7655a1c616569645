"""Scoring the models, weighting them per series, and the service-reported forecast blend.

Every model in the bank makes a one-step forecast before each update, and its kernel scores
it against what arrived, keeping per model and series an exponentially weighted mean absolute
error -- a rolling out-of-sample error, since each forecast was made before its value was
seen; ``track_reported`` does the same for the services' own forecasts. Two memories: a
long one (decayed sums of error and weight, half-life about a season) measures each model's
track record and sizes prediction intervals; a short one (``err_recent``, an EWMA with a
half-life of a few steps) weights the models, because which model forecasts a series best
changes with its regime. ``model_weights`` turns the short-memory errors into per-series
weights ``1 / e^4`` -- sharper than the inverse-MSE combination of Bates & Granger (1969),
``1 / e^2``, which held-out data preferred (MASE 0.648 vs 0.656 on pedestrian counts, 0.568
vs 0.571 on bank calls; docs/forecast.md) -- or a one-hot choice of the best model; each
model's predict kernel adds its weighted forecasts into one buffer.

Model ids: 0 = seasonal naive, 1..K = Holt-Winters parameter sets, K+1 = RLS autoregression.
Weight rows: 0 for the naive model and the Holt-Winters sets (scored under the same
condition, so their weights are equal and kept once), 1 for the autoregression.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fastshard.forecast._state import TINY

NAIVE = 0


@njit(cache=True, nogil=True)
def track_reported(y, decay, rep_pending, rep_sum, rep_wt):
    # pragma: no cover - compiled
    """Score the services' own forecasts ``rep_pending`` of this step.

    The rolling error, for the services here and for every model in its own kernel, is kept
    as two exponentially decayed sums, of ``|error|`` and of weight (``sum <- decay * sum +
    |e|``, ``wt <- decay * wt + 1``): their ratio is the EWMA of the absolute error with the
    start-up bias removed (the first errors are simply averaged), and ``wt`` measures the
    track record. No branches on the data (a missing value or forecast is a NaN distance,
    which selects "no change"), so the loop vectorises. With no forecast pending anywhere
    this is a no-op, and the caller skips it.
    """
    for i in range(y.shape[0]):
        d = abs(y[i] - rep_pending[i])
        ok = d == d
        s = decay * rep_sum[i] + d
        rep_sum[i] = (s if s >= TINY else 0.0) if ok else rep_sum[i]
        rep_wt[i] = decay * rep_wt[i] + 1.0 if ok else rep_wt[i]


@njit(cache=True, nogil=True, error_model="numpy")
def model_weights(err_recent, err_wt, wt_row, min_wt, allowed, combine, borrowed, weights,
                  best):  # pragma: no cover - compiled
    """Per-series weights ``(M, n)`` summing to 1, and ``best[i]``, the least-error model.

    Model ``m``'s error ``e_m`` is its short-memory mean absolute error ``err_recent[m]``; it
    counts once its track record ``err_wt[wt_row[m]]`` (the decayed weight of its long-memory
    error, shared by models scored under the same condition) reaches ``min_wt``.
    ``combine``: weights ``1 / e_m^4``; otherwise one-hot on ``best``. While no
    allowed model has a track record, everything goes to the seasonal naive model (which
    needs none) -- or, for a series that borrowed its group's seasonal shape
    (``borrowed[i] > 0``), to the first Holt-Winters set, which carries that shape.
    Model-major passes of selects, not branches, so the inner loops vectorise (IEEE division:
    a zero weight gives inf or NaN, which the select discards).
    """
    M = err_recent.shape[0]
    n = err_recent.shape[1]
    # work with the inverse error r = 1 / e (one division per model and series: the pass is
    # bound by divisions): the weight is r^4, the best model the largest r
    best_inv = np.zeros(n)
    total = np.zeros(n)
    cap = err_recent.dtype.type(1e12)
    one = err_recent.dtype.type(1.0)
    hw_ok = M > 2 and allowed[1]
    for i in range(n):
        best[i] = 1 if hw_ok and borrowed[i] > 0 else NAIVE
    for m in range(M):
        wm = weights[m]
        er = err_recent[m]
        ew = err_wt[wt_row[m]]
        if not allowed[m]:
            for i in range(n):
                wm[i] = 0.0
            continue
        for i in range(n):
            # in the errors' own float32: eight divisions per vector instead of four
            r = np.float64(min(one / er[i], cap))  # errors below 1e-12 count as 1e-12
            r = r if ew[i] >= min_wt else 0.0
            better = r > best_inv[i]
            best_inv[i] = r if better else best_inv[i]
            best[i] = m if better else best[i]
            wv = (r * r) * (r * r)
            wm[i] = wv
            total[i] += wv
    for i in range(n):  # 1 / total, or 0 where the one-hot choice applies
        t = total[i]
        total[i] = 1.0 / t if combine and t > 0.0 else 0.0
    for m in range(M):
        wm = weights[m]
        for i in range(n):
            inv = total[i]
            wm[i] = wm[i] * inv if inv > 0.0 else (1.0 if best[i] == m else 0.0)


@njit(cache=True, nogil=True)
def blend_reported(acc, best, err_sum, err_wt, wt_row, rep_pending, rep_sum, rep_wt, min_wt):
    # pragma: no cover - compiled
    """Blend the first step with the service's own forecast of it, by track record.

    Weight ``e_m^2 / (e_m^2 + e_r^2)`` on the service's value (``e_m``: the best model's
    rolling error, ``e_r``: the service's), the same inverse-MSE rule: a service with a better
    track record than the model counts more; one without ``min_wt`` of record not yet.
    """
    n = acc.shape[1]
    first = acc[0]
    for i in range(n):
        r = rep_pending[i]
        if np.isnan(r) or rep_wt[i] < min_wt:
            continue
        b = best[i]
        wt = err_wt[wt_row[b], i]
        em = err_sum[b, i] / wt if wt > 0.0 else np.inf
        er = rep_sum[i] / rep_wt[i]
        if em == np.inf:
            w = 1.0
        else:
            den = em * em + er * er
            w = 0.5 if den <= 0.0 else em * em / den
        first[i] = w * r + (1.0 - w) * first[i]
