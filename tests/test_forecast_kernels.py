"""Each Numba kernel of fastshard.forecast against a plain-Python twin written from the math.

The twins work one series at a time with scalars and small lists, the way the models are
written on paper, in float64; the kernels work step-major over all series with branch-free
loops, and keep the states that only accumulate in float32 -- those are compared to a
float32-sized tolerance. Small sizes keep the JIT and the run cheap; hypothesis explores
shapes, seasons, missing values, warm-up and steady-state counts.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard.forecast._holtwinters import hw_cycle_init, hw_predict, hw_update
from fastshard.forecast._naive import F32_MAX, naive_predict, naive_step, to_float32
from fastshard.forecast._rls import packed_size, rls_predict, rls_update
from fastshard.forecast._select import blend_reported, model_weights, track_reported
from fastshard.forecast._state import TINY

SEASONS = [(), (3,), (4,), (2, 5), (3, 7)]
EXAMPLES = settings(max_examples=150, deadline=None)


F32_TOL = 1e-4  # float32 state vs a float64 twin: ~7 significant digits, values up to ~1e3


def f32(a):
    return np.asarray(a, dtype=np.float32)


def close(a, b, tol=1e-9):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    both_nan = np.isnan(a) & np.isnan(b)
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    np.testing.assert_allclose(a[~both_nan], b[~both_nan], rtol=tol, atol=tol)


def values(rng, n, nan_rate=0.25, scale=100.0):
    """Float32-representable values (the kernels see them rounded to float32)."""
    y = rng.gamma(2.0, scale / 2, size=n).astype(np.float32).astype(np.float64)
    y[rng.random(n) < nan_rate] = np.nan
    return y


@EXAMPLES
@given(data=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                               st.floats(-1e-37, 1e-37)), min_size=0, max_size=12))
def test_to_float32_counts_out_of_range_and_rounds(data):
    y = np.asarray(data, dtype=np.float64)
    out = np.empty(len(y), dtype=np.float32)
    bad = to_float32(y, out)
    assert bad == sum(1 for v in data if not math.isnan(v) and abs(v) > F32_MAX)
    ok = (np.abs(y) <= F32_MAX) & (np.abs(y) >= TINY)
    np.testing.assert_array_equal(out[ok], y[ok].astype(np.float32))
    assert (out[np.abs(y) < TINY] == 0).all()  # no subnormal ever enters the state
    assert np.isnan(out[np.isnan(y)]).all()


# ---------------------------------------------------------------------------- seasonal naive
def naive_twin_predict(ring, last, clock, h):
    L, n = ring.shape
    out = np.empty((h, n))
    for i in range(n):
        for j in range(h):
            v = ring[(clock + j) % L, i]
            out[j, i] = last[i] if math.isnan(v) else v
    return out


def flush(v):
    """Decaying state below the smallest normal float32 becomes 0 (no subnormals)."""
    return v if abs(v) >= TINY else 0.0


def score_twin(es, ew, y, f, decay):
    """Decayed sums of |error| and weight; unchanged where the value or forecast is missing."""
    es, ew = es.copy(), ew.copy()
    for i in range(len(y)):
        if not (math.isnan(y[i]) or math.isnan(f[i])):
            es[i] = flush(decay * es[i] + abs(y[i] - f[i]))
            ew[i] = decay * ew[i] + 1
    return es, ew


def recent_twin(er, y, f, recent):
    """The short-memory mean |error|: an EWMA, unchanged where value or forecast is missing."""
    er = er.copy()
    for i in range(len(y)):
        if not (math.isnan(y[i]) or math.isnan(f[i])):
            er[i] = flush(recent * er[i] + (1 - recent) * abs(y[i] - f[i]))
    return er


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), L=st.integers(1, 6), n=st.integers(1, 4),
       steps=st.integers(0, 20), h=st.integers(1, 9), decay=st.floats(0.5, 0.999),
       recent=st.floats(0.1, 0.99))
def test_naive_kernels_match_twin(seed, L, n, steps, h, decay, recent):
    rng = np.random.default_rng(seed)
    ring = f32(np.full((L, n), np.nan))
    last = f32(np.full(n, np.nan))
    es, ew, er = f32(np.zeros(n)), f32(np.zeros(n)), f32(np.zeros(n))
    n_obs = np.zeros(n, dtype=np.int64)
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
        want_es, want_ew = score_twin(es.astype(float), ew.astype(float), y, want_f, decay)
        want_er = recent_twin(er.astype(float), y, want_f, recent)
        want_obs = n_obs + ~np.isnan(y)
        low = naive_step(ring, last, clock, f32(y), n_obs, es, ew, er, decay, recent)
        close(es, want_es, F32_TOL)
        close(ew, want_ew, F32_TOL)
        close(er, want_er, F32_TOL)
        close(n_obs, want_obs)
        assert low == want_obs.min()
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
            trend[k, i] = flush(phi[k] * trend[k, i] + b * e)
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
       K=st.integers(1, 3), clock=st.integers(0, 50), steady=st.booleans(),
       exact_bound=st.booleans(), fixed_trend=st.booleans())
def test_hw_update_matches_twin(seed, seasons, n, K, clock, steady, exact_bound, fixed_trend):
    rng = np.random.default_rng(seed)
    L, off, alpha, beta, phi, gamma, level, trend, seas = hw_setup(rng, seasons, n, K)
    if fixed_trend:  # beta = 0, phi = 1: the steady path leaves the trend row unwritten
        beta[0], phi[0] = 0.0, 1.0
    if steady:  # every series past warm-up: the kernel takes its scalar-gain path
        n_obs = rng.integers(10_000, 20_000, n).astype(np.int64)
        prior = np.zeros(n, dtype=np.int64)
    else:
        n_obs = rng.integers(0, 30, n).astype(np.int64)
        prior = np.where(rng.random(n) < 0.3, 2, 0).astype(np.int64)
        zero = rng.random(n) < 0.4
        n_obs[zero] = 0
    y = values(rng, n)
    # the kernel keeps float32 state: start both from the same float32-representable values
    level, trend, seas = f32(level), f32(trend), f32(seas)
    es, er = f32(rng.uniform(0, 50, (K, n))), f32(rng.uniform(0, 50, (K, n)))
    want = hw_twin_update(y, clock, n_obs, prior, level.astype(float), trend.astype(float),
                          seas.astype(float), L, off, alpha, beta, phi, gamma)
    want_es = [score_twin(es[k].astype(float), np.zeros(n), y, want[3][k], 0.9)[0]
               for k in range(K)]
    want_er = [recent_twin(er[k].astype(float), y, want[3][k], 0.6) for k in range(K)]
    # any lower bound of n_obs is allowed (0 forces the warm-up path)
    bound = int(n_obs.min()) if exact_bound else 0
    hw_update(f32(y), clock, n_obs, prior, level, trend, seas, L, off, alpha, beta, phi, gamma,
              es, er, 0.9, 0.6, bound)
    for got, exp in zip((level, trend, seas), want[:3], strict=True):
        close(got, exp, F32_TOL)
    for k in range(K):
        close(es[k], want_es[k], F32_TOL)
        close(er[k], want_er[k], F32_TOL)


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), seasons=st.sampled_from(SEASONS), n=st.integers(1, 4),
       K=st.integers(1, 3), clock=st.integers(0, 50), h=st.integers(1, 16))
def test_hw_predict_matches_twin(seed, seasons, n, K, clock, h):
    rng = np.random.default_rng(seed)
    L, off, alpha, beta, phi, gamma, level, trend, seas = hw_setup(rng, seasons, n, K)
    level, trend, seas = f32(level), f32(trend), f32(seas)  # the stored precision
    k = int(rng.integers(0, K))
    w = rng.random(n)
    acc = rng.normal(size=(h, n))
    want = acc.copy()
    for i in range(n):
        for j in range(1, h + 1):
            damp = sum(phi[k] ** m for m in range(1, j + 1))
            f = float(level[k, i]) + damp * float(trend[k, i])
            f += sum(float(seas[k, off[s] + (clock + j - 1) % L[s], i]) for s in range(len(L)))
            want[j - 1, i] += w[i] * f
    hw_predict(k, clock, level, trend, seas, L, off, phi, w, acc)
    close(acc, want)


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), seasons=st.sampled_from([(3,), (2, 6), (3, 6)]),
       n=st.integers(1, 3), K=st.integers(1, 2), clock=st.integers(6, 40))
def test_hw_cycle_init_matches_classical_decomposition(seed, seasons, n, K, clock):
    rng = np.random.default_rng(seed)
    L, off, alpha, beta, phi, gamma, level, trend, seas = hw_setup(rng, seasons, n, K)
    level, trend, seas = f32(level), f32(trend), f32(seas)
    Lmax = int(L[-1])
    ring = f32(rng.normal(100, 20, (Lmax, n)))
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
    close(level, exp_level, F32_TOL)
    close(trend, exp_trend, F32_TOL)
    close(seas, exp_seas, F32_TOL)


# ---------------------------------------------------------------------------- RLS
def pack(P):
    """(p, p, n) symmetric -> the kernels' packed upper triangle (p (p + 1) / 2, n)."""
    p = P.shape[0]
    return np.stack([P[a, b] for a in range(p) for b in range(a, p)])


