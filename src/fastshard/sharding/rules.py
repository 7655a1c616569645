"""The bookkeeping of one planning round (:class:`Round`) and its structural rules.

See :mod:`fastshard.sharding.planner` for the order in which the rules run. Every rule reads
and updates the same :class:`Round` (shard loads after the actions chosen so far, which keys
and slices an action already moves, the movement budget left, shards created or retired this
round), so later rules see the effect of earlier ones. The load-moving rules (overload
relief, retiring surplus shards, rebalancing) live in :mod:`fastshard.sharding.balance`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fastshard.sharding.cuts import key_share
from fastshard.sharding.plan import HASH_SPACE, Action, Merge, Move, Reassign, ReassignKind

if TYPE_CHECKING:
    from fastshard.sharding.cuts import KeyIndex, Window
    from fastshard.sharding.planner import MapView, PlannerConfig

_PER_SHARD = ("capacity", "shard_upper", "shard_point", "shard_expected", "shard_width",
              "shard_measured", "cooling", "changed", "failed", "alive", "created", "retiring",
              "single", "shard_node")


class Round:
    """Mutable bookkeeping of one planning round (kept out of the public objects).

    Per-shard arrays have room for the shards this round may create (``reserve``); a slot
    that holds no shard has ``alive == False`` and no load.
    """

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
        expected: np.ndarray | None = None,
        *,
        reserve: int = 0,
        new_capacity: float | None = None,
    ) -> None:
        m = len(view.shards)
        total = m + reserve
        self.view, self.cfg, self.new_name = view, config, new_name
        self.upper = upper
        # the point forecast (the expected peak) triggers and sizes overload relief; the
        # upper bound only guards against overload; ``expected`` (the next interval) is
        # what rebalancing evens out
        self.point = upper if point is None else point
        self.expected = self.point if expected is None else expected
        self.names = list(view.shards)

        def per_shard(weights: np.ndarray) -> np.ndarray:
            out = np.zeros(total)
            out[:m] = np.bincount(view.slice_shard, weights=weights, minlength=m)
            return out

        self.shard_upper = per_shard(upper)
        self.shard_point = per_shard(self.point)
        self.shard_expected = per_shard(self.expected)
        self.shard_width = per_shard(view.widths)
        self.shard_measured = per_shard(measured) if measured is not None else None
        self.capacity = np.zeros(total)
        self.capacity[:m] = capacity
        self.new_capacity = float(new_capacity) if new_capacity is not None else (
            float(np.median(capacity)) if m else 1.0)
        self.shard_node = np.zeros(total, dtype=np.int64)
        self.shard_node[:m] = view.shard_node
        self.node_load = np.bincount(view.shard_node, weights=self.shard_upper[:m],
                                     minlength=len(view.nodes)).astype(np.float64)
        # slices grouped by shard, each group in hash order (a stable sort keeps slice order)
        self._order = np.argsort(view.slice_shard, kind="stable")
        self._bounds = np.concatenate(([0], np.cumsum(np.bincount(view.slice_shard, minlength=m))))
        self.cooling = np.zeros(total, dtype=bool)
        self.cooling[:m] = np.asarray(cooling, dtype=bool)
        self.changed = np.zeros(total, dtype=bool)  # gave up a whole shard's worth / merged
        self.failed = np.zeros(total, dtype=bool)  # set by drain_failed
        self.alive = np.zeros(total, dtype=bool)
        self.alive[:m] = True
        self.created = np.zeros(total, dtype=bool)
        self.retiring = np.zeros(total, dtype=bool)
        self.touched = np.zeros(total, dtype=bool)  # gave or took a range this round
        # a slice of one hash value: an isolated key (it cannot be cut)
        self.one_key_slice = (np.asarray(view.ends, dtype=np.float64)
                              - np.asarray(view.starts, dtype=np.float64)) <= 1.5
        # a shard that hosts an isolated key: it owns nothing else, or its key is still hot
        # (not yet due to rejoin) and it carries other ranges only to reach the mean load
        # (:mod:`fastshard.sharding.hosts`); other rules neither cut it nor hand it load
        self.single = np.zeros(total, dtype=bool)
        self.single[:m] = self.shard_width[:m] * HASH_SPACE <= 1.5
        if self.one_key_slice.any():
            key_load = np.where(self.one_key_slice, np.maximum(self.point, self.expected), 0.0)
            hot = np.bincount(view.slice_shard, weights=key_load, minlength=m)
            self.single[:m] |= (hot > 0) & (hot >= config.hot_key_rejoin * np.asarray(capacity, dtype=np.float64))
        self.n_total = m
        self.used_slice = np.zeros(view.n_slices, dtype=bool)  # cut by range this round
        self.keys: KeyIndex | None = None
        self.actions: list[Action] = []
        self.moved_fraction = self.moved_load = self.relief_load = self.min_needed = 0.0
        self.skipped: dict[str, int] = {}
        self.budgeted = 0  # actions that count against max_actions
        self._shard_share: np.ndarray | None = None
        self.key_counts: np.ndarray | None = None  # sampled keys per shard, when asked

    # ------------------------------------------------------------------ shards
    @property
    def n_shards(self) -> int:
        return int(self.alive.sum())

    def slices_of(self, s: int) -> np.ndarray:
        if s + 1 >= len(self._bounds):
            return np.zeros(0, dtype=np.int64)
        return self._order[self._bounds[s] : self._bounds[s + 1]]

    def add_shard(self, kind: str, node: int) -> int:
        """A shard created this round (it owns no slice of the view yet); -1 when no slot."""
        s = self.n_total
        if s >= len(self.alive):
            self.skip("too many new shards in one round")
            return -1
        self.n_total += 1
        self.names.append(self.new_name(kind))
        self.alive[s] = self.created[s] = True
        self.capacity[s] = self.new_capacity
        self.shard_node[s] = node
        self.single[s] = kind == "hot"
        return s

    def receivers(self) -> np.ndarray:
        """Shards that may take load: alive, healthy, not being retired, not one hot key."""
        return self.alive & ~self.failed & ~self.retiring & ~self.single & (self.capacity > 0)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    # ------------------------------------------------------------------ budget
    def budget_left(self) -> float:
        if self.budgeted >= self.cfg.max_actions:
            return 0.0
        return self.cfg.max_move_fraction - self.moved_fraction

    def budget_reason(self) -> str:
        return "max_actions reached" if self.budgeted >= self.cfg.max_actions else "movement budget exhausted"

    def shard_key_share(self, s: int) -> float:
        """Estimated share of the keys shard ``s`` owns (per slice: the larger of its hash-space
        share and its share of the sampled keys)."""
        if self._shard_share is None:
            v = self.view
            per_slice = v.widths
            if self.keys is not None and self.keys.n:
                counts = np.bincount(self.keys.slice, minlength=v.n_slices) / self.keys.n
                per_slice = np.maximum(per_slice, counts)
            self._shard_share = np.bincount(v.slice_shard, weights=per_slice, minlength=len(v.shards))
        return float(self._shard_share[s]) if s < len(self._shard_share) else 0.0

    def least_loaded_node(self) -> int:
        return int(np.argmin(self.node_load))

    # ------------------------------------------------------------------ recording
    def record(self, action: Action) -> None:
        if not (getattr(action, "drain", False) or getattr(action, "kind", "") == "isolate"):
            self.budgeted += 1
        self.actions.append(action)
        self.moved_fraction += action.moved_fraction
        self.moved_load += action.moved_load

    def move(self, s: int, t: int, win: Window, kind: ReassignKind, reason: str, *,
             proactive: bool = False) -> None:
        """Record ``win`` (a range of shard ``s``) going to shard ``t`` and book its load."""
        share = key_share(self, win.lo, win.hi, win.keys if win.claim is not None else None)
        self.record(Reassign(win.lo, win.hi, self.names[s], self.names[t],
                             self.view.nodes[int(self.shard_node[t])], kind,
                             moved_fraction=share, moved_load=win.upper,
                             proactive=proactive, reason=reason))
        if win.claim is not None and self.keys is not None:
            self.keys.claim_units(win.claim)
        else:
            self.used_slice[win.slice] = True
        self.shift(s, t, win.point, win.upper, win.expected)
        self.touched[s] = self.touched[t] = True

    def shift(self, s: int, t: int, point: float, upper: float, expected: float) -> None:
        for arr, x in ((self.shard_point, point), (self.shard_upper, upper), (self.shard_expected, expected)):
            arr[s] -= x
            arr[t] += x
        self.node_load[self.shard_node[s]] -= upper
        self.node_load[self.shard_node[t]] += upper


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


def _claim_shard(r: Round, s: int) -> None:
    """Every key and slice of shard ``s`` moves with it: no other action may cut them."""
    r.used_slice[r.slices_of(s)] = True
    if r.keys is not None:
        r.keys.claim_units(np.flatnonzero(r.keys.shard == s))


def drain_failed(r: Round, failed: np.ndarray) -> None:
    r.failed[: len(failed)] = failed
    for s_idx in np.flatnonzero(failed):
        s = int(s_idx)
        healthy = {t for _, _, t in _neighbours(r, s) if not failed[t] and not r.changed[t]}
        if not healthy:
            r.skip("failed shard without a healthy neighbour")
            continue
        into = min(healthy, key=lambda t: (float(r.shard_upper[t]) / max(float(r.capacity[t]), 1e-12), t))
        r.record(
            Merge(
                into=r.names[into],
                retired=r.names[s],
                moved_fraction=float(r.shard_width[s]),
                moved_load=float(r.shard_upper[s]),
                reason="shard failed: drained into its least loaded healthy neighbour",
                drain=True,
            )
        )
        r.changed[s] = r.changed[into] = True
        _claim_shard(r, s)
        r.shift(s, into, float(r.shard_point[s]), float(r.shard_upper[s]), float(r.shard_expected[s]))
        r.alive[s] = False


def isolate_hot_keys(r: Round, hot_hashes: Sequence[int], hot_upper: np.ndarray) -> None:
    hashes = np.asarray([int(h) for h in hot_hashes], dtype=np.uint64)
    slice_idx = r.view.slice_of_hash(hashes)
    for k in np.argsort(-hot_upper, kind="stable"):
        i = int(slice_idx[k])
        s = int(r.view.slice_shard[i])
        h, load = int(hashes[k]), float(hot_upper[k])
        if load < r.cfg.hot_key_fraction * r.capacity[s]:
            continue
        if r.one_key_slice[i]:
            continue  # already isolated
        if not r.alive[s] or r.changed[s]:
            r.skip("already changed this round")
            continue
        if r.n_shards >= r.cfg.max_shards:
            r.skip("max_shards reached")
            break
        pos = r.keys.positions_in(h, h + 1) if r.keys is not None else None
        if pos is not None and r.keys is not None:
            if r.keys.claimed[pos].any():
                continue  # another action of this round already moves it
        elif r.used_slice[i]:
            continue
        node = r.least_loaded_node()
        t = r.add_shard("hot", node)
        if t < 0:
            break
        # the key's own load, as the planner sees it (its predicted bound may exceed its
        # slice's share of the forecast: then the whole slice's share is what moves)
        ratio = min(load / max(float(r.upper[i]), 1e-12), 1.0)
        r.record(Reassign(h, h + 1, r.names[s], r.names[t], r.view.nodes[node], "isolate",
                          moved_fraction=1.0 / HASH_SPACE, moved_load=load,
                          reason=f"one key predicted at {load:.1f} = {load / r.capacity[s]:.0%} "
                                 "of its shard's capacity"))
        if pos is not None and r.keys is not None:
            r.keys.claim_keys(pos)
        r.changed[s] = True
        r.shift(s, t, ratio * float(r.point[i]), min(load, float(r.shard_upper[s])),
                ratio * float(r.expected[i]))


def merge_cold(r: Round) -> None:
    """Adjacent shards whose combined upper bound stays below ``low_water`` merge (a single-key
    shard whose key cooled rejoins through :func:`~fastshard.sharding.balance.rejoin_cooled_keys`)."""
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
    ok = (combined < cfg.low_water * cap) & ~r.single[sa] & ~r.single[sb]
    touched = {n for a in r.actions if isinstance(a, Reassign) for n in (a.from_shard, a.to_shard)}
    for k in np.flatnonzero(ok)[np.argsort(combined[ok], kind="stable")]:
        if r.n_shards <= cfg.min_shards:
            r.skip("min_shards reached")
            break
        x, y = int(sa[k]), int(sb[k])
        if not (r.alive[x] and r.alive[y]) or r.failed[x] or r.failed[y] or r.retiring[x] or r.retiring[y]:
            continue
        if r.changed[x] or r.changed[y] or r.names[x] in touched or r.names[y] in touched:
            r.skip("already changed this round")
            continue
        if r.cooling[x] or r.cooling[y]:
            r.skip("cooldown")
            continue
        # the narrower shard is retired: fewer keys change owner
        into, gone = (x, y) if r.shard_width[x] >= r.shard_width[y] else (y, x)
        share = r.shard_key_share(gone)
        if share > r.budget_left():
            r.skip(r.budget_reason())
            continue
        r.record(
            Merge(
                into=r.names[into],
                retired=r.names[gone],
                moved_fraction=share,
                moved_load=float(r.shard_upper[gone]),
                reason=f"neighbours predicted at {combined[k] / cap[k]:.0%} of capacity together",
            )
        )
        r.changed[x] = r.changed[y] = True
        _claim_shard(r, gone)
        r.shift(gone, into, float(r.shard_point[gone]), float(r.shard_upper[gone]),
                float(r.shard_expected[gone]))
        r.alive[gone] = False


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
    for s_idx in np.flatnonzero((r.shard_node[: r.n_total] == hi) & r.alive[: r.n_total]):
        s = int(s_idx)
        load = float(r.shard_upper[s])
        if r.changed[s] or r.cooling[s] or r.created[s] or load <= 0 or r.shard_key_share(s) > r.budget_left():
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
            shard=r.names[best],
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
