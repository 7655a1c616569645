"""Online autoregression on the seasonal difference, fitted by recursive least squares.

The model, per series: ``z_t = y_t - y_{t-L}`` (``y_{t-L}`` is the seasonal ring's value at
that phase, ``L`` the longest season) follows ``z_t = theta . [z_{t-l1}, z_{t-l2}, ...]``. No intercept: it would extrapolate the
average week-on-week change, which on real series is mostly noise (measured: MASE 0.65 vs
0.73 on the pedestrian windows).
Its forecast is "the same as one season ago, corrected by how far this cycle has been running
above or below the last one" -- an ARIMA(p,0,0)(0,1,0)_L, which the seasonal naive forecast
is the ``theta = 0`` case of. ``theta`` follows the data by RLS with exponential forgetting
(Haykin, *Adaptive Filter Theory*, ch. 10): no refit over history, O(p^2) per step.

The regression runs on ``z / scale`` (``scale`` a running mean of ``|z|``), so the inverse
correlation matrix ``P`` starts at ``p0 * I`` whatever the units of the series, and its
diagonal stays at or below ``p0`` so a direction the data never excites cannot wind up.

State (float64: RLS is the one model whose update subtracts nearly equal numbers):
``theta (p, n)``, ``P (p (p + 1) / 2, n)`` (the packed upper triangle of the symmetric
matrix), ``zring (Z + 1, n)`` (past ``z`` by step, ``Z`` = largest lag; NaN when unknown;
one row more than the lags need, so the row a step writes is never a row it reads -- when
they coincided, the compiled loop's overlap check failed and it ran the scalar fallback,
3x slower), ``scale (n,)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fastshard.forecast._state import TINY

MAX_FEATURES = 8


def packed_size(p: int) -> int:
    """Rows of the packed upper triangle of a symmetric ``p x p`` matrix."""
    return p * (p + 1) // 2


@njit(cache=True, nogil=True)
def _packed_index(p):  # pragma: no cover - compiled
    """``idx[a, b]``: the row of ``P[a, b]`` (= ``P[b, a]``) in the packed upper triangle,
    stored row by row: ``(0, 0), (0, 1), .., (0, p-1), (1, 1), ..``."""
    idx = np.empty((p, p), dtype=np.int64)
    r = 0
    for a in range(p):
        for b in range(a, p):
            idx[a, b] = r
            idx[b, a] = r
            r += 1
    return idx


@njit(cache=True, nogil=True, error_model="numpy")
def rls_update(y, ring, clock, n_obs, lags, theta, P, zring, scale, lam, p0, work,
               err_sum, err_wt, err_recent, decay, recent, min_obs):  # pragma: no cover - compiled
    """Absorb step ``clock``, scoring the one-step forecast made before it into
    ``err_sum``/``err_wt`` (decayed sums) and ``err_recent`` (short-memory mean; see
    ``_select``; the forecast itself is not kept).

    Must run *before* the seasonal ring is overwritten with step ``clock``'s values. ``y`` is
    float64 (the difference ``y - y_{t-L}`` is taken at full precision), the ring float32.
    ``P`` is the packed upper triangle of the symmetric inverse correlation matrix
    (``packed_size(p)`` rows). ``min_obs``: a lower bound of ``n_obs``; from 49 on every scale
    gain is the fixed 0.02 and no division is spent on it.

    The covariance bound is division- and square-root-free: the forgetting factor inflates
    ``P`` by ``1/lam`` only while every diagonal entry stays at or below ``p0`` afterwards, so
    ``P[m, m] <= p0`` holds for every series (a direction the data never excites cannot wind
    up) at the cost of a comparison. What is left per series is two divisions (``1/scale`` and
    the RLS gain), in one branch-free vectorised pass for the default two lags. ``work`` is
    scratch of shape ``(2 * p + 3, n)`` for the general path.
    """
    L = ring.shape[0]
    Z = zring.shape[0]  # the ring of past z: largest lag + 1 rows
    p = theta.shape[0]
    base_row = ring[clock % L]
    out_row = zring[clock % Z]
    steady = min_obs >= 49
    if p == 2:
        _rls_update2(y, base_row, out_row, zring[(clock - lags[0]) % Z],
                     zring[(clock - lags[1]) % Z], clock >= lags[0], clock >= lags[1], n_obs,
                     theta[0], theta[1], P[0], P[1], P[2], scale, lam, p0, err_sum, err_wt,
                     err_recent, decay, recent, steady)
        return
    n = y.shape[0]
    idx = _packed_index(p)
    inv_lam = 1.0 / lam
    cap = p0 * lam
    x = work[:p]
    px = work[p : 2 * p]
    zhat = work[2 * p]
    e_row = work[2 * p + 1]
    gain = work[2 * p + 2]
    for i in range(n):
        zhat[i] = 0.0
    for m in range(p):
        lag = lags[m]
        xm = x[m]
        th = theta[m]
        if clock >= lag:
            src = zring[(clock - lag) % Z]
            for i in range(n):
                sc = scale[i]
                v = src[i] / sc if sc > 0.0 else 0.0
                xm[i] = v if v == v else 0.0
                zhat[i] += th[i] * xm[i]
        else:
            for i in range(n):
                xm[i] = 0.0
    for i in range(n):
        base = np.float64(base_row[i])
        sc = scale[i]
        zh = zhat[i]
        yi = y[i]
        z = yi - base  # NaN when the value or the phase is missing
        out_row[i] = z
        ok = z == z and sc > 0.0
        e_row[i] = z / sc - zh if ok else 0.0
        gain[i] = 1.0 if ok else 0.0
        d = abs(yi - (base + zh * sc)) if sc > 0.0 else np.nan
        scored = d == d
        es = decay * err_sum[i] + d
        er = recent * err_recent[i] + (1.0 - recent) * d
        err_sum[i] = (es if es >= TINY else 0.0) if scored else err_sum[i]
        err_wt[i] = decay * err_wt[i] + 1.0 if scored else err_wt[i]
        err_recent[i] = (er if er >= TINY else 0.0) if scored else err_recent[i]
        # running scale of |z|: mean over the first 50 differences, then an EWMA
        w = 0.02 if steady else max(0.02, 1.0 / (n_obs[i] + 1.0))
        if z == z:
            grown = sc + w * (abs(z) - sc) if sc > 0.0 else abs(z)
            scale[i] = grown if grown >= TINY else 0.0  # a flat series: no scale yet
    for m in range(p):
        pm = px[m]
        for i in range(n):
            pm[i] = 0.0
        for q in range(p):
            pr = P[idx[m, q]]
            xq = x[q]
            for i in range(n):
                pm[i] += pr[i] * xq[i]
    for i in range(n):
        den = lam
        for m in range(p):
            den += x[m, i] * px[m, i]
        gain[i] = gain[i] / den  # 0 for a series that does not learn this step
    for m in range(p):
        th = theta[m]
        pm = px[m]
        for i in range(n):
            th[i] += pm[i] * gain[i] * e_row[i]
    for a in range(p):
        for b in range(a, p):
            pr = P[idx[a, b]]
            pa = px[a]
            pb = px[b]
            for i in range(n):
                pr[i] -= pa[i] * gain[i] * pb[i]
    for i in range(n):  # inflate by 1/lam where that keeps the diagonal within p0
        top = 0.0
        for m in range(p):
            top = max(top, P[idx[m, m], i])
        e_row[i] = inv_lam if gain[i] > 0.0 and top <= cap else 1.0
    for r in range(P.shape[0]):
        pr = P[r]
        for i in range(n):
            pr[i] *= e_row[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _rls_update2(y, base_row, out_row, src0, src1, known0, known1, n_obs, th0, th1, p00, p01,
                 p11, scale, lam, p0, err_sum, err_wt, err_recent, decay, recent, steady):
    # pragma: no cover - compiled
    """``rls_update`` for two lags (the default), fused into one branch-free pass per series.

    Same arithmetic as the general stages with the 2x2 matrix held in scalars: every array
    is touched once and the loop vectorises (a select, not a branch, where a series does not
    learn this step).
    """
    inv_lam = 1.0 / lam
    cap = p0 * lam
    for i in range(y.shape[0]):
        sc = scale[i]
        pos = sc > 0.0
        inv_sc = 1.0 / sc
        inv_sc = inv_sc if pos else 0.0
        x0 = src0[i] * inv_sc if known0 else 0.0
        x0 = x0 if x0 == x0 else 0.0
        x1 = src1[i] * inv_sc if known1 else 0.0
        x1 = x1 if x1 == x1 else 0.0
        t0 = th0[i]
        t1 = th1[i]
        zh = t0 * x0 + t1 * x1
        base = np.float64(base_row[i])
        yi = y[i]
        z = yi - base
        out_row[i] = z
        ok = z == z and pos
        d = abs(yi - (base + zh * sc)) if pos else np.nan
        scored = d == d
        es = decay * err_sum[i] + d
        er = recent * err_recent[i] + (1.0 - recent) * d
        err_sum[i] = (es if es >= TINY else 0.0) if scored else err_sum[i]
        err_wt[i] = decay * err_wt[i] + 1.0 if scored else err_wt[i]
        err_recent[i] = (er if er >= TINY else 0.0) if scored else err_recent[i]
        w = 0.02 if steady else max(0.02, 1.0 / (n_obs[i] + 1.0))
        az = abs(z)
        grown = sc + w * (az - sc) if pos else az
        grown = grown if grown >= TINY else 0.0  # a flat series: no scale yet
        scale[i] = grown if z == z else sc
        e = z * inv_sc - zh
        a00 = p00[i]
        a01 = p01[i]
        a11 = p11[i]
        px0 = a00 * x0 + a01 * x1
        px1 = a01 * x0 + a11 * x1
        g = 1.0 / (lam + x0 * px0 + x1 * px1)
        ge = g * e if ok else 0.0
        th0[i] = t0 + px0 * ge
        th1[i] = t1 + px1 * ge
        n00 = a00 - px0 * g * px0
        n01 = a01 - px0 * g * px1
        n11 = a11 - px1 * g * px1
        f = inv_lam if n00 <= cap and n11 <= cap else 1.0
        p00[i] = n00 * f if ok else a00
        p01[i] = n01 * f if ok else a01
        p11[i] = n11 * f if ok else a11


@njit(cache=True, nogil=True)
def rls_predict(clock, ring, last, lags, theta, zring, scale, zbuf, w, acc):
    # pragma: no cover - compiled
    """``acc[j, i] += w[i] * forecast`` of step ``clock + j`` (``acc`` is ``(h, n)``).

    Future differences are filled in with their own forecasts (recursive strategy);
    ``zbuf`` is scratch of shape ``(Z + h, n)``, ``Z`` the largest lag. The lag coefficients are shrunk to a sum of
    absolute values of 0.98 when larger, which is sufficient for the recursion to stay
    stable (RLS tracks one-step fit; nothing else stops it from wandering into explosive
    coefficients, and 12 steps of an explosive recursion are visible).
    """
    h = acc.shape[0]
    n = acc.shape[1]
    L = ring.shape[0]
    R = zring.shape[0]
    Z = zbuf.shape[0] - h
    p = theta.shape[0]
    for b in range(Z):  # zbuf[Z - 1 - b] = z / scale at step clock - 1 - b
        known = clock >= b + 1
        src = zring[(clock - 1 - b) % R]
        dst = zbuf[Z - 1 - b]
        for i in range(n):
            zv = src[i] if known else np.nan
            sc = scale[i]
            dst[i] = 0.0 if np.isnan(zv) or sc <= 0.0 else zv / sc
    shrink = np.empty(n)
    for i in range(n):
        mass = 0.0
        for m in range(p):
            mass += abs(theta[m, i])
        shrink[i] = 0.98 / mass if mass > 0.98 else 1.0
    for j in range(h):
        zrow = zbuf[Z + j]
        for i in range(n):
            zrow[i] = 0.0
        for m in range(p):
            src = zbuf[Z + j - lags[m]]
            th = theta[m]
            for i in range(n):
                zrow[i] += th[i] * src[i]
        for i in range(n):
            zrow[i] *= shrink[i]
        base = ring[(clock + j) % L]
        out = acc[j]
        for i in range(n):
            bv = base[i]
            bv = last[i] if bv != bv else bv
            out[i] += w[i] * (bv + zrow[i] * scale[i])