def unpack(Pp, p):
    P = np.empty((p, p, Pp.shape[1]))
    r = 0
    for a in range(p):
        for b in range(a, p):
            P[a, b] = P[b, a] = Pp[r]
            r += 1
    return P


def rls_twin_update(y, base_row, zpast, theta, P, scale, n_obs, lam, p0):
    """zpast[m][i]: z at step clock - lags[m] (NaN if unknown). Returns the new theta, P,
    scale, the one-step forecast made before the update (NaN if none) and the new z."""
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
        scale[i] = flush(sc + max(0.02, 1 / (n_obs[i] + 1)) * (abs(z) - sc) if sc > 0 else abs(z))
        if sc <= 0:
            continue
        e = z / sc - zhat
        Pi = P[:, :, i]
        px = Pi @ x
        d = lam + x @ px
        theta[:, i] += px / d * e
        Pn = Pi - np.outer(px, px) / d
        # forgetting inflates P only while that keeps every diagonal entry within p0
        P[:, :, i] = Pn / lam if np.diag(Pn).max() <= p0 * lam else Pn
    return theta, P, scale, f1, znew


def rls_state(rng, n, p):
    theta = rng.normal(0, 0.3, (p, n))
    A = rng.normal(size=(p, p, n))
    P = np.einsum("abi,cbi->aci", A, A) + np.eye(p)[:, :, None]  # symmetric positive definite
    scale = np.where(rng.random(n) < 0.25, 0.0, rng.uniform(1, 20, n))
    return theta, P, scale


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), L=st.integers(1, 6),
       lags=st.sampled_from([(1,), (1, 2), (1, 3), (2, 3, 5)]), clock=st.integers(0, 30),
       exact_bound=st.booleans(), p0=st.sampled_from([5.0, 1e6]))
