"""Shards that host an isolated hot key: rejoining a cooled key, keeping a host near the level.

A key predicted above ``hot_key_fraction`` of capacity gets a one-hash slice and a shard of
its own (:func:`fastshard.sharding.rules.isolate_hot_keys`). Left alone, that shard carries
only its key, usually well below the other shards once the peak that made the key hot has
passed: it drags the mean shard load down, so every other shard sits above the mean (2-5%
of max / mean at busy hours in ``fastshard simulate``).

* :func:`rejoin_cooled_keys` - a shard that holds nothing but its key, whose point forecast
  fell below ``hot_key_rejoin`` x capacity, hands the key to the coldest shard with room and
  disappears;
* :func:`protect_host_keys` - no rule of the round cuts or moves a host's key;
* :func:`relieve_key_hosts` - a host predicted over its high-water mark (point forecast or
  measured load) or over ``target_fill`` x capacity (upper bound) gives its other ranges
  back, before overload relief spends the round's budget;
* :func:`level_key_hosts` - a host below the level all shards would share (hosts included)
  takes ranges from the hottest shards up to that level, as long as its point forecast stays
  under the high-water mark and its upper bound under ``target_fill`` x capacity (its key is
  the one load that cannot be cut if it grows), and not while the load is rising; a host
  above the level gives ranges back. No range that adjoins the key's slice is taken (the map
  would merge the two and the key would lose its own slice).

Which shards are hosts is decided by :class:`fastshard.sharding.rules.Round`: a shard with a
one-hash slice whose key is still predicted at ``hot_key_rejoin`` x capacity or more (or
that owns nothing else). Once the key cools, a host with other ranges is a plain shard.
"""

from __future__ import annotations

import numpy as np

from fastshard.sharding.balance import _prefix
from fastshard.sharding.cuts import Window, select
from fastshard.sharding.plan import HASH_SPACE
from fastshard.sharding.rules import Round

#: a host takes load from at most this many of the hottest shards per round
HOST_GIVERS = 4
#: the load counts as rising when the peak predicted over the horizon is this much above
#: the next interval's expected load (a morning ramp, an event building up)
HOST_RISE = 1.05


def rejoin_cooled_keys(r: Round) -> None:
    """A single-key shard whose key's point forecast fell below ``hot_key_rejoin`` x capacity
    (isolation looks at the upper bound and a higher threshold: hysteresis) hands its key to
    the coldest shard with room and disappears."""
    cfg = r.cfg
    cand = r.alive & r.single & ~r.failed & ~r.created & ~r.cooling
    cand &= np.maximum(r.shard_point, r.shard_expected) < cfg.hot_key_rejoin * r.capacity
    for x_ in np.flatnonzero(cand):
        x = int(x_)
        if r.n_shards <= cfg.min_shards:
            r.skip("min_shards reached")
            return
        # the coldest shard that stays under its high-water mark (point) and capacity (upper)
        # with the key; rebalancing then spreads the extra load
        fits = (r.shard_point + r.shard_point[x] <= cfg.high_water * r.capacity) & (
            r.shard_upper + r.shard_upper[x] <= r.capacity)
        recv = r.receivers() & fits
        if not recv.any():
            r.skip("no shard has room")
            continue
        t = int(np.flatnonzero(recv)[np.argmin((r.shard_expected / np.maximum(r.capacity, 1e-12))[recv])])
        found = [_prefix(r, int(i), float("inf"), r.budget_left()) for i in r.slices_of(x)]
        wins = [w for w in found if w is not None and (w.lo, w.hi) == (r.view.starts[w.slice], r.view.ends[w.slice])]
        if len(wins) < len(found):
            continue  # part of it is claimed by another action of this round
        for w in wins:
            r.move(x, t, w, "merge", f"isolated key cooled to {r.shard_upper[x] / r.capacity[x]:.0%} of capacity")
            r.used_slice[w.slice] = True
        r.alive[x] = False


def protect_host_keys(r: Round) -> None:
    """The hosts' keys stay where they are: no later rule of the round cuts or moves them."""
    for x in np.flatnonzero(r.alive & r.single):
        for i in r.slices_of(int(x)):
            if r.one_key_slice[i]:
                r.used_slice[i] = True
                if r.keys is not None and r.keys.n:
                    r.keys.claim_units(r.keys.units_in_slice(int(i)))


def relieve_key_hosts(r: Round) -> None:
    """A host that carries other ranges and is over what it may carry gives them back
    (relief proper leaves hosts alone: it would try to cut the key)."""
    hosts = r.alive & r.single & ~r.failed & (r.shard_width * HASH_SPACE > 1.5)
    level = _level(r, hosts)
    if level is None:
        return
    for x in np.flatnonzero(hosts):
        over = _over(r, int(x))
        if over > 0 and r.budget_left() > 0:
            _give_back(r, int(x), level, over)


