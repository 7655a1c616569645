"""Scoring the models, weighting them per series, and the service-reported forecast blend.

Every model in the bank makes a one-step forecast before each update, and its kernel scores
it against what arrived, keeping per model and series an exponentially weighted mean absolute
error -- a rolling out-of-sample error, since each forecast was made before its value was
seen; ``track_reported`` does the same for the services' own forecasts. ``model_weights`` turns those errors into per-series weights: inverse-MSE combination
(Bates & Granger 1969, the rolling MAE standing in for the RMSE) or a one-hot choice of the
best model; each model's predict kernel adds its weighted forecasts into one buffer.

Model ids: 0 = seasonal naive, 1..K = Holt-Winters parameter sets, K+1 = RLS autoregression.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NAIVE = 0


@njit(cache=True, nogil=True)
def track_reported(y, decay, rep_pending, rep_sum, rep_wt, n_obs):
    # pragma: no cover - compiled
    """Score the services' own forecasts ``rep_pending`` of this step; advance ``n_obs``.

    The rolling error, for the services here and for every model in its own kernel, is kept
    as two exponentially decayed sums, of ``|error|`` and of weight (``sum <- decay * sum +
    |e|``, ``wt <- decay * wt + 1``): their ratio is the EWMA of the absolute error with the
    start-up bias removed (the first errors are simply averaged), and ``wt`` measures the
    track record. No branches on the data (a missing value or forecast is a NaN distance,
    which selects "no change"), so the loops vectorise.
    """
    for i in range(y.shape[0]):
        v = y[i]
        n_obs[i] += 1 if v == v else 0
        d = abs(v - rep_pending[i])
        ok = d == d
        rep_sum[i] = decay * rep_sum[i] + d if ok else rep_sum[i]
        rep_wt[i] = decay * rep_wt[i] + 1.0 if ok else rep_wt[i]


@njit(cache=True, nogil=True)
def model_weights(err_sum, err_wt, min_wt, allowed, combine, borrowed, weights, best):
    # pragma: no cover - compiled
    """Per-series weights ``(M, n)`` summing to 1, and ``best[i]``, the least-error model.

    A model counts once its track-record weight reaches ``min_wt``. ``combine``: weights
    ``1 / e_m^2``; otherwise one-hot on ``best``. While no allowed model has a track record,
    everything goes to the seasonal naive model (which needs none) -- or, for a series that
    borrowed its group's seasonal shape (``borrowed[i] > 0``), to the first Holt-Winters set,
    which carries that shape. Model-major passes so the inner loops vectorise.
    """
    M = err_sum.shape[0]
    n = err_sum.shape[1]
    best_err = np.full(n, np.inf)
    total = np.zeros(n)
    hw_ok = M > 2 and allowed[1]
    for i in range(n):
        best[i] = 1 if hw_ok and borrowed[i] > 0 else NAIVE
    for m in range(M):
        wm = weights[m]
        es = err_sum[m]
        ew = err_wt[m]
        if not allowed[m]:
            for i in range(n):
                wm[i] = 0.0
            continue
        for i in range(n):
            ok = ew[i] >= min_wt
            e = max(es[i] / ew[i], 1e-12) if ok else np.inf
            better = e < best_err[i]
            best_err[i] = e if better else best_err[i]
            best[i] = m if better else best[i]
            wv = 1.0 / (e * e) if ok else 0.0
            wm[i] = wv
            total[i] += wv
    for m in range(M):
        wm = weights[m]
        for i in range(n):
            if combine and total[i] > 0.0:
                wm[i] = wm[i] / total[i]
            else:
                wm[i] = 1.0 if best[i] == m else 0.0


@njit(cache=True, nogil=True)
def blend_reported(acc, best, err_sum, err_wt, rep_pending, rep_sum, rep_wt, min_wt):
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
        em = err_sum[b, i] / err_wt[b, i] if err_wt[b, i] > 0.0 else np.inf
        er = rep_sum[i] / rep_wt[i]
        if em == np.inf:
            w = 1.0
        else:
            den = em * em + er * er
            w = 0.5 if den <= 0.0 else em * em / den
        first[i] = w * r + (1.0 - w) * first[i]