def test_rls_update_matches_twin(seed, n, L, lags, clock, exact_bound, p0):
    rng = np.random.default_rng(seed)
    p = len(lags)
    Z = max(lags) + 1  # the kernels' ring of past z has one row more than the largest lag
    lags_arr = np.asarray(lags, dtype=np.int64)
    ring = f32(rng.normal(100, 30, (L, n)))
    ring[rng.random((L, n)) < 0.2] = np.nan
    zring = rng.normal(0, 10, (Z, n))
    zring[rng.random((Z, n)) < 0.2] = np.nan
    theta, P, scale = rls_state(rng, n, p)
    n_obs = rng.integers(0, 100, n).astype(np.int64)
    y = values(rng, n)
    zpast = [[zring[(clock - lag) % Z, i] if clock >= lag else math.nan for i in range(n)]
             for lag in lags]
    base_row = ring[clock % L].astype(float)
    lam = 0.99
    want = rls_twin_update(y, base_row, zpast, theta, P, scale, n_obs, lam, p0)
    work = np.empty((2 * p + 3, n))
    es, ew = f32(rng.uniform(0, 50, n)), f32(rng.uniform(0, 5, n))
    er = f32(rng.uniform(0, 50, n))
    want_es, want_ew = score_twin(es.astype(float), ew.astype(float), y, want[3], 0.8)
    want_er = recent_twin(er.astype(float), y, want[3], 0.5)
    Pp = pack(P)
    assert Pp.shape[0] == packed_size(p)
    zring_before = zring.copy()
    bound = int(n_obs.min()) if exact_bound else 0  # any lower bound of n_obs
    rls_update(y, ring, clock, n_obs, lags_arr, theta, Pp, zring, scale, lam, p0, work,
               es, ew, er, 0.8, 0.5, bound)
    close(theta, want[0])
    close(unpack(Pp, p), want[1])
    close(scale, want[2])
    close(zring[clock % Z], want[4])
    close(es, want_es, F32_TOL)
    close(ew, want_ew, F32_TOL)
    close(er, want_er, F32_TOL)
    others = np.arange(Z) != clock % Z  # only this step's row of past z is written
    np.testing.assert_array_equal(zring[others], zring_before[others])


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3), steps=st.integers(1, 60))
def test_rls_diagonal_stays_within_p0_without_excitation(seed, n, steps):
    """A series whose differences stop moving must not wind its covariance up."""
    rng = np.random.default_rng(seed)
    p0 = 4.0
    ring = f32(np.full((1, n), 50.0))
    zring = np.zeros((3, n))
    theta, P, scale = rls_state(rng, n, 2)
    P *= p0 / np.einsum("aai->ai", P).max(axis=0)[None, None, :]  # diagonal <= p0
    Pp = pack(P)
    es, ew = f32(np.zeros(n)), f32(np.zeros(n))
    lags = np.array([1, 2], dtype=np.int64)
    for clock in range(steps):
        rls_update(np.full(n, 50.0), ring, clock, np.full(n, 100, dtype=np.int64), lags, theta,
                   Pp, zring, scale, 0.9, p0, np.empty((7, n)), es, ew, es.copy(), 0.9, 0.5,
                   100)
        assert (Pp[0] <= p0).all() and (Pp[2] <= p0).all()
        assert (Pp[0] * Pp[2] - Pp[1] ** 2 > 0).all()  # still positive definite


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), L=st.integers(1, 6),
       lags=st.sampled_from([(1,), (1, 2), (2, 3, 5)]), clock=st.integers(0, 30),
       h=st.integers(1, 14), explosive=st.booleans())