def level_key_hosts(r: Round) -> None:
    """Bring each host of a hot key toward the level every shard would carry if the load
    were spread evenly (hosts included), within its high-water mark and target fill."""
    cfg = r.cfg
    hosts = r.alive & r.single & ~r.failed & ~r.created & (r.capacity > 0)
    level = _level(r, hosts)
    if level is None:
        return
    pool = r.alive & ~r.failed & ~r.single & ~r.retiring
    e = r.shard_expected
    tol = (cfg.imbalance_tolerance or 0.0) * level
    # while the load is rising (the peak over the horizon above the next interval) a host
    # takes nothing: its key rises with the rest and is the one load that cannot be cut
    rising = float(r.shard_point[pool].sum()) > HOST_RISE * float(e[pool].sum())
    for x in np.flatnonzero(hosts)[np.argsort(e[hosts], kind="stable")]:
        x = int(x)
        if r.budget_left() <= 0:
            r.skip(r.budget_reason())
            return
        if e[x] > level + tol:
            _give_back(r, x, level, 0.0)
        elif e[x] < level - tol and not rising:
            _take(r, x, level, pool)


def _level(r: Round, hosts: np.ndarray) -> float | None:
    """The expected load per shard if the shards that trade load and ``hosts`` shared it
    evenly; None without hosts or without such shards."""
    pool = r.alive & ~r.failed & ~r.single & ~r.retiring
    if not hosts.any() or not pool.any():
        return None
    e = r.shard_expected
    level = float((e[pool].sum() + e[hosts].sum()) / (pool.sum() + hosts.sum()))
    return level if level > 0 else None


def _over(r: Round, x: int) -> float:
    """How far host ``x`` is over what it may carry, in expected-load units: its point
    forecast (or measured load) over the high-water mark, its upper bound over
    ``target_fill`` x capacity (a host's key is what grows: it keeps headroom)."""
    cfg = r.cfg
    c = float(r.capacity[x])
    p, u, e = float(r.shard_point[x]), float(r.shard_upper[x]), float(r.shard_expected[x])
    m = float(r.shard_measured[x]) if r.shard_measured is not None else 0.0
    over = max(p - cfg.high_water * c, m - cfg.high_water * c, u - cfg.target_fill * c, 0.0)
    return over * e / max(p, u, 1e-12)


def _touches_key(r: Round, x: int, w: Window) -> bool:
    """Would ``w``, once owned by ``x``, adjoin one of ``x``'s isolated keys?"""
    v = r.view
    for i in r.slices_of(x):
        i = int(i)
        if r.one_key_slice[i] and (w.hi == v.starts[i] or w.lo == v.ends[i]):
            return True
    return False


def _take(r: Round, x: int, level: float, pool: np.ndarray) -> None:
    """Ranges of the hottest shards of ``pool`` to host ``x``, up to ``level``."""
    cfg = r.cfg
    e, p, u, cap = r.shard_expected, r.shard_point, r.shard_upper, r.capacity
    givers = np.flatnonzero(pool & (e > level))
    for g in givers[np.argsort(-e[givers], kind="stable")][:HOST_GIVERS]:
        g = int(g)
        gap = level - float(e[x])
        p_room = cfg.high_water * float(cap[x]) - float(p[x])
        u_room = cfg.target_fill * float(cap[x]) - float(u[x])
        if gap <= cfg.min_rebalance_gain * level or p_room <= 0 or u_room <= 0:
            return
        want = min(gap, float(e[g]) - level)
        wins: list[Window] = []
        wp = wu = 0.0
        for w in select(r, g, want, 1.1 * want, unit="expected"):
            if not _touches_key(r, x, w) and wp + w.point <= p_room and wu + w.upper <= u_room:
                wins.append(w)
                wp, wu = wp + w.point, wu + w.upper
        for w in wins:
            r.move(g, x, w, "resize", f"{r.names[x]} hosts an isolated key at "
                                      f"{float(e[x]) / level:.2f}x the level of the shards")


def _give_back(r: Round, x: int, level: float, over: float) -> None:
    """Hand ranges of host ``x`` (never its key) to the coldest shards: down to the level,
    or at least ``over`` (expected-load units) when it is over what it may carry."""
    cfg = r.cfg
    e, p, u, cap = r.shard_expected, r.shard_point, r.shard_upper, r.capacity
    rest = max(float(e[x]) - level, over)
    for _ in range(HOST_GIVERS):
        recv = r.receivers() & ((e < level) if over <= 0 else (u < cap))
        if rest <= 0 or not recv.any() or r.budget_left() <= 0:
            return
        t = int(np.flatnonzero(recv)[np.argmin((e / np.maximum(cap, 1e-12))[recv])])
        want = rest if over > 0 else min(rest, level - float(e[t]))
        p_room = cfg.high_water * float(cap[t]) - float(p[t])
        u_room = float(cap[t] - u[t])
        wp = wu = we = 0.0
        for w in select(r, x, want, 1.1 * want, unit="expected"):
            if wp + w.point <= p_room and wu + w.upper <= u_room:
                r.move(x, t, w, "resize", f"{r.names[x]} hosts an isolated key and is above "
                                          + ("what it may carry" if over > 0 else "the level of the shards"))
                wp, wu, we = wp + w.point, wu + w.upper, we + w.expected
        if we <= 0:
            return
        rest -= we
