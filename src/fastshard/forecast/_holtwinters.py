"""Online additive Holt-Winters (ETS(A,Ad,A)) with damped trend and several seasonalities.

State, for ``K`` parameter sets run side by side (the selector later picks, per series, the
set that forecasts it best, which is how the smoothing parameters adapt online):

* ``level``, ``trend``: ``(K, n)``;
* ``seas``: ``(K, sum(L_s), n)``; season ``s`` occupies rows ``off[s] .. off[s] + L[s] - 1``
  and phase ``tau % L[s]`` of step ``tau`` is one row, shared by every series (one clock).

Error-correction form (Hyndman et al., *Forecasting with Exponential Smoothing*, ch. 3),
extended to several seasons the way Taylor (2003) does for double seasonal Holt-Winters:
with ``e = y - (l + phi b + sum_s s_s)``::

    l <- l + phi b + a e
    b <- phi b + beta e
    r <- (1 - a) e;  for each season s: s_s <- s_s + g_s r;  r <- (1 - g_s) r

so the error is split between level and seasons instead of being counted twice. The first
cycles use decreasing gains (``a = max(alpha, 1/(n+1))``, ``g_s = max(gamma_s, 1/(c_s+1))``
with ``c_s`` the cycles of season ``s`` seen): the level starts as a running mean and each
seasonal slot as a running mean of its deviations, which is an online stand-in for the
classical "average the first cycles" initialisation. A series that borrowed its group's
seasonal shape is credited with ``season_prior`` cycles so that shape is not overwritten by
its first observations.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _warm_until(alpha, beta, gamma, seas_len):  # pragma: no cover - compiled
    """Observation count from which the decreasing gains equal the fixed ones (per set)."""
    K = alpha.shape[0]
    out = np.empty(K, dtype=np.int64)
    first = seas_len[0] if seas_len.shape[0] > 0 else 0
    for k in range(K):
        w = max(first, int(np.ceil(1.0 / alpha[k])))
        for s in range(seas_len.shape[0]):
            g = gamma[k, s]
            c = int(np.ceil(1.0 / g)) if g > 0 else 1 << 40
            w = max(w, c * seas_len[s])
        out[k] = w
    return out


@njit(cache=True, nogil=True)
def hw_update(y, clock, n_obs, season_prior, level, trend, seas, seas_len, seas_off,
              alpha, beta, phi, gamma, err_sum, err_wt, decay):  # pragma: no cover - compiled
    """Absorb step ``clock``'s values ``y``, scoring the forecast each set made of it.

    ``err_sum[k]``/``err_wt[k]``: set ``k``'s decayed sums of absolute one-step error and of
    weight (see ``_select``), advanced for every series that had a forecast (``n_obs > 0``)
    and a value; scoring inside the update saves a pass over stored forecasts.

    ``n_obs`` (observations so far, per series) is read, not advanced: the caller advances it
    once after every model has been updated.

    Branch-free per series, so the loops vectorise: a missing value is an error of 0 (level
    and trend then follow their own forecast, seasons stay), and the very first value needs no
    special case because its level gain is ``1/(0+1) = 1`` and its season gain ``(1-1) = 0``.
    Once every series is past its warm-up the gains are plain scalars.
    """
    K = level.shape[0]
    n = y.shape[0]
    S = seas_len.shape[0]
    first_len = seas_len[0] if S > 0 else 1
    rows = np.empty(S, dtype=np.int64)
    inv_len = np.empty(S)
    for s in range(S):
        rows[s] = seas_off[s] + clock % seas_len[s]
        inv_len[s] = 1.0 / seas_len[s]
    warm = _warm_until(alpha, beta, gamma, seas_len)
    min_obs = 1 << 62
    for i in range(n):
        min_obs = min(min_obs, n_obs[i])
    if min_obs == 0:
        _scale_borrowed(y, n_obs, season_prior, seas, rows)
    for k in range(K):
        a0 = alpha[k]
        b0 = beta[k]
        ph = phi[k]
        lev = level[k]
        tre = trend[k]
        es = err_sum[k]
        ew = err_wt[k]
        steady = min_obs >= warm[k]
        g0 = gamma[k, 0] if S > 0 else 0.0
        g1 = gamma[k, 1] if S > 1 else 0.0
        s0 = seas[k, rows[0]] if S > 0 else lev[:0]
        s1 = seas[k, rows[1]] if S > 1 else lev[:0]
        if steady and S <= 2:
            # the common case, written out so it compiles to straight vector code
            c0 = 1.0 - a0
            c1 = (1.0 - a0) * (1.0 - g0)
            for i in range(n):
                ssum = 0.0
                if S > 0:
                    ssum += s0[i]
                if S > 1:
                    ssum += s1[i]
                lv = lev[i]
                tr = ph * tre[i]
                f = lv + tr + ssum
                e = y[i] - f
                d = abs(e)
                ok = d == d
                es[i] = decay * es[i] + d if ok else es[i]
                ew[i] = decay * ew[i] + 1.0 if ok else ew[i]
                if not ok:  # missing value
                    e = 0.0
                lev[i] = lv + tr + a0 * e
                tre[i] = tr + b0 * e
                if S > 0:
                    s0[i] += g0 * c0 * e
                if S > 1:
                    s1[i] += g1 * c1 * e
            continue
        for i in range(n):
            ssum = 0.0
            for s in range(S):
                ssum += seas[k, rows[s], i]
            lv = lev[i]
            tr = ph * tre[i]
            f = lv + tr + ssum
            obs = n_obs[i]
            e = y[i] - f
            d = abs(e)
            ok = d == d and obs > 0
            es[i] = decay * es[i] + d if ok else es[i]
            ew[i] = decay * ew[i] + 1.0 if ok else ew[i]
            if e != e:
                e = 0.0
            fo = float(obs)
            a = max(a0, 1.0 / (fo + 1.0))
            bg = b0 if obs >= first_len else 0.0
            lev[i] = lv + tr + a * e
            tre[i] = tr + bg * e
            r = (1.0 - a) * e
            prior = float(season_prior[i])
            for s in range(S):
                cycles = np.floor((fo + 0.5) * inv_len[s]) + prior
                g = max(gamma[k, s], 1.0 / (cycles + 1.0))
                seas[k, rows[s], i] += g * r
                r *= 1.0 - g


@njit(cache=True, nogil=True)
def _scale_borrowed(y, n_obs, season_prior, seas, rows):  # pragma: no cover - compiled
    """First value of a series that borrowed its group's shape (stored relative to level):
    scale the shape by the level that value implies, ``level = y / (1 + shape[phase])``."""
    K = seas.shape[0]
    R = seas.shape[1]
    for i in range(y.shape[0]):
        v = y[i]
        if n_obs[i] != 0 or season_prior[i] == 0 or np.isnan(v):
            continue
        for k in range(K):
            rel = 0.0
            for s in range(rows.shape[0]):
                rel += seas[k, rows[s], i]
            lv0 = v / (1.0 + rel) if 1.0 + rel > 1e-9 else v
            for r in range(R):
                seas[k, r, i] *= lv0


@njit(cache=True, nogil=True)
def hw_predict(k, clock, level, trend, seas, seas_len, seas_off, phi, w, acc):
    # pragma: no cover - compiled
    """``acc[j, i] += w[i] * forecast`` of step ``clock + j`` by parameter set ``k``.

    Step-major (``acc`` is ``(h, n)``) so each pass reads one seasonal row contiguously across
    all series; weighted accumulation lets the caller combine models without temporaries.
    """
    h = acc.shape[0]
    n = acc.shape[1]
    S = seas_len.shape[0]
    ph = phi[k]
    lev = level[k]
    tre = trend[k]
    row = np.empty(n)
    damp = 0.0
    pw = 1.0
    for j in range(h):
        pw *= ph
        damp += pw
        for i in range(n):
            row[i] = lev[i] + damp * tre[i]
        for s in range(S):
            srow = seas[k, seas_off[s] + (clock + j) % seas_len[s]]
            for i in range(n):
                row[i] += srow[i]
        out = acc[j]
        for i in range(n):
            out[i] += w[i] * row[i]


@njit(cache=True, nogil=True)
def hw_cycle_init(y, ring, clock, n_obs, season_prior, level, trend, seas, seas_len, seas_off):
    # pragma: no cover - compiled
    """Classical decomposition of the first full cycle of each season, done when it completes.

    Call after step ``clock`` was pushed to the seasonal ring and ``n_obs`` advanced. For a
    series whose observation count just reached ``L_s``: level = mean of the last ``L_s``
    values, trend = 0, the shorter seasons' profiles = mean deviation per phase, season
    ``s`` = what remains. Without this the running-mean start leaves each slot measured
    against a level that was still moving, an error that decays only as fast as ``gamma``.
    """
    K = level.shape[0]
    S = seas_len.shape[0]
    L = ring.shape[0]
    n = y.shape[0]
    # almost every step has no series at a cycle boundary: find out with a cheap scan first
    hits = 0
    for s in range(S):
        Ls = seas_len[s]
        for i in range(n):
            hits += 1 if n_obs[i] == Ls else 0
    if hits == 0:
        return
    for i in range(n):
        if np.isnan(y[i]) or season_prior[i] > 0:
            continue
        obs = n_obs[i]
        target = -1
        for s in range(S):
            if obs == seas_len[s]:
                target = s
        if target < 0:
            continue
        Ls = seas_len[target]
        total = 0.0
        cnt = 0
        for b in range(Ls):
            v = ring[(clock - b) % L, i]
            if not np.isnan(v):
                total += v
                cnt += 1
        if cnt == 0:
            continue
        mean = total / cnt
        for k in range(K):
            level[k, i] = mean
            trend[k, i] = 0.0
            for s in range(target + 1):
                for r in range(seas_len[s]):
                    seas[k, seas_off[s] + r, i] = 0.0
        # peel the seasons from shortest to `target`: each gets the mean deviation per phase
        # that the shorter ones left unexplained
        for s in range(target + 1):
            Lc = seas_len[s]
            off = seas_off[s]
            for r in range(Lc):
                acc = 0.0
                m = 0
                for b in range(Ls):
                    step = clock - b
                    if step % Lc != r:
                        continue
                    v = ring[step % L, i]
                    if np.isnan(v):
                        continue
                    dev = v - mean
                    for s2 in range(s):
                        dev -= seas[0, seas_off[s2] + step % seas_len[s2], i]
                    acc += dev
                    m += 1
                val = acc / m if m > 0 else 0.0
                for k in range(K):
                    seas[k, off + r, i] = val
