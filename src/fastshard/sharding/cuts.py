"""Where to cut: the hash ranges of one shard that carry a wanted amount of load.

Load inside a shard is lumpy (a few Zipf-heavy keys carry most of it), so "move the top 30%
of the hash range" can move far more or far less load than wanted, and far more *keys* than
needed. With a key sample (``key_hashes`` / ``key_load``) the planner builds a
:class:`KeyIndex`: every sampled key with its share of its slice's predicted load, grouped
into *units* - the part of one cell of a fixed grid (``GRID_BITS``: 4096 equal cells of the
hash space) that lies inside one slice. Cuts fall on unit boundaries only, so however many
rounds move keys around, the map never has more than ~4096 slices plus isolated hot keys
(Slicer and Dicer bound their slice count the same way). :func:`select` then picks, among the
units of one shard that no earlier action of the round has claimed, either

* the densest few units (heaviest first; adjacent picks become one range): a lot of load for
  very few keys, which lets the shard count follow a steep daily ramp under a 9%-of-keys
  movement budget; or
* one contiguous run of units inside one slice whose load is closest to the wanted amount
  (vectorised: one ``searchsorted`` over every start), which moves one range;

whichever lands nearer the wanted load (within 10% of it: the one that moves fewer keys).
Without a sample, load is taken as uniform over a slice's hash range (hashing spreads keys
evenly) and the cut is the top part of the shard's heaviest slice not cut yet this round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fastshard.sharding.plan import HASH_SPACE

if TYPE_CHECKING:
    from fastshard.sharding.planner import MapView
    from fastshard.sharding.rules import Round

#: at most this many of a shard's heaviest units are considered for a dense pick
DENSE_CANDIDATES = 64
#: cuts fall on a grid of 2**GRID_BITS equal cells of the hash space
GRID_BITS = 12


@dataclass(frozen=True, slots=True)
class Window:
    """A hash range ``[lo, hi)`` inside one slice of a shard, with its predicted load."""

    lo: int
    hi: int
    keys: int  # sampled keys inside (0 without a sample)
    point: float
    upper: float
    expected: float
    slice: int
    claim: np.ndarray | None = None  # the KeyIndex units the range covers

    def load(self, unit: str) -> float:
        return float(getattr(self, unit))


class KeyIndex:
    """The distinct sampled keys of one round in hash order, grouped into units.

    A key's load is its sampled weight scaled so that the keys of a slice add up to the
    slice's predicted load (``point``, ``upper`` and ``expected`` each). A unit is the part of
    one grid cell inside one slice; units are numbered in hash order and carry the sums of
    their keys. ``claimed`` (per key) and ``unit_claimed`` mark what an action of this round
    already moves, so no two actions overlap.
    """

    def __init__(self, view: MapView, key_hashes: np.ndarray, key_load: np.ndarray,
                 point: np.ndarray, upper: np.ndarray, expected: np.ndarray) -> None:
        h, inv = np.unique(np.asarray(key_hashes, dtype=np.uint64), return_inverse=True)
        w = np.bincount(inv.ravel(), weights=np.asarray(key_load, dtype=np.float64), minlength=h.size)
        self.hashes = h
        self.n = int(h.size)
        self.slice = view.slice_of_hash(h).astype(np.int64)
        tot = np.bincount(self.slice, weights=w, minlength=view.n_slices)
        has = tot > 0
        self.slice_weighted = has  # slices whose load the sample can place

        def scaled(per_slice: np.ndarray) -> np.ndarray:
            ratio = np.zeros(view.n_slices)
            np.divide(per_slice, tot, out=ratio, where=has)
            return w * ratio[self.slice]

        kp, ku, ke = scaled(point), scaled(upper), scaled(expected)
        self.claimed = np.zeros(self.n, dtype=bool)
        # units: runs of keys in one grid cell and one slice
        cell = (h >> np.uint64(64 - GRID_BITS)).astype(np.int64)
        brk = np.ones(self.n, dtype=bool)
        brk[1:] = (cell[1:] != cell[:-1]) | (self.slice[1:] != self.slice[:-1])
        self.key_unit = np.cumsum(brk) - 1
        first = np.flatnonzero(brk)
        self.n_units = int(first.size)
        self.unit_first = first  # first key position of each unit
        self.unit_end = np.append(first[1:], self.n)  # one past its last key
        self.unit_slice = self.slice[first]
        # unit bounds as uint64: first hash and last hash (2**64 itself does not fit)
        cell_lo = h[first] >> np.uint64(64 - GRID_BITS) << np.uint64(64 - GRID_BITS)
        cell_last = cell_lo + np.uint64((HASH_SPACE >> GRID_BITS) - 1)
        slice_last = np.append(view.starts_u64[1:] - np.uint64(1), np.uint64(HASH_SPACE - 1))
        self.unit_lo_u = np.maximum(cell_lo, view.starts_u64[self.unit_slice])
        self.unit_last_u = np.minimum(cell_last, slice_last[self.unit_slice])
        self.unit_lo_f = self.unit_lo_u.astype(np.float64)
        self.unit_hi_f = self.unit_last_u.astype(np.float64) + 1.0
        self.unit_keys = (self.unit_end - first).astype(np.int64)
        self.point = np.bincount(self.key_unit, weights=kp, minlength=self.n_units)
        self.upper = np.bincount(self.key_unit, weights=ku, minlength=self.n_units)
        self.expected = np.bincount(self.key_unit, weights=ke, minlength=self.n_units)
        self.unit_claimed = np.zeros(self.n_units, dtype=bool)
        self.shard = view.slice_shard[self.unit_slice]
        # units grouped by shard, ascending (hash order) inside each group
        self._order = np.argsort(self.shard, kind="stable")
        m = len(view.shards)
        self._bounds = np.concatenate(([0], np.cumsum(np.bincount(self.shard, minlength=m))))

    def free_units_of(self, s: int) -> np.ndarray:
        """Units of shard ``s`` that no action of this round moves yet, in hash order."""
        if s + 1 >= len(self._bounds):
            return np.zeros(0, dtype=np.int64)  # a shard created this round owns no slice
        idx = self._order[self._bounds[s] : self._bounds[s + 1]]
        return idx[~self.unit_claimed[idx]]

    def claim_units(self, units: np.ndarray) -> None:
        units = np.asarray(units, dtype=np.int64).ravel()
        self.unit_claimed[units] = True
        if units.size <= 8:
            for u in units:
                self.claimed[self.unit_first[u] : self.unit_end[u]] = True
        else:
            self.claimed |= self.unit_claimed[self.key_unit]

    def claim_keys(self, pos: np.ndarray) -> None:
        self.claimed[pos] = True
        self.unit_claimed[self.key_unit[pos]] = True

    def unit_lo(self, u: int) -> int:
        return int(self.unit_lo_u[u])

    def unit_hi(self, u: int) -> int:
        return int(self.unit_last_u[u]) + 1

    def runs(self, units: np.ndarray) -> np.ndarray:
        """Where sorted ``units`` break into hash-adjacent runs: ``units[c[k]:c[k+1]]`` is one
        range (a run never spans a cell with no sampled key, whose keys are unknown)."""
        brk = np.ones(units.size, dtype=bool)
        if units.size > 1:
            brk[1:] = self.unit_lo_u[units[1:]] != self.unit_last_u[units[:-1]] + np.uint64(1)
        return np.append(np.flatnonzero(brk), units.size)

    def units_in_slice(self, i: int) -> np.ndarray:
        a = int(np.searchsorted(self.unit_slice, i, side="left"))
        b = int(np.searchsorted(self.unit_slice, i, side="right"))
        return np.arange(a, b)

    def count_in(self, lo: int, hi: int) -> int:
        a = int(np.searchsorted(self.hashes, np.uint64(lo), side="left"))
        b = int(np.searchsorted(self.hashes, np.uint64(hi - 1), side="right"))
        return b - a

    def positions_in(self, lo: int, hi: int) -> np.ndarray:
        a = int(np.searchsorted(self.hashes, np.uint64(lo), side="left"))
        b = int(np.searchsorted(self.hashes, np.uint64(hi - 1), side="right"))
        return np.arange(a, b)


def key_share(r: Round, lo: int, hi: int, keys: int | None = None) -> float:
    """Estimated share of keys in ``[lo, hi)``: its share of the hash space, or of the
    distinct sampled keys when the sample says more (hashing is uniform only on average;
    the budget must hold for the keys that exist)."""
    width = (hi - lo) / HASH_SPACE
    ki = r.keys
    if ki is None or not ki.n:
        return width
    if keys is None:
        keys = ki.count_in(lo, hi)
    return max(width, keys / ki.n)


def select(r: Round, s: int, want: float, ceiling: float, *, unit: str = "upper",
           floor: float = 0.0) -> list[Window]:
    """Ranges of shard ``s`` carrying about ``want`` of its predicted load (in ``unit``:
    "upper", "point" or "expected"), in total at least ``floor`` and at most ``ceiling``,
    within the movement budget. Empty when nothing fits."""
    if want <= 0 or ceiling <= 0 or ceiling < floor or r.budget_left() <= 0:
        return []
    ki = r.keys
    if ki is not None and ki.n:
        free = ki.free_units_of(s)
        wins = _select_units(r, ki, free, want, ceiling, floor, unit) if free.size else []
        if wins:
            return wins
    return _select_uniform(r, s, want, ceiling, floor, unit)


def _select_units(r: Round, ki: KeyIndex, free: np.ndarray, want: float, ceiling: float,
                  floor: float, unit: str) -> list[Window]:
    load = getattr(ki, unit)[free]
    pos = load[load > 0]
    if not pos.size or float(pos.min()) > ceiling:
        return []  # every unit alone is already too heavy (or nothing carries load)
    budget = r.budget_left()
    budget_keys = int(budget * ki.n)
    if budget_keys < 1:
        r.skip(r.budget_reason())
        return []
    options: list[tuple[float, int, list[Window]]] = []
    run = _best_run(ki, free, load, want, ceiling, floor, budget, budget_keys)
    if run is not None:
        options.append((abs(run.load(unit) - want), run.keys, [run]))
    dense = _dense_pick(r, ki, free, load, want, ceiling, budget_keys)
    if dense:
        total = sum(w.load(unit) for w in dense)
        if total >= floor:
            options.append((abs(total - want), sum(w.keys for w in dense), dense))
    if not options:
        r.skip("no cut between sampled keys fits")
        return []
    close = [o for o in options if o[0] <= 0.1 * want]
    if close:
        return min(close, key=lambda o: (o[1], len(o[2])))[2]
    return min(options, key=lambda o: (o[0], o[1]))[2]


def _best_run(ki: KeyIndex, free: np.ndarray, load: np.ndarray, want: float, ceiling: float,
              floor: float, budget: float, budget_keys: int) -> Window | None:
    """The contiguous run of free units inside one slice whose load is closest to ``want``."""
    n = free.size
    sl = ki.unit_slice[free]
    brk = np.ones(n, dtype=bool)
    brk[1:] = (free[1:] != free[:-1] + 1) | (sl[1:] != sl[:-1])
    seg = np.cumsum(brk) - 1
    seg_starts = np.flatnonzero(brk)
    seg_end = np.append(seg_starts[1:], n)[seg]  # one past the last unit of each unit's run
    c = np.concatenate(([0.0], np.cumsum(load)))
    ck = np.concatenate(([0], np.cumsum(ki.unit_keys[free])))
    lo_f = ki.unit_lo_f[free]
    hi_f = ki.unit_hi_f[free]
    starts = np.arange(n)
    b_hi = np.clip(np.searchsorted(c, c[:-1] + want, side="left"), starts + 1, seg_end)
    best: tuple[float, int, int, int] | None = None
    for b in (b_hi, np.maximum(b_hi - 1, starts + 1)):
        w = c[b] - c[starts]
        nkeys = ck[b] - ck[starts]
        width = (hi_f[b - 1] - lo_f) / HASH_SPACE
        ok = (w > 0) & (w >= floor) & (w <= ceiling) & (nkeys <= budget_keys)
        ok &= np.maximum(width, nkeys / ki.n) <= budget
        if not ok.any():
            continue
        score = np.where(ok, np.abs(w - want), np.inf)
        a = int(np.argmin(score))
        cand = (float(score[a]), int(nkeys[a]), a, int(b[a]))
        if best is None or cand[:2] < best[:2]:
            best = cand
    if best is None:
        return None
    _, _, a, b = best
    return _window(ki, free[a:b])


def _dense_pick(r: Round, ki: KeyIndex, free: np.ndarray, load: np.ndarray, want: float,
                ceiling: float, budget_keys: int) -> list[Window]:
    """The heaviest free units, greedily, while they fit under ``min(ceiling, 1.1 want)``;
    adjacent picks of one slice become one range."""
    limit = min(ceiling, 1.1 * want)
    k = min(DENSE_CANDIDATES, free.size)
    top = np.argpartition(-load, k - 1)[:k] if k < free.size else np.arange(free.size)
    top = top[np.argsort(-load[top], kind="stable")]
    picked: list[int] = []
    total = 0.0
    keys = 0
    for j in top:
        x = float(load[j])
        if x <= 0 or total >= want:
            break
        nk = int(ki.unit_keys[free[j]])
        if total + x <= limit and keys + nk <= budget_keys:
            picked.append(int(j))
            total += x
            keys += nk
    if not picked:
        return []
    units = np.sort(free[np.asarray(picked)])
    cuts = ki.runs(units)
    wins = [_window(ki, units[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    if sum(key_share(r, w.lo, w.hi, w.keys) for w in wins) > r.budget_left():
        return []
    return wins


def _window(ki: KeyIndex, units: np.ndarray) -> Window:
    """The range covering ``units`` (consecutive units of one slice)."""
    return Window(
        lo=ki.unit_lo(int(units[0])), hi=ki.unit_hi(int(units[-1])),
        keys=int(ki.unit_keys[units].sum()),
        point=float(ki.point[units].sum()), upper=float(ki.upper[units].sum()),
        expected=float(ki.expected[units].sum()), slice=int(ki.unit_slice[units[0]]), claim=units,
    )


def _select_uniform(r: Round, s: int, want: float, ceiling: float, floor: float,
                    unit: str) -> list[Window]:
    """Without sampled keys: the top part of the shard's heaviest slice not cut yet this
    round, load taken as uniform over its hash range."""
    idx = [int(i) for i in r.slices_of(s) if not r.used_slice[i]]
    if r.keys is not None:
        idx = [i for i in idx if not r.keys.slice_weighted[i]]  # sampled slices go by key
    if not idx:
        return []
    per_slice = {"upper": r.upper, "point": r.point, "expected": r.expected}[unit]
    i = max(idx, key=lambda j: float(per_slice[j]))
    li = float(per_slice[i])
    start, end = r.view.starts[i], r.view.ends[i]
    if li <= 0 or end - start < 2:
        return []
    share = min(want, ceiling, li) / li
    whole_ok = len(r.slices_of(s)) > 1
    n = min(max(int((end - start) * share), 1), end - start - (0 if whole_ok else 1),
            int(r.budget_left() * HASH_SPACE))
    if n < 1:
        r.skip(r.budget_reason())
        return []
    share = n / (end - start)
    if share * li > ceiling * (1 + 1e-9) or share * li < floor:
        return []
    return [Window(end - n, end, 0, share * float(r.point[i]), share * float(r.upper[i]),
                   share * float(r.expected[i]), i)]
