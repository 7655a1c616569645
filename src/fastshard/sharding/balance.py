"""The load-moving rules of a round: overload relief, retiring surplus shards, rebalancing.

* :func:`relieve_overload` - a shard predicted over its high-water mark (or whose upper
  bound crosses capacity while its point forecast is near it) sheds the least that brings it
  back, plus a margin: to the coldest shard that can take it all, else into a new shard
  (shards created earlier in the round are filled before another is made; one that gets less
  than half its share ends the shard's relief for the round);
* :func:`retire_surplus` - when the others could carry the load at most ``retire_below`` x
  capacity on average, the shard with the fewest keys is emptied into the coldest ones (over
  several rounds if the movement budget requires; it takes no new load meanwhile);
* :func:`rebalance` - Slicer-style greedy: the hottest shard gives the coldest the keys that
  best close the gap toward the mean of the *expected* next-interval load, repeatedly,
  until every shard is within ``imbalance_tolerance`` of the mean or the budget is spent.

Shards are sized by load; keys are chosen by :func:`fastshard.sharding.cuts.select` (heavy
keys first when that moves fewer keys), so the shard count can follow the load up and down
within the per-round movement budget.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from fastshard.sharding.cuts import Window, _window, select
from fastshard.sharding.plan import HASH_SPACE
from fastshard.sharding.rules import Round


def relieve_overload(r: Round) -> None:
    cfg = r.cfg
    cap = np.maximum(r.capacity, 1e-12)
    p, u, meas = r.shard_point, r.shard_upper, r.shard_measured
    by_point = p > cfg.high_water * cap
    by_upper = (u > cap) & (p > cfg.guard_point * cap)
    ok = r.alive & ~r.failed & ~r.single
    if meas is None:
        now = by_point | by_upper
        over = now
    else:
        # what the measurement alone calls for, and what the forecast adds: acting ahead of
        # the load needs a forecast of a real overload (the point forecast above
        # act_ahead_above x capacity, or the upper bound above capacity while the point
        # forecast is near it), not merely of a busy shard
        now = meas > cfg.high_water * cap
        over = now | (p > cfg.act_ahead_above * cap) | by_upper
    over &= ok
    cand = over.copy()
    live = r.alive & ~r.failed
    mean = float(p[live].sum() / max(int(live.sum()), 1))
    if cfg.split_above_mean is not None and mean > 0:
        cand |= (p > cfg.split_above_mean * mean) & ok
    urgency = np.maximum(p / (cfg.high_water * cap), u / cap)
    # receivers by fill, coldest first (entries go stale as loads move; checked when popped)
    idx = np.flatnonzero(r.receivers())
    coldest = list(zip((u[idx] / cap[idx]).tolist(), idx.tolist(), strict=True))
    heapq.heapify(coldest)
    for s in np.flatnonzero(cand)[np.argsort(-urgency[cand], kind="stable")]:
        s = int(s)
        c, ps, us = float(cap[s]), float(p[s]), float(u[s])
        per_point = us / ps if ps > 0 else 1.0  # upper-bound load per unit of point load
        if over[s]:
            # the least that must move (in upper-bound units, what actions carry): the
            # expected load back under the high-water mark and, when the guard fired, the
            # upper bound under capacity
            need = max((ps - cfg.high_water * c) * per_point, (us - c) if by_upper[s] else 0.0, 0.0)
            want = need * (1.0 + cfg.shed_margin)
        else:  # over only by the mean rule: come back to the mean
            need, want = 0.0, (ps - mean) * per_point
        if want <= 0:
            continue
        pro = bool(over[s] and meas is not None and not now[s])
        reason = f"predicted at {us / c:.0%} of capacity (expected {ps / c:.0%})"
        moved = _shed(r, s, need, want, pro, reason, coldest)
        if moved > 0 and over[s]:
            # overload relief, scored against the minimum (``moved_vs_min``); a mean-rule
            # move of a shard under its high-water mark is rebalancing, not relief
            r.min_needed += need
            r.relief_load += moved


def _shed(r: Round, s: int, need: float, want: float, proactive: bool, reason: str,
          coldest: list[tuple[float, int]]) -> float:
    """Move about ``want`` (at least ``need`` when keys allow) off shard ``s``: to the coldest
    shard that stays under ``target_fill`` with all of it, else into new shards. Returns the
    upper-bound load moved. ``coldest``: a heap of (fill, shard) of the receivers."""
    cfg = r.cfg
    moved = 0.0
    while moved < need * 0.999 or moved <= 0:
        rest_want = want - moved
        if rest_want <= 0 or r.budget_left() <= 0:
            if r.budget_left() <= 0:
                r.skip(r.budget_reason())
            break
        t = _coldest_with_room(r, s, rest_want, coldest)
        kind = "resize"
        if t >= 0:
            room_t = cfg.target_fill * float(r.capacity[t]) - float(r.shard_upper[t])
            if r.created[t]:
                kind = "split"
        else:
            if r.n_shards >= cfg.max_shards:
                r.skip("max_shards reached")
                break
            t = r.add_shard("split", r.least_loaded_node())
            if t < 0:
                break
            kind = "split"
            # more than one new shard's worth: split it evenly over as many new shards as
            # it takes, rather than filling each to the brim and leaving the last one light
            full = cfg.target_fill * float(r.capacity[t])
            room_t = rest_want / math.ceil(rest_want / full - 1e-9) if rest_want > full else full
        take = min(rest_want, room_t)
        # at least what is still needed, as near the wanted amount as the keys allow (a heavy
        # key may overshoot it, within the receiver's room); else what fits short of it
        rest_need = max(need - moved, 0.0)
        wins = select(r, s, take, room_t, unit="upper", floor=min(rest_need, take)) if rest_need > 0 else []
        if not wins:
            ceiling = min(room_t, max(take, rest_need * (1.0 + 2.0 * cfg.shed_margin)))
            wins = select(r, s, take, ceiling, unit="upper")
        if not wins:
            if r.created[t] and not _has_load(r, t):
                _drop_empty(r, t)
            break
        got = 0.0
        for w in wins:
            r.move(s, t, w, kind, reason + (f"; {r.names[t]} has room" if kind == "resize" else ""),
                   proactive=proactive)
            got += w.upper
        moved += got
        heapq.heappush(coldest, (float(r.shard_upper[t] / max(r.capacity[t], 1e-12)), t))
        if r.created[t] and got < 0.5 * take:
            # the ranges left are too heavy to cut near the wanted amount: a further new
            # shard would get as little (a steep ramp once made 41 nearly empty shards at once)
            break
    return moved


def _coldest_with_room(r: Round, s: int, want: float, coldest: list[tuple[float, int]]) -> int:
    """The coldest receiver other than ``s`` with room for ``want`` under ``target_fill``
    (among the 8 coldest: with equal capacities the coldest has the most room), or -1."""
    popped: list[int] = []
    found = -1
    while coldest and len(popped) < 8:
        f, x = heapq.heappop(coldest)
        if not (r.alive[x] and not r.failed[x] and not r.retiring[x] and not r.single[x]
                and r.capacity[x] > 0):
            continue
        cur = float(r.shard_upper[x] / r.capacity[x])
        if f != cur:
            heapq.heappush(coldest, (cur, x))
            continue
        popped.append(x)
        if x != s and r.cfg.target_fill * float(r.capacity[x]) - float(r.shard_upper[x]) >= want:
            found = x
            break
    for x in popped:
        heapq.heappush(coldest, (float(r.shard_upper[x] / r.capacity[x]), x))
    return found


def _has_load(r: Round, t: int) -> bool:
    return bool(r.shard_upper[t] > 0 or r.shard_point[t] > 0)


def _drop_empty(r: Round, t: int) -> None:
    """A shard created this round that received nothing is not created after all."""
    if t == r.n_total - 1:
        r.alive[t] = r.created[t] = r.single[t] = False
        r.n_total -= 1
        r.names.pop()


#: a retirement may spend this share of the round's movement budget; the rest stays for
#: rebalancing, so the shards that remain do not drift apart while one empties
RETIRE_BUDGET_SHARE = 2.0 / 3.0
#: rebalancing stops after this many hot shards in a row had nothing that fits (a map cut
#: finer than the cut grid, or shards made of a single heavy range): it would only cost time
MAX_REBALANCE_MISSES = 64


def retire_surplus(r: Round, scale_cooldown: bool) -> None:
    """Scale down: while the other shards could carry the load, empty shards into them,
    cheapest (fewest keys) first - a shard a previous round began to empty included - as
    long as the budget lasts, so the shard count follows a falling load within hours."""
    cfg = r.cfg
    if any(getattr(a, "kind", "") == "split" for a in r.actions):
        r.retiring[:] = False  # load is growing: no shard is retired in the same round
        return
    if scale_cooldown and not r.retiring.any():
        r.skip("cooldown")
        return
    tried = np.zeros(len(r.alive), dtype=bool)
    while r.budget_left() > cfg.max_move_fraction * (1.0 - RETIRE_BUDGET_SHARE):
        pool = r.alive & ~r.failed & ~r.single
        # a shard that gave or took load earlier in this round is not retired in it
        eligible = pool & ~tried & (r.retiring | (~r.created & ~r.cooling & ~r.touched & ~scale_cooldown))
        if int(pool.sum()) < 2 or not eligible.any():
            break
        idx = np.flatnonzero(eligible)
        keys = np.array([_key_count(r, int(x)) for x in idx])
        # a shard already being emptied first, then the one with the fewest keys
        x = int(idx[np.lexsort((r.shard_upper[idx], keys, ~r.retiring[idx]))[0]])
        tried[x] = True
        if not _retire_fits(r, pool, x):
            r.retiring[x] = False  # (the load came back: a shard being emptied is kept)
            continue
        r.retiring[x] = True
        _empty(r, x)
        if r.alive[x]:
            break  # one shard at a time: the next starts once this one is gone
    r.retiring &= r.alive


def _lightest_unit(r: Round, s: int) -> float:
    """The smallest expected load of a free unit of ``s`` (0 without a key sample: the
    uniform cut can take any share of a slice)."""
    ki = r.keys
    if ki is None or not ki.n:
        return 0.0
    load = ki.expected[ki.free_units_of(s)]
    load = load[load > 0]
    return float(load.min()) if load.size else float("inf")


def _retire_fits(r: Round, pool: np.ndarray, x: int) -> bool:
    """Would the other shards of ``pool`` carry the predicted upper bound at
    ``retire_below`` x their capacity on average without shard ``x``?"""
    rest_cap = float(r.capacity[pool].sum() - r.capacity[x])
    total = float(r.shard_upper[pool].sum())
    return rest_cap > 0 and total <= r.cfg.retire_below * rest_cap and r.n_shards > r.cfg.min_shards


def _key_count(r: Round, s: int) -> float:
    """Sampled keys shard ``s`` owned at the start of the round (its hash-space share
    without a sample)."""
    if r.keys is not None and r.keys.n:
        if r.key_counts is None:
            r.key_counts = np.bincount(r.keys.shard, minlength=len(r.alive)).astype(np.float64)
        return float(r.key_counts[s])
    return float(r.shard_width[s])


def _empty(r: Round, x: int) -> None:
    """Hand shard ``x``'s ranges to others within the budget; ``x`` disappears once it owns
    nothing, possibly rounds later. While keys remain to move, the coldest ranges (fewest
    load per key) go first, to the base shards: the shard keeps carrying its share of the
    load until its last round (a half-emptied shard far below the others would drag the
    mean down for several rounds); the last round hands over whole slices, each to the
    coldest shard with room."""
    cfg = r.cfg
    reserve = cfg.max_move_fraction * (1.0 - RETIRE_BUDGET_SHARE)
    avail = r.budget_left() - reserve
    if avail <= 0 or r.budgeted >= RETIRE_BUDGET_SHARE * cfg.max_actions:
        r.skip(r.budget_reason())
        return
    reason = f"retiring {r.names[x]}: the other shards can carry the load"
    slices = [int(i) for i in r.slices_of(x)]
    if r.shard_key_share(x) <= avail and len(slices) <= cfg.max_actions - r.budgeted:
        moved = 0
        for i in sorted(slices, key=lambda j: -float(r.upper[j])):
            if r.used_slice[i] or (r.keys is not None and r.keys.unit_claimed[r.keys.units_in_slice(i)].any()):
                continue
            room = cfg.target_fill * r.capacity - r.shard_upper
            recv = r.receivers()
            recv[x] = False
            if not recv.any():
                return
            ok = recv & (room >= float(r.upper[i]))
            pick = ok if ok.any() else recv
            fill = r.shard_upper / np.maximum(r.capacity, 1e-12)
            t = int(np.flatnonzero(pick)[np.argmin(fill[pick])])
            w = _prefix(r, i, float("inf"), 1.0)
            if w is None:
                continue
            r.move(x, t, w, "merge", reason)
            r.used_slice[i] = True
            moved += 1
        if moved == len(slices):
            r.alive[x] = False
        return
    base = _base_receiver(r, x)
    if base < 0:
        r.skip("no shard has room")
        return
    ki = r.keys
    if ki is None or not ki.n:
        for i in slices:  # without a sample: hash-order prefixes
            avail = r.budget_left() - reserve
            if avail <= 0:
                r.skip(r.budget_reason())
                return
            room = cfg.target_fill * float(r.capacity[base]) - float(r.shard_upper[base])
            w = _prefix(r, i, room, avail) if room > 0 else None
            if w is not None:
                r.move(x, base, w, "merge", reason)
        return
    # whole slices first, the coldest (least load per key) first: one range each
    room = cfg.target_fill * float(r.capacity[base]) - float(r.shard_upper[base])
    budget_actions = int(RETIRE_BUDGET_SHARE * cfg.max_actions) - r.budgeted
    free_slices = [i for i in slices if not r.used_slice[i] and not ki.unit_claimed[ki.units_in_slice(i)].any()]
    dens = {i: float(r.upper[i]) / max(float(ki.unit_keys[ki.units_in_slice(i)].sum()), 1.0) for i in free_slices}
    for i in sorted(free_slices, key=lambda j: dens[j]):
        avail = r.budget_left() - reserve
        if budget_actions <= 0 or avail <= 0:
            return
        w = _prefix(r, i, room, avail)
        if w is None or (w.lo, w.hi) != (r.view.starts[i], r.view.ends[i]):
            continue
        r.move(x, base, w, "merge", reason)
        r.used_slice[i] = True
        room -= w.upper
        budget_actions -= 1
    # then the coldest units of what remains
    units = ki.free_units_of(x)
    avail = r.budget_left() - reserve
    if not units.size or avail <= 0 or budget_actions <= 0:
        return
    share = np.maximum((ki.unit_hi_f[units] - ki.unit_lo_f[units]) / HASH_SPACE, ki.unit_keys[units] / ki.n)
    density = ki.upper[units] / np.maximum(ki.unit_keys[units], 1)
    order = np.argsort(density, kind="stable")
    cum_share = np.cumsum(share[order])
    cum_load = np.cumsum(ki.upper[units][order])
    k = int(min(np.searchsorted(cum_share, avail * (1 + 1e-12), side="right"),
                np.searchsorted(cum_load, max(room, 0.0) * (1 + 1e-12), side="right")))
    if k < 1:
        return
    chosen = np.sort(units[order[:k]])
    cuts = ki.runs(chosen)
    for a, b in list(zip(cuts[:-1], cuts[1:], strict=True))[:budget_actions]:
        r.move(x, base, _window(ki, chosen[a:b]), "merge", reason)


def _base_receiver(r: Round, x: int) -> int:
    """The base shard to take a retiring shard's cold ranges: of the ``min_shards`` shards
    holding the most keys, the one with fewer keys. Cold keys gather there (the shards that
    carry heavy keys stay cheap to retire) and the base shards hold similar numbers of keys
    (a shift in which keys are popular then lands evenly on them). -1: no shard has room."""
    room = r.cfg.target_fill * r.capacity - r.shard_upper
    recv = r.receivers() & (room > 0)
    recv[x] = False
    if not recv.any():
        return -1
    idx = np.flatnonzero(recv)
    counts = np.array([_key_count(r, int(j)) for j in idx])
    base = idx[np.argsort(-counts, kind="stable")[: max(r.cfg.min_shards, 1)]]
    return int(min(base, key=lambda j: _key_count(r, int(j))))


def _prefix(r: Round, i: int, max_load: float, max_share: float) -> Window | None:
    """The longest prefix ``[start, cut)`` of slice ``i`` carrying at most ``max_load``
    (upper bound) and at most ``max_share`` of the keys, stopping before any key another
    action of this round moves; the whole slice when everything fits."""
    v = r.view
    lo, hi = v.starts[i], v.ends[i]
    width = (hi - lo) / HASH_SPACE
    ki = r.keys
    ui = float(r.upper[i])
    if ki is not None and ki.slice_weighted[i]:
        units = ki.units_in_slice(i)
        stop = np.flatnonzero(ki.unit_claimed[units])
        clean = stop.size == 0
        if not clean:
            units = units[: stop[0]]
        if not units.size:
            return None
        cum = np.cumsum(ki.upper[units])
        share = np.maximum((ki.unit_hi_f[units] - lo) / HASH_SPACE, np.cumsum(ki.unit_keys[units]) / ki.n)
        k = int(min(np.searchsorted(cum, max_load * (1 + 1e-12), side="right"),
                    np.searchsorted(share, max_share * (1 + 1e-12), side="right")))
        keys = int(ki.unit_keys[units].sum())
        if clean and k == units.size and ui <= max_load and max(width, keys / ki.n) <= max_share:
            return Window(lo, hi, keys, float(r.point[i]), ui, float(r.expected[i]), i, units)
        if k < 1:
            return None
        sel = units[:k]
        return Window(lo, ki.unit_hi(int(sel[-1])), int(ki.unit_keys[sel].sum()), float(ki.point[sel].sum()),
                      float(ki.upper[sel].sum()), float(ki.expected[sel].sum()), i, sel)
    if r.used_slice[i]:
        return None
    frac = min(1.0, max_load / ui if ui > 0 else 1.0, max_share / width if width > 0 else 1.0)
    n = hi - lo if frac >= 1.0 else int((hi - lo) * frac)
    if n < 1:
        return None
    f = n / (hi - lo)
    return Window(lo, lo + n, 0, f * float(r.point[i]), f * ui, f * float(r.expected[i]), i)


def rebalance(r: Round) -> None:
    """Greedy hot-to-cold on the expected next-interval load, several moves per shard.

    The mean is over the shards that can trade load (a single-key shard cannot: its load is
    its key's). A move must lower the pair's peak by ``min_rebalance_gain`` x the mean, and
    may not push the receiver's point forecast over its high-water mark (or its upper bound
    over capacity) unless the giver was even higher: else the next round would shed it back.
    """
    cfg = r.cfg
    tol = cfg.imbalance_tolerance or 0.0
    # a shard being retired gives its load away: it is not part of the level the others meet
    pool = r.alive & ~r.failed & ~r.single & ~r.retiring
    n = int(pool.sum())
    if n < 2:
        return
    e, p, u = r.shard_expected, r.shard_point, r.shard_upper
    mean = float(e[pool].sum() / n)
    if mean <= 0:
        return
    cap = np.maximum(r.capacity, 1e-12)
    min_gain = cfg.min_rebalance_gain * mean
    high = (1 + tol) * mean
    # hottest givers and coldest receivers in two heaps (entries go stale when a move
    # changes a shard's load; they are checked and re-pushed when popped): a round over
    # 10,000 shards costs O(moves log shards), not O(moves x shards)
    gi = np.flatnonzero(pool & (e > high))
    givers = list(zip((-e[gi]).tolist(), gi.tolist(), strict=True))
    ci = np.flatnonzero(r.receivers() & pool & (e < mean))
    colds = list(zip(e[ci].tolist(), ci.tolist(), strict=True))
    heapq.heapify(givers)
    heapq.heapify(colds)
    failures = 0
    for _ in range(cfg.max_actions + n):
        if not givers:
            return
        if failures >= MAX_REBALANCE_MISSES:
            r.skip("rebalance stopped: nothing fits")
            return
        if r.budget_left() <= 0:
            r.skip(r.budget_reason())
            return
        neg, s = heapq.heappop(givers)
        if -neg != float(e[s]):
            if e[s] > high:
                heapq.heappush(givers, (-float(e[s]), s))
            continue
        cand: list[int] = []
        while colds and len(cand) < 4:
            et, t = heapq.heappop(colds)
            if et != float(e[t]):
                if e[t] < mean:
                    heapq.heappush(colds, (float(e[t]), t))
                continue
            if t != s and e[t] < mean:
                cand.append(t)
        moved_any = False
        if cand and _lightest_unit(r, s) > 0.9 * float(e[s] - min(e[t] for t in cand)):
            cand_try: list[int] = []  # every range of s alone overshoots even the coldest
        else:
            cand_try = cand
        for t in cand_try:
            es, et = float(e[s]), float(e[t])
            want, ceiling = min(es - mean, mean - et), 0.9 * (es - et)
            if ceiling <= min_gain:
                break
            p_room = max(cfg.high_water * float(cap[t]) - float(p[t]), 0.9 * float(p[s] - p[t]))
            u_room = max(float(cap[t] - u[t]), 0.9 * float(u[s] - u[t]))
            wins: list[Window] = []
            wp = wu = we = 0.0
            for w in select(r, s, want, ceiling, unit="expected"):
                if wp + w.point <= p_room and wu + w.upper <= u_room:
                    wins.append(w)
                    wp, wu, we = wp + w.point, wu + w.upper, we + w.expected
            if not wins or es - max(es - we, et + we) < min_gain:
                continue
            reason = f"shard at {es / mean:.2f}x the mean expected load; {r.names[t]} at {et / mean:.2f}x"
            for w in wins:
                r.move(s, t, w, "resize", reason)
            moved_any = True
            break
        for t in cand:
            if e[t] < mean:
                heapq.heappush(colds, (float(e[t]), t))
        if moved_any:
            failures = 0
            if e[s] > high:
                heapq.heappush(givers, (-float(e[s]), s))
        else:
            failures += 1  # nothing of this shard fits anywhere: it is not tried again
