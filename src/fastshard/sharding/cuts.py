"""Where to cut: the hash range of one shard that carries a wanted amount of load.

Load inside a shard is lumpy (a few Zipf-heavy keys carry most of it), so "move the top 30%
of the hash range" can move far more or far less load than wanted. With a key sample
(``key_hashes`` / ``key_load``) :func:`best_window` searches every contiguous run of sampled
keys inside one slice of the shard for the run whose load is closest to the wanted amount
without exceeding a ceiling (vectorised: one ``searchsorted`` per slice), so a rebalance or a
shed moves about what it means to, often a single heavy key. Without a sample, load is taken
as uniform over a slice's hash range (hashing spreads keys evenly) and the cut is taken at
the top of the heaviest slice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastshard.sharding.plan import HASH_SPACE

if TYPE_CHECKING:
    from fastshard.sharding.rules import Round


def best_window(r: Round, s: int, want: float, ceiling: float, *,
                floor: float = 0.0) -> tuple[int, int, int, float] | None:
    """``(slice, lo, hi, share)``: the hash range ``[lo, hi)`` inside one slice of shard
    ``s`` whose predicted (upper-bound) load ``share * upper[slice]`` is closest to ``want``,
    at least ``floor`` and at most ``ceiling``, within the movement budget. None when
    nothing fits."""
    if want <= 0 or ceiling <= 0 or ceiling < floor or r.budget_left() <= 0:
        return None
    if r.sample is None:
        return _uniform_window(r, s, max(want, floor), ceiling)
    hs, cw = r.sample
    keys = r.sample_keys
    n_keys = keys.size if keys is not None else 0
    budget_keys = int(r.budget_left() * n_keys) if n_keys else 1 << 62
    v = r.view
    best: tuple[float, int, int, int, int, float] | None = None  # score, keys, slice, a, b, share
    for i in r.slices_of(s):
        i = int(i)
        ui = float(r.upper[i])
        if ui <= 0:
            continue
        lo = int(np.searchsorted(hs, np.uint64(v.starts[i]), side="left"))
        hi = int(np.searchsorted(hs, np.uint64(v.ends[i] - 1), side="right"))
        tot = float(cw[hi] - cw[lo])
        if hi <= lo or tot <= 0:
            continue
        c = cw[lo : hi + 1] - cw[lo]  # local cumulative load, c[0] == 0
        scale = ui / tot  # sampled load -> predicted load of this slice
        want_w, ceil_w, floor_w = want / scale, ceiling / scale, floor / scale
        n = hi - lo
        starts = np.arange(n)
        # first end b with c[b] - c[a] >= want: the run [a, b) and the one a key shorter
        b_hi = np.minimum(np.searchsorted(c, c[starts] + want_w, side="left"), n)
        for b in (b_hi, np.maximum(b_hi - 1, starts + 1)):
            w = c[b] - c[starts]
            ok = (w > 0) & (w >= floor_w) & (w <= ceil_w) & (b - starts <= budget_keys)
            if not ok.any():
                continue
            score = np.where(ok, np.abs(w - want_w), np.inf)
            a = int(np.argmin(score))
            cand = (float(score[a]) * scale, int(b[a] - a), i, lo + a, lo + int(b[a]), float(w[a] / tot))
            if best is None or cand[:2] < best[:2]:
                best = cand
    if best is None:
        r.skip("no cut between sampled keys fits")
        return None
    _, _, i, a, b, share = best
    lo_h, hi_h = int(hs[a]), int(hs[b - 1]) + 1
    if r.key_share(lo_h, hi_h) > r.budget_left():
        r.skip(r.budget_reason())
        return None
    return i, lo_h, hi_h, share


def _uniform_window(r: Round, s: int, want: float, ceiling: float) -> tuple[int, int, int, float] | None:
    """Without a key sample: the top part of the heaviest slice, load taken as uniform."""
    idx = r.slices_of(s)
    if not len(idx):
        return None
    i = int(idx[np.argmax(r.upper[idx])])
    ui = float(r.upper[i])
    start, end = r.view.starts[i], r.view.ends[i]
    if ui <= 0 or end - start < 2:
        return None
    share = min(want, ceiling, ui) / ui
    n = min(max(int((end - start) * share), 1), end - start - 1, int(r.budget_left() * HASH_SPACE))
    if n < 1:
        r.skip(r.budget_reason())
        return None
    share = n / (end - start)
    if share * ui > ceiling:
        return None
    return i, end - n, end, share
