"""The rules of one planning round, over the bookkeeping of :class:`Round`.

See :mod:`fastshard.sharding.planner` for the order in which they run and what each does.
Each rule reads and updates the same :class:`Round` (shard loads after the actions chosen so
far, which shards already changed, the movement budget left), so later rules see the effect
of earlier ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fastshard.sharding.cuts import best_window
from fastshard.sharding.plan import HASH_SPACE, Action, Merge, Move, Reassign

if TYPE_CHECKING:
    from fastshard.sharding.planner import MapView, PlannerConfig


class Round:
    """Mutable bookkeeping of one planning round (kept out of the public objects)."""

    def __init__(
        self,
        view: MapView,
        upper: np.ndarray,
        capacity: np.ndarray,
        config: PlannerConfig,
        cooling: np.ndarray,
        new_name: Callable[[str], str],
        measured: np.ndarray | None,
        point: np.ndarray | None = None,
    ) -> None:
        m = len(view.shards)
        self.view, self.cfg, self.new_name = view, config, new_name
        self.upper, self.capacity = upper, capacity
        # the point forecast (the expected load) sizes moves and balances shards; the upper
        # bound only guards against overload
        self.point = upper if point is None else point
        self.shard_upper = np.bincount(view.slice_shard, weights=upper, minlength=m)
        self.shard_point = np.bincount(view.slice_shard, weights=self.point, minlength=m)
        self.shard_width = np.bincount(view.slice_shard, weights=view.widths, minlength=m)
        self.shard_measured = (
            np.bincount(view.slice_shard, weights=measured, minlength=m)
            if measured is not None
            else None
        )
        self.node_load = np.bincount(
            view.shard_node, weights=self.shard_upper, minlength=len(view.nodes)
        ).astype(np.float64)
        # slices grouped by shard, each group in hash order (a stable sort keeps slice order)
        self._order = np.argsort(view.slice_shard, kind="stable")
        self._bounds = np.concatenate(([0], np.cumsum(np.bincount(view.slice_shard, minlength=m))))
        self.cooling = np.asarray(cooling, dtype=bool)
        self.changed = np.zeros(m, dtype=bool)  # already part of an action this round
        self.failed = np.zeros(m, dtype=bool)  # set by drain_failed
        self.actions: list[Action] = []
        self.moved_fraction = self.moved_load = self.relief_load = self.min_needed = 0.0
        self.skipped: dict[str, int] = {}
        self.n_shards = m
        self.sample: tuple[np.ndarray, np.ndarray] | None = None  # sorted hashes, cumulative load
        self.budgeted = 0  # actions that count against max_actions
        self.sample_keys: np.ndarray | None = None  # sorted distinct sampled key hashes

    def slices_of(self, s: int) -> np.ndarray:
        return self._order[self._bounds[s] : self._bounds[s + 1]]

    def available(self, s: int) -> bool:
        """May shard ``s`` take part in a budgeted action now? Counts why not."""
        if self.changed[s]:
            self.skip("already changed this round")
            return False
        if self.cooling[s]:
            self.skip("cooldown")
            return False
        return True

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def budget_left(self) -> float:
        if self.budgeted >= self.cfg.max_actions:
            return 0.0
        return self.cfg.max_move_fraction - self.moved_fraction

    def key_share(self, lo: int, hi: int) -> float:
        """Estimated share of keys in ``[lo, hi)``: its share of the hash space, or of the
        distinct sampled keys when a key sample says more (hashing is uniform only on
        average; the budget must hold for the keys that exist)."""
        width = (hi - lo) / HASH_SPACE
        keys = self.sample_keys
        if keys is None or not keys.size:
            return width
        a = int(np.searchsorted(keys, np.uint64(lo), side="left"))
        b = int(np.searchsorted(keys, np.uint64(hi - 1), side="right"))
        return max(width, (b - a) / keys.size)

    def shard_key_share(self, s: int) -> float:
        v = self.view
        return sum(self.key_share(v.starts[i], v.ends[i]) for i in self.slices_of(s))

    def budget_reason(self) -> str:
        return "max_actions reached" if self.budgeted >= self.cfg.max_actions else "movement budget exhausted"

    def least_loaded_node(self) -> int:
        return int(np.argmin(self.node_load))

    def proactive(self, s: int, threshold: float) -> bool:
        """True when the prediction crossed ``threshold`` but the measured load did not: the
        action was taken because of a forecast."""
        if self.shard_measured is None:
            return False
        return bool(self.shard_measured[s] <= threshold < self.shard_upper[s])

    def record(self, action: Action) -> None:
        if not (getattr(action, "drain", False) or getattr(action, "kind", "") == "isolate"):
            self.budgeted += 1
        self.actions.append(action)
        self.moved_fraction += action.moved_fraction
        self.moved_load += action.moved_load

    def shift_load(self, s: int, t: int, load: float, t_node: int | None = None,
                   point: float | None = None) -> None:
        """Bookkeeping after ``load`` (upper bound; ``point``: its point forecast, by default
        the same share of the shard's point load) moved from shard ``s`` to shard ``t`` (or a
        new shard on ``t_node`` when ``t`` is -1)."""
        if point is None:
            su = float(self.shard_upper[s])
            point = float(self.shard_point[s]) * (load / su) if su > 0 else 0.0
        self.shard_point[s] -= point
        if t >= 0:
            self.shard_point[t] += point
        self.shard_upper[s] -= load
        self.node_load[self.view.shard_node[s]] -= load
        if t >= 0:
            self.shard_upper[t] += load
            self.node_load[self.view.shard_node[t]] += load
        elif t_node is not None:
            self.node_load[t_node] += load


def _neighbours(r: Round, s: int) -> list[tuple[int, int, int]]:
    """(own slice, neighbour slice, neighbour shard) for every boundary of shard ``s``."""
    out = []
    sl = r.view.slice_shard
    n = r.view.n_slices
    for i in r.slices_of(s):
        i = int(i)
        for j in (i - 1, i + 1):
            if 0 <= j < n and sl[j] != s:
                out.append((i, j, int(sl[j])))
    return out


def drain_failed(r: Round, failed: np.ndarray) -> None:
    r.failed = failed
    for s_idx in np.flatnonzero(failed):
        s = int(s_idx)
        healthy = {t for _, _, t in _neighbours(r, s) if not failed[t] and not r.changed[t]}
        if not healthy:
            r.skip("failed shard without a healthy neighbour")
            continue
        into = min(healthy, key=lambda t: (float(r.shard_upper[t]) / max(float(r.capacity[t]), 1e-12), t))
        r.record(
            Merge(
                into=r.view.shards[into],
                retired=r.view.shards[s],
                moved_fraction=float(r.shard_width[s]),
                moved_load=float(r.shard_upper[s]),
                reason="shard failed: drained into its least loaded healthy neighbour",
                drain=True,
            )
        )
        r.changed[s] = r.changed[into] = True
        r.shift_load(s, into, float(r.shard_upper[s]))
        r.n_shards -= 1


def isolate_hot_keys(r: Round, hot_hashes: Sequence[int], hot_upper: np.ndarray) -> None:
    hashes = np.asarray([int(h) for h in hot_hashes], dtype=np.uint64)
    slice_idx = r.view.slice_of_hash(hashes)
    for k in np.argsort(-hot_upper, kind="stable"):
        i = int(slice_idx[k])
        s = int(r.view.slice_shard[i])
        h, load = int(hashes[k]), float(hot_upper[k])
        if load < r.cfg.hot_key_fraction * r.capacity[s]:
            continue
        if r.shard_width[s] * HASH_SPACE <= 1.5:
            continue  # already alone in its shard
        if r.changed[s]:
            r.skip("already changed this round")
            continue
        if r.n_shards >= r.cfg.max_shards:
            r.skip("max_shards reached")
            break
        node = r.least_loaded_node()
        r.record(
            Reassign(
                h, h + 1, r.view.shards[s], r.new_name("hot"), r.view.nodes[node], "isolate",
                moved_fraction=1.0 / HASH_SPACE,
                moved_load=load,
                reason=f"one key predicted at {load:.1f} = {load / r.capacity[s]:.0%} of its shard's capacity",
            )
        )
        r.changed[s] = True
        r.shift_load(s, -1, load, node)
        r.n_shards += 1


def split_overloaded(r: Round) -> None:
    """Shards predicted over their high-water mark (point forecast), or whose upper bound
    crosses capacity itself, shed just what brings them back: to the coldest shard with room
    (no new shard, better balance), else into a new shard. Reactive: also above
    ``split_above_mean`` x the mean (back to the mean)."""
    cfg = r.cfg
    cap = np.maximum(r.capacity, 1e-12)
    by_point = r.shard_point > cfg.high_water * cap
    by_upper = r.shard_upper > cap
    over = by_point | by_upper
    cand = over.copy()
    mean = float(r.shard_point.sum() / max(r.n_shards, 1))
    if cfg.split_above_mean is not None and mean > 0:
        cand |= r.shard_point > cfg.split_above_mean * mean
    urgency = np.maximum(r.shard_point / (cfg.high_water * cap), r.shard_upper / cap)
    cold = [int(c) for c in np.argsort(r.shard_upper / cap, kind="stable")]
    for s in np.flatnonzero(cand)[np.argsort(-urgency[cand], kind="stable")]:
        s = int(s)
        c, p, u = float(cap[s]), float(r.shard_point[s]), float(r.shard_upper[s])
        per_point = u / p if p > 0 else 1.0  # upper-bound load per unit of point load
        if over[s]:
            # the least that must move (in upper-bound units, what actions carry): the
            # expected load back under the high-water mark and the upper bound under capacity
            need = max((p - cfg.high_water * c) * per_point, u - c, 0.0)
            want = need * (1.0 + cfg.shed_margin)
        else:  # over only by the mean rule: come back to the mean
            need, want = 0.0, (p - mean) * per_point
        if want <= 0 or r.shard_width[s] * HASH_SPACE <= 1.5:
            continue  # nothing to do, or a single hot key that no split can help
        if not r.available(s):
            continue
        pro = bool(over[s] and r.shard_measured is not None
                   and r.shard_measured[s] <= cfg.high_water * c)
        moved = _shed(r, s, need, want, cold, proactive=pro)
        if moved <= 0:
            if r.n_shards >= cfg.max_shards:
                r.skip("max_shards reached")
                break
            moved = _carve(r, s, want, proactive=pro)
        if moved > 0 and over[s]:
            # overload relief, scored against the minimum (``moved_vs_min``); a mean-rule
            # move of a shard under its high-water mark is rebalancing, not relief
            r.min_needed += need
            r.relief_load += moved


def _edge_range(r: Round, i: int, want: float, top: bool, *, whole_ok: bool = True) -> tuple[int, int, float] | None:
    """The part of slice ``i`` at its top (``[cut, end)``) or bottom (``[start, cut)``) edge
    that carries about ``want`` of its predicted load, within the movement budget.

    With a key sample (``key_hashes``/``key_load``) the cut falls between sampled keys, so a
    few heavy keys are accounted for; without one, load is taken as uniform over the slice's
    hash range (hashing spreads keys evenly). Returns ``(lo, hi, load)`` or None."""
    v = r.view
    start, end = v.starts[i], v.ends[i]
    width = end - start
    ui = float(r.upper[i])
    if width < 2 or ui <= 0 or want <= 0:
        return None
    max_hashes = int(min(r.budget_left(), 1.0) * HASH_SPACE)
    if max_hashes < 1:
        r.skip(r.budget_reason())
        return None
    limit = width if whole_ok else width - 1
    cut_n: int | None = None
    share = min(want / ui, 1.0)
    if r.sample is not None:
        hs, cw = r.sample
        lo = int(np.searchsorted(hs, np.uint64(start), side="left"))
        hi = int(np.searchsorted(hs, np.uint64(end - 1), side="right"))
        tot = float(cw[hi] - cw[lo])
        if hi > lo and tot > 0:
            target = share * tot
            if top:  # smallest suffix of sampled keys with weight >= target
                k = int(np.searchsorted(cw[lo : hi + 1], cw[hi] - target, side="right")) - 1 + lo
                k = min(max(k, lo), hi - 1)
                cut_n = end - int(hs[k])
                share = float(cw[hi] - cw[k]) / tot
            else:  # smallest prefix
                k = int(np.searchsorted(cw[lo : hi + 1], cw[lo] + target, side="left")) + lo
                k = min(max(k, lo + 1), hi)
                cut_n = int(hs[k - 1]) + 1 - start
                share = float(cw[k] - cw[lo]) / tot
    if cut_n is None:
        cut_n = max(int(width * share), 1)
    n = min(cut_n, limit, max_hashes)
    if n < 1:
        return None
    if n < cut_n:  # the budget or the slice cut it short: scale the load estimate
        share *= n / cut_n
    lo_h, hi_h = (end - n, end) if top else (start, start + n)
    keys = r.sample_keys
    if keys is not None and keys.size and r.key_share(lo_h, hi_h) > r.budget_left():
        # the sampled keys say this range holds more keys than the budget allows: keep only
        # as many sampled keys as fit, nearest the edge
        allowed = int(r.budget_left() * keys.size)
        a = int(np.searchsorted(keys, np.uint64(lo_h), side="left"))
        b = int(np.searchsorted(keys, np.uint64(hi_h - 1), side="right"))
        if allowed < 1 or b - a < 1:
            r.skip(r.budget_reason())
            return None
        if top:
            new_lo = int(keys[b - allowed])
            share *= (hi_h - new_lo) / (hi_h - lo_h)
            lo_h = new_lo
        else:
            new_hi = int(keys[a + allowed - 1]) + 1
            share *= (new_hi - lo_h) / (hi_h - lo_h)
            hi_h = new_hi
    return lo_h, hi_h, ui * share


def _carve(r: Round, s: int, excess: float, *, proactive: bool) -> float:
    """Move about ``excess`` load off shard ``s`` into one new shard, heaviest slices first,
    cutting the last one so that only what is needed moves (load is taken as uniform across
    a slice's hash range: hashing spreads keys evenly). Returns the load moved."""
    v = r.view
    idx = r.slices_of(s)
    node = r.least_loaded_node()
    new: str | None = None
    moved = 0.0
    for i in idx[np.argsort(-r.upper[idx], kind="stable")]:
        i = int(i)
        if moved >= excess * 0.999 or r.upper[i] <= 0:
            break
        if v.ends[i] - v.starts[i] < 2:
            continue  # one key cannot be cut
        part = _edge_range(r, i, excess - moved, top=True, whole_ok=len(idx) > 1)
        if part is None:
            break
        cut, end, load = part
        if new is None:
            new = r.new_name("split")
        r.record(
            Reassign(
                cut, end, v.shards[s], new, v.nodes[node], "split",
                moved_fraction=r.key_share(cut, end),
                moved_load=load,
                proactive=proactive,
                reason=f"predicted at {r.shard_upper[s] / r.capacity[s]:.0%} of capacity",
            )
        )
        moved += load
    if new is not None:
        r.changed[s] = True
        r.shift_load(s, -1, moved, node)
        r.n_shards += 1
    return moved


def _shed(r: Round, s: int, need: float, want: float, cold: list[int], *, proactive: bool) -> float:
    """Move about ``want`` (at least ``need`` when key granularity allows) of shard ``s``'s
    load to the coldest shard that stays under ``target_fill`` with it. Returns the load
    moved (0: no shard has room, the caller splits)."""
    v = r.view
    for t in cold:
        if t == s or r.changed[t] or r.failed[t] or r.capacity[t] <= 0:
            continue
        room = r.cfg.target_fill * float(r.capacity[t]) - float(r.shard_upper[t])
        if room < want:
            return 0.0  # the coldest available shard has no room: nothing colder will
        # overshoot allowed up to twice the margin, so the cut may land between heavy keys
        ceiling = min(room, max(want, need * (1.0 + 2.0 * r.cfg.shed_margin)))
        win = best_window(r, s, want, ceiling, floor=need)
        if win is None:
            return 0.0
        i, lo, hi, share = win
        load, pload = share * float(r.upper[i]), share * float(r.point[i])
        r.record(
            Reassign(
                lo, hi, v.shards[s], v.shards[t], v.nodes[v.shard_node[t]], "resize",
                moved_fraction=r.key_share(lo, hi),
                moved_load=load,
                proactive=proactive,
                reason=f"predicted at {r.shard_upper[s] / r.capacity[s]:.0%} of capacity; "
                       f"{v.shards[t]} has room",
            )
        )
        r.changed[s] = r.changed[t] = True
        r.shift_load(s, t, load, point=pload)
        return load
    return 0.0


def resize_imbalanced(r: Round) -> None:
    """Slicer-style hot-to-cold rebalancing on the point forecast: the hottest shard above
    ``(1 + imbalance_tolerance)`` x the mean gives the coldest shard the run of keys whose
    load best closes the gap, then the next hottest gives the next coldest, and so on. A
    move must lower the pair's peak by at least ``min_rebalance_gain`` x the mean, so noise
    does not shuffle keys back and forth."""
    cfg = r.cfg
    tol = cfg.imbalance_tolerance or 0.0
    mean = float(r.shard_point.sum() / max(r.n_shards, 1))
    if mean <= 0:
        return
    v = r.view
    hot = np.flatnonzero(r.shard_point > (1 + tol) * mean)
    cold = [int(c) for c in np.argsort(r.shard_point, kind="stable")]
    pos = 0
    for s in hot[np.argsort(-r.shard_point[hot], kind="stable")]:
        s = int(s)
        if r.budget_left() <= 0:
            r.skip(r.budget_reason())
            break
        if r.shard_width[s] * HASH_SPACE <= 1.5 or not r.available(s):
            continue
        while pos < len(cold) and (r.changed[cold[pos]] or r.failed[cold[pos]] or r.capacity[cold[pos]] <= 0):
            pos += 1
        if pos >= len(cold):
            break
        t = cold[pos]
        ps, pt = float(r.shard_point[s]), float(r.shard_point[t])
        if pt >= mean:
            break
        su = float(r.shard_upper[s])
        per_point = su / ps if ps > 0 else 1.0
        want = min(ps - mean, mean - pt) * per_point
        room = r.cfg.target_fill * float(r.capacity[t]) - float(r.shard_upper[t])
        ceiling = min(0.9 * (ps - pt) * per_point, room)  # the pair's peak must drop
        win = best_window(r, s, want, ceiling)
        if win is None:
            continue
        i, lo, hi, share = win
        load, pload = share * float(r.upper[i]), share * float(r.point[i])
        gain = ps - max(ps - pload, pt + pload)
        if gain < cfg.min_rebalance_gain * mean:
            r.skip("rebalance gain too small")
            continue
        r.record(
            Reassign(
                lo, hi, v.shards[s], v.shards[t], v.nodes[v.shard_node[t]], "resize",
                moved_fraction=r.key_share(lo, hi),
                moved_load=load,
                reason=f"shard at {ps / mean:.2f}x the mean load; {v.shards[t]} at {pt / mean:.2f}x",
            )
        )
        r.changed[s] = r.changed[t] = True
        r.shift_load(s, t, load, point=pload)
        pos += 1


def merge_cold(r: Round, failed: np.ndarray) -> None:
    cfg = r.cfg
    sl = r.view.slice_shard
    if len(sl) < 2:
        return
    a, b = sl[:-1], sl[1:]
    boundary = np.flatnonzero(a != b)
    if not len(boundary):
        return
    sa, sb = a[boundary], b[boundary]
    combined = r.shard_upper[sa] + r.shard_upper[sb]
    cap = np.minimum(r.capacity[sa], r.capacity[sb])
    tiny = (r.shard_width[sa] * HASH_SPACE <= 1.5) | (r.shard_width[sb] * HASH_SPACE <= 1.5)
    # cold pairs, and an isolated key that cooled may rejoin a neighbour up to target_fill
    ok = (combined < cfg.low_water * cap) | (tiny & (combined < cfg.target_fill * cap))
    for k in np.flatnonzero(ok)[np.argsort(combined[ok], kind="stable")]:
        if r.n_shards <= cfg.min_shards:
            r.skip("min_shards reached")
            break
        x, y = int(sa[k]), int(sb[k])
        if failed[x] or failed[y] or not (r.available(x) and r.available(y)):
            continue
        # the narrower shard is retired: fewer keys change owner
        into, gone = (x, y) if r.shard_width[x] >= r.shard_width[y] else (y, x)
        share = r.shard_key_share(gone)
        if share > r.budget_left():
            r.skip(r.budget_reason())
            continue
        load = float(r.shard_upper[gone])
        r.record(
            Merge(
                into=r.view.shards[into],
                retired=r.view.shards[gone],
                moved_fraction=share,
                moved_load=load,
                proactive=False,
                reason=f"neighbours predicted at {combined[k] / cap[k]:.0%} of capacity together",
            )
        )
        r.changed[x] = r.changed[y] = True
        r.shift_load(gone, into, load)
        r.n_shards -= 1


def move_between_nodes(r: Round) -> None:
    nodes = r.node_load
    if len(nodes) < 2:
        return
    mean = float(nodes.mean())
    hi, lo = int(np.argmax(nodes)), int(np.argmin(nodes))
    if mean <= 0 or nodes[hi] <= (1 + (r.cfg.node_imbalance or 0.0)) * mean:
        return
    gap = float(nodes[hi] - nodes[lo])
    best, best_after = -1, float(nodes[hi])
    for s_idx in np.flatnonzero(r.view.shard_node == hi):
        s = int(s_idx)
        load = float(r.shard_upper[s])
        if r.changed[s] or r.cooling[s] or load <= 0 or r.shard_key_share(s) > r.budget_left():
            continue
        after = float(max(nodes[hi] - load, nodes[lo] + load))
        if after < best_after - 1e-12 and load < gap:
            best, best_after = s, after
    if best < 0:
        r.skip("no shard move lowers the busiest node")
        return
    load = float(r.shard_upper[best])
    r.record(
        Move(
            shard=r.view.shards[best],
            from_node=r.view.nodes[hi],
            to_node=r.view.nodes[lo],
            moved_fraction=r.shard_key_share(best),
            moved_load=load,
            reason=f"node {r.view.nodes[hi]} at {nodes[hi] / mean:.2f}x the mean node load",
        )
    )
    r.changed[best] = True
    nodes[hi] -= load
    nodes[lo] += load
