"""Each Numba kernel of fastshard.forecast against a plain-Python twin written from the math.

The twins work one series at a time with scalars and small lists, the way the models are
written on paper; the kernels work step-major over all series with branch-free loops. Small
sizes keep the JIT and the run cheap; hypothesis explores shapes, seasons, missing values,
warm-up and steady-state counts.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard.forecast._holtwinters import hw_cycle_init, hw_predict, hw_update
from fastshard.forecast._naive import naive_predict, naive_step
from fastshard.forecast._rls import rls_predict, rls_update
from fastshard.forecast._select import blend_reported, model_weights, track_reported

SEASONS = [(), (3,), (4,), (2, 5), (3, 7)]
EXAMPLES = settings(max_examples=150, deadline=None)


def close(a, b, tol=1e-9):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    both_nan = np.isnan(a) & np.isnan(b)
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    np.testing.assert_allclose(a[~both_nan], b[~both_nan], rtol=tol, atol=tol)


def values(rng, n, nan_rate=0.25, scale=100.0):
    y = rng.gamma(2.0, scale / 2, size=n)
    y[rng.random(n) < nan_rate] = np.nan
    return y


# ---------------------------------------------------------------------------- seasonal naive
def naive_twin_predict(ring, last, clock, h):
    L, n = ring.shape
    out = np.empty((h, n))
    for i in range(n):
        for j in range(h):
            v = ring[(clock + j) % L, i]
            out[j, i] = last[i] if math.isnan(v) else v
    return out


def score_twin(es, ew, y, f, decay):
    """Decayed sums of |error| and weight; unchanged where the value or forecast is missing."""
    es, ew = es.copy(), ew.copy()
    for i in range(len(y)):
        if not (math.isnan(y[i]) or math.isnan(f[i])):
            es[i] = decay * es[i] + abs(y[i] - f[i])
            ew[i] = decay * ew[i] + 1
    return es, ew


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), L=st.integers(1, 6), n=st.integers(1, 4),
       steps=st.integers(0, 20), h=st.integers(1, 9), decay=st.floats(0.5, 0.999))
def test_naive_kernels_match_twin(seed, L, n, steps, h, decay):
    rng = np.random.default_rng(seed)
    ring = np.full((L, n), np.nan)
    last = np.full(n, np.nan)
    es, ew = np.zeros(n), np.zeros(n)
    twin_hist: list[list[float]] = [[] for _ in range(n)]  # every value seen, by step
    for clock in range(steps):
        y = values(rng, n)
        want_f = np.empty(n)
        for i in range(n):
            # twin: the latest observed value at the same phase, else the latest observed
            same_phase = [v for t, v in enumerate(twin_hist[i]) if t % L == clock % L
                          and not math.isnan(v)]
            seen = [v for v in twin_hist[i] if not math.isnan(v)]
            want_f[i] = same_phase[-1] if same_phase else (seen[-1] if seen else math.nan)
            twin_hist[i].append(y[i])
        want_es, want_ew = score_twin(es, ew, y, want_f, decay)
        naive_step(ring, last, clock, y, es, ew, decay)
        close(es, want_es)
        close(ew, want_ew)
    acc = np.zeros((h, n))
    naive_predict(ring, last, steps, np.ones(n), acc)
    close(acc, naive_twin_predict(ring, last, steps, h))
    # weights scale the contribution linearly
    acc2 = np.zeros((h, n))
    w = rng.random(n)
    naive_predict(ring, last, steps, w, acc2)
    close(acc2, acc * w[None, :])


# ---------------------------------------------------------------------------- Holt-Winters
def hw_twin_update(y, clock, n_obs, prior, level, trend, seas, L, off, alpha, beta, phi, gamma):
    level, trend, seas = level.copy(), trend.copy(), seas.copy()
    K, n = level.shape
    f1 = np.empty((K, n))
    first = L[0] if len(L) else 1
    for k in range(K):
        for i in range(n):
            rows = [off[s] + clock % L[s] for s in range(len(L))]
            obs = n_obs[i]
            if obs == 0 and prior[i] > 0 and not math.isnan(y[i]):
                rel = sum(seas[k, r, i] for r in rows)
                lv0 = y[i] / (1 + rel) if 1 + rel > 1e-9 else y[i]
                seas[k, :, i] *= lv0
            ssum = sum(seas[k, r, i] for r in rows)
            f = level[k, i] + phi[k] * trend[k, i] + ssum
            f1[k, i] = f if obs > 0 else math.nan
            e = 0.0 if math.isnan(y[i]) else y[i] - f
            a = max(alpha[k], 1 / (obs + 1))
            b = beta[k] if obs >= first else 0.0
            level[k, i] = level[k, i] + phi[k] * trend[k, i] + a * e
            trend[k, i] = phi[k] * trend[k, i] + b * e
            r = (1 - a) * e
            for s in range(len(L)):
                g = max(gamma[k, s], 1 / (obs // L[s] + prior[i] + 1))
                seas[k, rows[s], i] += g * r
                r *= 1 - g
    return level, trend, seas, f1


def hw_setup(rng, seasons, n, K):
    L = np.asarray(seasons, dtype=np.int64)
    off = np.concatenate(([0], np.cumsum(L)[:-1])).astype(np.int64) if len(L) else L.copy()
    total = int(L.sum())
    alpha = rng.uniform(0.01, 0.6, K)
    beta = rng.uniform(0.0, 0.05, K)
    phi = rng.uniform(0.8, 1.0, K)
    gamma = np.ascontiguousarray(rng.uniform(0.05, 0.6, (K, max(1, len(L)))))
    level = rng.normal(50, 10, (K, n))
    trend = rng.normal(0, 1, (K, n))
    seas = rng.normal(0, 5, (K, total, n))
    return L, off, alpha, beta, phi, gamma, level, trend, seas


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), seasons=st.sampled_from(SEASONS), n=st.integers(1, 4),
       K=st.integers(1, 3), clock=st.integers(0, 50), steady=st.booleans())
def test_hw_update_matches_twin(seed, seasons, n, K, clock, steady):
    rng = np.random.default_rng(seed)
    L, off, alpha, beta, phi, gamma, level, trend, seas = hw_setup(rng, seasons, n, K)
    if steady:  # every series past warm-up: the kernel takes its scalar-gain path
        n_obs = rng.integers(10_000, 20_000, n).astype(np.int64)
        prior = np.zeros(n, dtype=np.int64)
    else:
        n_obs = rng.integers(0, 30, n).astype(np.int64)
        prior = np.where(rng.random(n) < 0.3, 2, 0).astype(np.int64)
        zero = rng.random(n) < 0.4
        n_obs[zero] = 0
    y = values(rng, n)
    want = hw_twin_update(y, clock, n_obs, prior, level, trend, seas, L, off, alpha, beta, phi,
                          gamma)
    es, ew = rng.uniform(0, 50, (K, n)), rng.uniform(0, 5, (K, n))
    want_scores = [score_twin(es[k], ew[k], y, want[3][k], 0.9) for k in range(K)]
    hw_update(y, clock, n_obs, prior, level, trend, seas, L, off, alpha, beta, phi, gamma,
              es, ew, 0.9)
    for got, exp in zip((level, trend, seas), want[:3], strict=True):
        close(got, exp)
    for k in range(K):
        close(es[k], want_scores[k][0])
        close(ew[k], want_scores[k][1])


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), seasons=st.sampled_from(SEASONS), n=st.integers(1, 4),
       K=st.integers(1, 3), clock=st.integers(0, 50), h=st.integers(1, 16))
def test_hw_predict_matches_twin(seed, seasons, n, K, clock, h):
    rng = np.random.default_rng(seed)
    L, off, alpha, beta, phi, gamma, level, trend, seas = hw_setup(rng, seasons, n, K)
    k = int(rng.integers(0, K))
    w = rng.random(n)
    acc = rng.normal(size=(h, n))
    want = acc.copy()
    for i in range(n):
        for j in range(1, h + 1):
            damp = sum(phi[k] ** m for m in range(1, j + 1))
            f = level[k, i] + damp * trend[k, i]
            f += sum(seas[k, off[s] + (clock + j - 1) % L[s], i] for s in range(len(L)))
            want[j - 1, i] += w[i] * f
    hw_predict(k, clock, level, trend, seas, L, off, phi, w, acc)
    close(acc, want)


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), seasons=st.sampled_from([(3,), (2, 6), (3, 6)]),
       n=st.integers(1, 3), K=st.integers(1, 2), clock=st.integers(6, 40))
def test_hw_cycle_init_matches_classical_decomposition(seed, seasons, n, K, clock):
    rng = np.random.default_rng(seed)
    L, off, alpha, beta, phi, gamma, level, trend, seas = hw_setup(rng, seasons, n, K)
    Lmax = int(L[-1])
    ring = rng.normal(100, 20, (Lmax, n))
    ring[rng.random((Lmax, n)) < 0.15] = np.nan
    y = ring[clock % Lmax].copy()
    target = int(rng.integers(0, len(L)))
    n_obs = np.full(n, int(L[target]), dtype=np.int64)
    n_obs[rng.random(n) < 0.3] += 1  # these series are not at a cycle boundary: untouched
    prior = np.zeros(n, dtype=np.int64)
    exp_level, exp_trend, exp_seas = level.copy(), trend.copy(), seas.copy()
    for i in range(n):
        if math.isnan(y[i]) or n_obs[i] not in set(int(x) for x in L):
            continue
        t = [s for s in range(len(L)) if L[s] == n_obs[i]][-1]
        Ls = int(L[t])
        window = [(clock - b, ring[(clock - b) % Lmax, i]) for b in range(Ls)]
        window = [(step, v) for step, v in window if not math.isnan(v)]
        mean = sum(v for _, v in window) / len(window)
        profiles: list[dict[int, float]] = []
        for s in range(t + 1):
            prof = {}
            for r in range(int(L[s])):
                devs = [v - mean - sum(profiles[s2][step % int(L[s2])] for s2 in range(s))
                        for step, v in window if step % int(L[s]) == r]
                prof[r] = sum(devs) / len(devs) if devs else 0.0
            profiles.append(prof)
        for k in range(K):
            exp_level[k, i] = mean
            exp_trend[k, i] = 0.0
            for s in range(t + 1):
                for r in range(int(L[s])):
                    exp_seas[k, off[s] + r, i] = profiles[s][r]
    hw_cycle_init(y, ring, clock, n_obs, prior, level, trend, seas, L, off)
    close(level, exp_level)
    close(trend, exp_trend)
    close(seas, exp_seas)


# ---------------------------------------------------------------------------- RLS
def rls_twin_update(y, base_row, zpast, lags, theta, P, scale, n_obs, lam, p0):
    """zpast[m][i]: z at step clock - lags[m] (NaN if unknown)."""
    theta, P, scale = theta.copy(), P.copy(), scale.copy()
    p, n = theta.shape
    f1 = np.empty(n)
    znew = np.empty(n)
    for i in range(n):
        sc = scale[i]
        x = np.array([0.0 if (math.isnan(zpast[m][i]) or sc <= 0) else zpast[m][i] / sc
                      for m in range(p)])
        zhat = float(theta[:, i] @ x)
        base = base_row[i]
        f1[i] = base + zhat * sc if (not math.isnan(base) and sc > 0) else math.nan
        z = y[i] - base
        znew[i] = z
        if math.isnan(z):
            continue
        scale[i] = sc + max(0.02, 1 / (n_obs[i] + 1)) * (abs(z) - sc) if sc > 0 else abs(z)
        if sc <= 0:
            continue
        e = z / sc - zhat
        Pi = P[:, :, i]
        px = Pi @ x
        d = lam + x @ px
        theta[:, i] += px / d * e
        P[:, :, i] = (Pi - np.outer(px, px) / d) / lam
    for i in range(n):  # invariant kept for every series: no diagonal entry above p0
        Pi = P[:, :, i]
        for m in range(p):
            if Pi[m, m] > p0:
                f = math.sqrt(p0 / Pi[m, m])
                Pi[m, :] *= f
                Pi[:, m] *= f
    return theta, P, scale, f1, znew


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), L=st.integers(1, 6),
       lags=st.sampled_from([(1,), (1, 2), (1, 3), (2, 3, 5)]), clock=st.integers(0, 30))
def test_rls_update_matches_twin(seed, n, L, lags, clock):
    rng = np.random.default_rng(seed)
    p = len(lags)
    Z = max(lags)
    lags_arr = np.asarray(lags, dtype=np.int64)
    ring = rng.normal(100, 30, (L, n))
    ring[rng.random((L, n)) < 0.2] = np.nan
    zring = rng.normal(0, 10, (Z, n))
    zring[rng.random((Z, n)) < 0.2] = np.nan
    theta = rng.normal(0, 0.3, (p, n))
    A = rng.normal(size=(p, p, n))
    P = np.einsum("abi,cbi->aci", A, A) + np.eye(p)[:, :, None]  # symmetric positive definite
    scale = np.where(rng.random(n) < 0.25, 0.0, rng.uniform(1, 20, n))
    n_obs = rng.integers(0, 100, n).astype(np.int64)
    y = values(rng, n)
    zpast = [[zring[(clock - lag) % Z, i] if clock >= lag else math.nan for i in range(n)]
             for lag in lags]
    base_row = ring[clock % L].copy()
    lam, p0 = 0.99, 5.0
    want = rls_twin_update(y, base_row, zpast, lags_arr, theta, P, scale, n_obs, lam, p0)
    f1 = np.empty(n)
    work = np.empty((2 * p + 3, n))
    es, ew = rng.uniform(0, 50, n), rng.uniform(0, 5, n)
    want_es, want_ew = score_twin(es, ew, y, want[3], 0.8)
    rls_update(y, ring, clock, n_obs, lags_arr, theta, P, zring, scale, lam, p0, f1, work,
               es, ew, 0.8)
    close(theta, want[0])
    close(P, want[1])
    close(scale, want[2])
    close(f1, want[3])
    close(zring[clock % Z], want[4])
    close(es, want_es)
    close(ew, want_ew)


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), L=st.integers(1, 6),
       lags=st.sampled_from([(1,), (1, 2), (2, 3, 5)]), clock=st.integers(0, 30),
       h=st.integers(1, 14), explosive=st.booleans())
def test_rls_predict_matches_twin(seed, n, L, lags, clock, h, explosive):
    rng = np.random.default_rng(seed)
    p, Z = len(lags), max(lags)
    lags_arr = np.asarray(lags, dtype=np.int64)
    ring = rng.normal(100, 30, (L, n))
    ring[rng.random((L, n)) < 0.2] = np.nan
    last = rng.normal(100, 30, n)
    zring = rng.normal(0, 10, (Z, n))
    zring[rng.random((Z, n)) < 0.2] = np.nan
    theta = rng.normal(0, 2.0 if explosive else 0.3, (p, n))
    scale = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(1, 20, n))
    w = rng.random(n)
    want = np.zeros((h, n))
    for i in range(n):
        sc = scale[i]
        hist = {}  # step offset (relative to clock) -> normalised z
        for b in range(1, Z + 1):
            zv = zring[(clock - b) % Z, i] if clock >= b else math.nan
            hist[-b] = 0.0 if (math.isnan(zv) or sc <= 0) else zv / sc
        mass = sum(abs(t) for t in theta[:, i])
        shrink = 0.98 / mass if mass > 0.98 else 1.0
        for j in range(h):
            zhat = shrink * sum(theta[m, i] * hist[j - lags[m]] for m in range(p))
            hist[j] = zhat
            base = ring[(clock + j) % L, i]
            base = last[i] if math.isnan(base) else base
            want[j, i] = w[i] * (base + zhat * sc)
    acc = np.zeros((h, n))
    rls_predict(clock, ring, last, lags_arr, theta, zring, scale, np.empty((Z + h, n)), w, acc)
    close(acc, want)
    assert np.all(np.isfinite(acc))  # shrinking keeps even explosive fits bounded


# ---------------------------------------------------------------------------- selection
@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), decay=st.floats(0.5, 0.999))
def test_track_reported_matches_twin(seed, n, decay):
    rng = np.random.default_rng(seed)
    y = values(rng, n)
    rep = rng.normal(50, 20, n)
    rep[rng.random(n) < 0.5] = np.nan
    rs, rw = rng.uniform(0, 50, n), rng.uniform(0, 5, n)
    n_obs = rng.integers(0, 10, n).astype(np.int64)
    want_rs, want_rw = score_twin(rs, rw, y, rep, decay)
    want_obs = n_obs + ~np.isnan(y)
    track_reported(y, decay, rep, rs, rw, n_obs)
    close(rs, want_rs)
    close(rw, want_rw)
    close(n_obs, want_obs)


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), M=st.integers(1, 5),
       combine=st.booleans())
def test_model_weights_match_twin(seed, n, M, combine):
    rng = np.random.default_rng(seed)
    es = rng.uniform(0, 50, (M, n))
    ew = rng.uniform(0, 6, (M, n))
    allowed = rng.random(M) < 0.8
    min_wt = 3.0
    weights = np.empty((M, n))
    best = np.empty(n, dtype=np.int64)
    borrowed = np.where(rng.random(n) < 0.5, 2, 0).astype(np.int64)
    model_weights(es, ew, min_wt, allowed, combine, borrowed, weights, best)
    for i in range(n):
        scored = {m: max(es[m, i] / ew[m, i], 1e-12) for m in range(M)
                  if allowed[m] and ew[m, i] >= min_wt}
        fallback = 1 if (M > 2 and allowed[1] and borrowed[i]) else 0
        b = min(scored, key=lambda m: (scored[m], m)) if scored else fallback
        assert best[i] == b
        if combine and scored:
            inv = {m: 1 / e**2 for m, e in scored.items()}
            want = [inv.get(m, 0.0) / sum(inv.values()) for m in range(M)]
        else:
            want = [1.0 if m == b else 0.0 for m in range(M)]
        close(weights[:, i], want)
        assert math.isclose(weights[:, i].sum(), 1.0)


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), h=st.integers(1, 4))
def test_blend_reported_matches_twin(seed, n, h):
    rng = np.random.default_rng(seed)
    M = 3
    acc = rng.normal(100, 10, (h, n))
    best = rng.integers(0, M, n).astype(np.int64)
    es, ew = rng.uniform(0, 50, (M, n)), rng.uniform(0, 6, (M, n))
    ew[rng.random((M, n)) < 0.2] = 0.0
    rep = rng.normal(100, 10, n)
    rep[rng.random(n) < 0.3] = np.nan
    rs, rw = rng.uniform(0, 50, n), rng.uniform(0, 6, n)
    want = acc.copy()
    for i in range(n):
        if math.isnan(rep[i]) or rw[i] < 3.0:
            continue
        b = best[i]
        if ew[b, i] <= 0:
            w = 1.0
        else:
            em, er = es[b, i] / ew[b, i], rs[i] / rw[i]
            w = 0.5 if em * em + er * er <= 0 else em * em / (em * em + er * er)
        want[0, i] = w * rep[i] + (1 - w) * acc[0, i]
    blend_reported(acc, best, es, ew, rep, rs, rw, 3.0)
    close(acc, want)
