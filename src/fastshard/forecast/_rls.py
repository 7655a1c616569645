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
diagonal is capped at ``p0`` so a direction the data never excites cannot wind up.

State: ``theta (p, n)``, ``P (p, p, n)``, ``zring (Z, n)`` (past ``z`` by step, ``Z`` = largest
lag; NaN when unknown), ``scale (n,)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_FEATURES = 8


@njit(cache=True, nogil=True)
def rls_update(y, ring, clock, n_obs, lags, theta, P, zring, scale, lam, p0, f1, work,
               err_sum, err_wt, decay):  # pragma: no cover - compiled
    """Absorb step ``clock``; ``f1[i]`` receives the one-step forecast made before (NaN if none),
    which is also scored into ``err_sum``/``err_wt`` (decayed sums, see ``_select``).

    Must run *before* the seasonal ring is overwritten with step ``clock``'s values.
    ``work`` is scratch of shape ``(2 * p + 3, n)``. Each stage is a pass over all series
    with the feature/matrix index outside, so the inner loops run down contiguous rows and
    vectorise; a series that learns nothing this step (missing value, unseen phase, first
    difference) gets a zero gain instead of a branch.
    """
    n = y.shape[0]
    L = ring.shape[0]
    Z = zring.shape[0]
    p = theta.shape[0]
    base_row = ring[clock % L]
    out_row = zring[clock % Z]
    inv_lam = 1.0 / lam
    if p == 2:
        _rls_update2(y, base_row, out_row, zring, clock, n_obs, lags, theta, P, scale, lam,
                     p0, f1, err_sum, err_wt, decay)
        return
    x = work[:p]
    px = work[p : 2 * p]
    e_row = work[2 * p]
    learn = work[2 * p + 1]
    inv_d = work[2 * p + 2]
    zhat = f1  # the forecast is built in place, in units of scale first
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
        base = base_row[i]
        sc = scale[i]
        zh = zhat[i]
        z = y[i] - base  # NaN when the value or the phase is missing
        out_row[i] = z
        ok = z == z and sc > 0.0
        e_row[i] = z / sc - zh if ok else 0.0
        learn[i] = 1.0 if ok else 0.0
        f1[i] = base + zh * sc if base == base and sc > 0.0 else np.nan
        # running scale of |z|: mean over the first 50 differences, then an EWMA
        az = abs(z)
        w = max(0.02, 1.0 / (n_obs[i] + 1.0))
        if z == z:
            scale[i] = sc + w * (az - sc) if sc > 0.0 else az
    for m in range(p):
        pm = px[m]
        for i in range(n):
            pm[i] = 0.0
        for q in range(p):
            pr = P[m, q]
            xq = x[q]
            for i in range(n):
                pm[i] += pr[i] * xq[i]
    for i in range(n):
        inv_d[i] = lam
    for m in range(p):
        pm = px[m]
        xm = x[m]
        for i in range(n):
            inv_d[i] += xm[i] * pm[i]
    for i in range(n):
        inv_d[i] = learn[i] / inv_d[i]  # 0 for a series that does not learn this step
    for m in range(p):
        th = theta[m]
        pm = px[m]
        for i in range(n):
            th[i] += pm[i] * inv_d[i] * e_row[i]
        for q in range(p):
            pr = P[m, q]
            pq = px[q]
            for i in range(n):
                upd = (pr[i] - pm[i] * inv_d[i] * pq[i]) * inv_lam
                pr[i] = upd if learn[i] > 0.0 else pr[i]
    for i in range(n):
        d = abs(y[i] - f1[i])
        ok = d == d
        err_sum[i] = decay * err_sum[i] + d if ok else err_sum[i]
        err_wt[i] = decay * err_wt[i] + 1.0 if ok else err_wt[i]
    for m in range(p):
        diag = P[m, m]
        for i in range(n):
            if diag[i] > p0:
                # D P D with D = diag(1, .., f, .., 1): stays positive definite, P[m, m] -> p0
                f = np.sqrt(p0 / diag[i])
                for q in range(p):
                    P[m, q, i] *= f
                    P[q, m, i] *= f


