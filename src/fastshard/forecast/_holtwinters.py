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

from fastshard.forecast._state import TINY


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


@njit(cache=True, nogil=True, error_model="numpy")
def hw_update(y, clock, n_obs, season_prior, level, trend, seas, seas_len, seas_off,
              alpha, beta, phi, gamma, err_sum, err_recent, decay, recent, min_obs):
    # pragma: no cover - compiled
    """Absorb step ``clock``'s values ``y`` (float32), scoring the forecast each set made of it.

    ``err_sum[k]``: set ``k``'s decayed sum of absolute one-step error, ``err_recent[k]`` its
    short-memory mean (see ``_select``), advanced for every series that had a forecast
    (``n_obs > 0``) and a value; the sum's weight is the one ``naive_step`` keeps for the same
    condition. Scoring inside the update saves a pass
    over stored forecasts.

    ``n_obs`` (observations so far, per series) is read, not advanced: ``naive_step`` advances
    it after every model has been updated. ``min_obs`` may be any lower bound of ``n_obs``
    (the caller's from the previous step): once it shows every series past a set's warm-up,
    that set takes the steady path -- plain scalar gains, float32 arithmetic (eight series
    per 256-bit vector; the step is bound by memory traffic and float32 halves it).

    Branch-free per series, so the loops vectorise: a missing value is an error of 0 (level
    and trend then follow their own forecast, seasons stay), and the very first value needs no
    special case because its level gain is ``1/(0+1) = 1`` and its season gain ``(1-1) = 0``.
    """
    K = level.shape[0]
    n = y.shape[0]
    S = seas_len.shape[0]
    rows = np.empty(S, dtype=np.int64)
    for s in range(S):
        rows[s] = seas_off[s] + clock % seas_len[s]
    warm = _warm_until(alpha, beta, gamma, seas_len)
    if min_obs == 0:
        _scale_borrowed(y, n_obs, season_prior, seas, rows)
    # zero rows stand in for absent seasons (two: rows a loop writes must not overlap)
    spare = np.zeros((2, n if S < 2 else 0), dtype=seas.dtype)
    for k in range(K):
        if min_obs >= warm[k] and S <= 2:
            s0 = seas[k, rows[0]] if S > 0 else spare[0]
            s1 = seas[k, rows[1]] if S > 1 else spare[1]
            g0 = gamma[k, 0] if S > 0 else 0.0
            g1 = gamma[k, 1] if S > 1 else 0.0
            _hw_steady(y, level[k], trend[k], s0, s1, err_sum[k], err_recent[k], alpha[k],
                       beta[k], phi[k], g0, g1, decay, recent)
        else:
            _hw_warm(k, y, n_obs, season_prior, level, trend, seas, seas_len, rows, alpha,
                     beta, phi, gamma, err_sum, err_recent, decay, recent)


@njit(cache=True, nogil=True, error_model="numpy")
def _hw_steady(y, lev, tre, s0, s1, es, er, alpha, beta, phi, g0, g1, decay, recent):
    # pragma: no cover - compiled
    """One set past warm-up, two seasonal rows (a zero row stands in for an absent season, its
    gain 0), in float32. A set with ``beta = 0`` and ``phi = 1`` never changes its trend, so
    the trend row is only read: one store stream less."""
    a0 = np.float32(alpha)
    b0 = np.float32(beta)
    ph = np.float32(phi)
    c0 = np.float32(g0 * (1.0 - alpha))
    c1 = np.float32(g1 * (1.0 - alpha) * (1.0 - g0))
    dec = np.float32(decay)
    rec = np.float32(recent)
    gain = np.float32(1.0 - recent)
    zero = np.float32(0.0)
    tiny = np.float32(TINY)
    if beta == 0.0 and phi == 1.0:
        for i in range(y.shape[0]):
            lv = lev[i] + tre[i]
            a = s0[i]
            b = s1[i]
            e = y[i] - (lv + a + b)
            d = abs(e)
            ok = d == d
            s = dec * es[i] + d
            r = rec * er[i] + gain * d
            es[i] = (s if s >= tiny else zero) if ok else es[i]
            er[i] = (r if r >= tiny else zero) if ok else er[i]
            e = e if ok else zero
            lev[i] = lv + a0 * e
            s0[i] = a + c0 * e
            s1[i] = b + c1 * e
        return
    for i in range(y.shape[0]):
        tr = ph * tre[i]
        lv = lev[i] + tr
        a = s0[i]
        b = s1[i]
        e = y[i] - (lv + a + b)
        d = abs(e)
        ok = d == d
        s = dec * es[i] + d
        r = rec * er[i] + gain * d
        es[i] = (s if s >= tiny else zero) if ok else es[i]
        er[i] = (r if r >= tiny else zero) if ok else er[i]
        e = e if ok else zero
        lev[i] = lv + a0 * e
        tr = tr + b0 * e
        tre[i] = tr if abs(tr) >= tiny else zero  # a damped trend decays towards 0
        s0[i] = a + c0 * e
        s1[i] = b + c1 * e


@njit(cache=True, nogil=True, error_model="numpy")
def _hw_warm(k, y, n_obs, season_prior, level, trend, seas, seas_len, rows, alpha, beta, phi,
             gamma, err_sum, err_recent, decay, recent):  # pragma: no cover - compiled
    """One set while some series are still warming up (decreasing gains), in float64."""
    S = seas_len.shape[0]
    first_len = seas_len[0] if S > 0 else 1
    a0 = alpha[k]
    b0 = beta[k]
    ph = phi[k]
    lev = level[k]
    tre = trend[k]
    es = err_sum[k]
    er = err_recent[k]
    for i in range(y.shape[0]):
        ssum = 0.0
        for s in range(S):
            ssum += seas[k, rows[s], i]
        lv = np.float64(lev[i])
        tr = ph * tre[i]
        f = lv + tr + ssum
        obs = n_obs[i]
        e = y[i] - f
        d = abs(e)
        ok = d == d and obs > 0
        s = decay * es[i] + d
        r = recent * er[i] + (1.0 - recent) * d
        es[i] = (s if s >= TINY else 0.0) if ok else es[i]
        er[i] = (r if r >= TINY else 0.0) if ok else er[i]
        if e != e:
            e = 0.0
        fo = float(obs)
        a = max(a0, 1.0 / (fo + 1.0))
        bg = b0 if obs >= first_len else 0.0
        lev[i] = lv + tr + a * e
        tr = tr + bg * e
        tre[i] = tr if abs(tr) >= TINY else 0.0
        r = (1.0 - a) * e
        prior = float(season_prior[i])
        for s in range(S):
            cycles = np.floor((fo + 0.5) / seas_len[s]) + prior
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