def test_rls_predict_matches_twin(seed, n, L, lags, clock, h, explosive):
    rng = np.random.default_rng(seed)
    p, Z = len(lags), max(lags)
    lags_arr = np.asarray(lags, dtype=np.int64)
    ring = f32(rng.normal(100, 30, (L, n)))
    ring[rng.random((L, n)) < 0.2] = np.nan
    last = f32(rng.normal(100, 30, n))
    zring = rng.normal(0, 10, (Z + 1, n))
    zring[rng.random((Z + 1, n)) < 0.2] = np.nan
    theta = rng.normal(0, 2.0 if explosive else 0.3, (p, n))
    scale = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(1, 20, n))
    w = rng.random(n)
    want = np.zeros((h, n))
    for i in range(n):
        sc = scale[i]
        hist = {}  # step offset (relative to clock) -> normalised z
        for b in range(1, Z + 1):
            zv = zring[(clock - b) % (Z + 1), i] if clock >= b else math.nan
            hist[-b] = 0.0 if (math.isnan(zv) or sc <= 0) else zv / sc
        mass = sum(abs(t) for t in theta[:, i])
        shrink = 0.98 / mass if mass > 0.98 else 1.0
        for j in range(h):
            zhat = shrink * sum(theta[m, i] * hist[j - lags[m]] for m in range(p))
            hist[j] = zhat
            base = float(ring[(clock + j) % L, i])
            base = float(last[i]) if math.isnan(base) else base
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
    want_rs, want_rw = score_twin(rs, rw, y, rep, decay)
    track_reported(y, decay, rep, rs, rw)
    close(rs, want_rs)
    close(rw, want_rw)


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), M=st.integers(1, 5),
       combine=st.booleans())