@njit(cache=True, nogil=True)
def _rls_update2(y, base_row, out_row, zring, clock, n_obs, lags, theta, P, scale, lam, p0,
                 f1, err_sum, err_wt, decay):  # pragma: no cover - compiled
    """``rls_update`` for two lags (the default), fused into one branch-free pass per series.

    Same arithmetic as the general stages, with the 2x2 matrix held in scalars, so the whole
    step is one vectorisable loop instead of a dozen passes over the state.
    """
    n = y.shape[0]
    Z = zring.shape[0]
    inv_lam = 1.0 / lam
    known0 = clock >= lags[0]
    known1 = clock >= lags[1]
    src0 = zring[(clock - lags[0]) % Z]
    src1 = zring[(clock - lags[1]) % Z]
    th0 = theta[0]
    th1 = theta[1]
    p00 = P[0, 0]
    p01 = P[0, 1]
    p10 = P[1, 0]
    p11 = P[1, 1]
    for i in range(n):
        sc = scale[i]
        pos = sc > 0.0
        inv_sc = 1.0 / sc if pos else 0.0
        x0 = src0[i] * inv_sc if known0 else 0.0
        x0 = x0 if x0 == x0 else 0.0
        x1 = src1[i] * inv_sc if known1 else 0.0
        x1 = x1 if x1 == x1 else 0.0
        t0 = th0[i]
        t1 = th1[i]
        zh = t0 * x0 + t1 * x1
        base = base_row[i]
        z = y[i] - base
        out_row[i] = z
        ok = z == z and pos
        fc = base + zh * sc if base == base and pos else np.nan
        f1[i] = fc
        d = abs(y[i] - fc)
        scored = d == d
        err_sum[i] = decay * err_sum[i] + d if scored else err_sum[i]
        err_wt[i] = decay * err_wt[i] + 1.0 if scored else err_wt[i]
        w = max(0.02, 1.0 / (n_obs[i] + 1.0))
        az = abs(z)
        if z == z:
            scale[i] = sc + w * (az - sc) if pos else az
        e = z * inv_sc - zh if ok else 0.0
        a00 = p00[i]
        a01 = p01[i]
        a10 = p10[i]
        a11 = p11[i]
        px0 = a00 * x0 + a01 * x1
        px1 = a10 * x0 + a11 * x1
        g = 1.0 / (lam + x0 * px0 + x1 * px1) if ok else 0.0
        th0[i] = t0 + px0 * g * e
        th1[i] = t1 + px1 * g * e
        if ok:
            a00 = (a00 - px0 * g * px0) * inv_lam
            a01 = (a01 - px0 * g * px1) * inv_lam
            a10 = (a10 - px1 * g * px0) * inv_lam
            a11 = (a11 - px1 * g * px1) * inv_lam
        # cap the diagonal at p0 by D P D scaling (as in the general path, row/column 0 first)
        f = np.sqrt(p0 / a00) if a00 > p0 else 1.0
        a00 *= f * f
        a01 *= f
        a10 *= f
        f = np.sqrt(p0 / a11) if a11 > p0 else 1.0
        a11 *= f * f
        a01 *= f
        a10 *= f
        p00[i] = a00
        p01[i] = a01
        p10[i] = a10
        p11[i] = a11


@njit(cache=True, nogil=True)
def rls_predict(clock, ring, last, lags, theta, zring, scale, zbuf, w, acc):
    # pragma: no cover - compiled
    """``acc[j, i] += w[i] * forecast`` of step ``clock + j`` (``acc`` is ``(h, n)``).

    Future differences are filled in with their own forecasts (recursive strategy);
    ``zbuf`` is scratch of shape ``(Z + h, n)``. The lag coefficients are shrunk to a sum of
    absolute values of 0.98 when larger, which is sufficient for the recursion to stay
    stable (RLS tracks one-step fit; nothing else stops it from wandering into explosive
    coefficients, and 12 steps of an explosive recursion are visible).
    """
    h = acc.shape[0]
    n = acc.shape[1]
    L = ring.shape[0]
    Z = zring.shape[0]
    p = theta.shape[0]
    for b in range(Z):  # zbuf[Z - 1 - b] = z / scale at step clock - 1 - b
        known = clock >= b + 1
        src = zring[(clock - 1 - b) % Z]
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