def test_model_weights_match_twin(seed, n, M, combine):
    rng = np.random.default_rng(seed)
    er = f32(rng.uniform(0, 50, (M, n)))  # recent errors
    er[rng.random((M, n)) < 0.1] = 0.0  # a perfect record counts as an error of 1e-12
    ew = f32(rng.uniform(0, 6, (2, n)))  # track-record weights, rows shared between models
    wt_row = rng.integers(0, 2, M).astype(np.int64)
    allowed = rng.random(M) < 0.8
    min_wt = 3.0
    weights = np.empty((M, n))
    best = np.empty(n, dtype=np.int64)
    borrowed = np.where(rng.random(n) < 0.5, 2, 0).astype(np.int64)
    model_weights(er, ew, wt_row, min_wt, allowed, combine, borrowed, weights, best)
    for i in range(n):
        wt = [float(ew[wt_row[m], i]) for m in range(M)]
        scored = {m: max(float(er[m, i]), 1e-12) for m in range(M)
                  if allowed[m] and wt[m] >= min_wt}
        fallback = 1 if (M > 2 and allowed[1] and borrowed[i]) else 0
        b = min(scored, key=lambda m: (scored[m], m)) if scored else fallback
        assert best[i] == b
        if combine and scored:
            inv = {m: 1 / e**4 for m, e in scored.items()}
            want = [inv.get(m, 0.0) / sum(inv.values()) for m in range(M)]
        else:
            want = [1.0 if m == b else 0.0 for m in range(M)]
        close(weights[:, i], want, 1e-6)
        assert math.isclose(weights[:, i].sum(), 1.0)


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), h=st.integers(1, 4))
def test_blend_reported_matches_twin(seed, n, h):
    rng = np.random.default_rng(seed)
    M = 3
    acc = rng.normal(100, 10, (h, n))
    best = rng.integers(0, M, n).astype(np.int64)
    es, ew = f32(rng.uniform(0, 50, (M, n))), f32(rng.uniform(0, 6, (2, n)))
    ew[rng.random((2, n)) < 0.2] = 0.0
    wt_row = np.array([0, 0, 1], dtype=np.int64)  # as the Forecaster: the last model alone
    rep = rng.normal(100, 10, n)
    rep[rng.random(n) < 0.3] = np.nan
    rs, rw = rng.uniform(0, 50, n), rng.uniform(0, 6, n)
    want = acc.copy()
    for i in range(n):
        if math.isnan(rep[i]) or rw[i] < 3.0:
            continue
        b = best[i]
        wt = float(ew[wt_row[b], i])
        if wt <= 0:
            w = 1.0
        else:
            em, er = float(es[b, i]) / wt, rs[i] / rw[i]
            w = 0.5 if em * em + er * er <= 0 else em * em / (em * em + er * er)
        want[0, i] = w * rep[i] + (1 - w) * acc[0, i]
    blend_reported(acc, best, es, ew, wt_row, rep, rs, rw, 3.0)
    close(acc, want, 1e-6)
