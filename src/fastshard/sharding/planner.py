"""The planning kernel: per-slice load arrays in, a list of actions out.

Everything here works on NumPy arrays over the slices of one shard map (one entry per
slice) and over its shards (one entry per shard), so a round over 10,000 slices costs a few
vectorised passes plus Python loops over the *candidate* shards and moves only.

The rules, in order (earlier rules claim keys and slices first; no hash moves twice in
one round):

1. **drain** - a failed shard merges into its least loaded healthy neighbour (exempt from
   the movement budget: its messages have nowhere else to go);
2. **isolate** - a single key predicted above ``hot_key_fraction`` of its shard's capacity
   gets the one-hash range ``[h, h + 1)`` as a shard of its own; an isolated key whose point
   forecast fell under ``hot_key_rejoin`` rejoins the coldest shard that has room; a host
   of a key that is still hot gives its other ranges back when it is over its high-water
   mark or ``target_fill`` (:mod:`fastshard.sharding.hosts`);
3. **relieve** - a shard whose point forecast exceeds ``high_water`` x capacity, or whose
   upper bound exceeds capacity while the point forecast is above ``guard_point`` x
   capacity, sheds the least needed plus ``shed_margin`` to the coldest shard that can take
   it, else into a new shard (reactive, Slicer style: also above ``split_above_mean`` x the
   mean);
4. **retire** - when the other shards could carry the predicted upper bound at
   ``retire_below`` x capacity on average, the shard with the fewest keys is emptied into the
   coldest (over several rounds when the budget requires) and disappears;
5. **merge** - adjacent shards whose combined upper bound stays below ``low_water`` merge;
6. **rebalance** - a host of an isolated key below the level all shards would share takes
   ranges from the hottest shards up to it (within its high-water mark and
   ``target_fill``, not while the load is rising); then the hottest shard above
   ``(1 + imbalance_tolerance)`` x the mean of the expected load gives the coldest the keys
   that best close the gap, repeatedly;
7. **move** - when one node carries more than ``(1 + node_imbalance)`` x the mean node load,
   one shard moves to the least loaded node.

Hysteresis: a shard is split at ``high_water`` (85%) but retired only when the rest stay
under ``retire_below`` (60%); a shard created within ``cooldown_rounds`` is not retired, and
no shard is retired within ``cooldown_rounds`` of a split. Every move shares one movement
budget: at most ``max_move_fraction`` of the keys change owner per round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fastshard.errors import InvalidValueError, check_finite, check_int
from fastshard.sharding import balance, hosts, rules
from fastshard.sharding.cuts import KeyIndex
from fastshard.sharding.plan import HASH_SPACE, Action


@dataclass(frozen=True)
class PlannerConfig:
    """Thresholds, as fractions of a shard's (health-adjusted) capacity unless noted."""

    high_water: float = 0.85
    target_fill: float = 0.80
    low_water: float = 0.40
    hot_key_fraction: float = 0.45
    #: an isolated key predicted below this share of capacity rejoins a shard (a single-key
    #: shard far below the others drags the mean shard load down)
    hot_key_rejoin: float = 0.35
    #: the upper bound alone triggers relief only while the point forecast is above this
    #: share of capacity (0: whenever the upper bound crosses capacity)
    guard_point: float = 0.0
    #: with a measured load given, a shard the measurement leaves under high_water acts ahead
    #: of time only when its point forecast exceeds this share of capacity (a predicted
    #: overload, not merely a busy shard) or the upper-bound guard fires
    act_ahead_above: float = 1.0
    #: retire a shard when the others would carry the predicted upper bound at this share of
    #: their capacity on average (between low_water and target_fill: hysteresis)
    retire_below: float = 0.6
    split_above_mean: float | None = None
    imbalance_tolerance: float | None = 0.015
    node_imbalance: float | None = 0.25
    max_move_fraction: float = 0.09
    #: a shed moves the least needed (back under high_water) plus this share of it, so the
    #: next interval's growth does not trigger again at once
    shed_margin: float = 0.25
    #: a rebalance move must lower the pair's peak by this share of the mean shard load
    min_rebalance_gain: float = 0.005
    cooldown_rounds: int = 3
    #: budgeted actions (splits, resizes, merges, moves) per round: a plan stays reviewable
    #: and cheap to apply; hot-key isolation and failure drains are not capped
    max_actions: int = 256
    min_shards: int = 1
    max_shards: int = 100_000

    def __post_init__(self) -> None:
        for name in ("high_water", "target_fill", "low_water", "hot_key_fraction", "max_move_fraction"):
            v = check_finite(name, getattr(self, name))
            if not 0.0 < v <= 1.0:
                raise InvalidValueError(f"{name} must be in (0, 1], got {v}")
        if not self.low_water < self.target_fill <= self.high_water:
            raise InvalidValueError(
                "thresholds must satisfy low_water < target_fill <= high_water, got "
                f"low_water={self.low_water}, target_fill={self.target_fill}, high_water={self.high_water}"
            )
        rj = check_finite("hot_key_rejoin", self.hot_key_rejoin)
        if not 0.0 <= rj < self.hot_key_fraction:
            raise InvalidValueError(
                f"hot_key_rejoin must be in [0, hot_key_fraction={self.hot_key_fraction}), got {rj}")
        guard = check_finite("guard_point", self.guard_point)
        if not 0.0 <= guard <= 10.0:
            raise InvalidValueError(f"guard_point must be in [0, 10], got {guard}")
        ahead = check_finite("act_ahead_above", self.act_ahead_above)
        if not self.high_water <= ahead <= 10.0:
            raise InvalidValueError(f"act_ahead_above must be in [high_water={self.high_water}, 10], got {ahead}")
        rb = check_finite("retire_below", self.retire_below)
        if not self.low_water <= rb < self.target_fill:
            raise InvalidValueError(
                f"retire_below must be in [low_water={self.low_water}, target_fill={self.target_fill}), got {rb}")
        if self.split_above_mean is not None and check_finite("split_above_mean", self.split_above_mean) <= 1.0:
            raise InvalidValueError(f"split_above_mean must be > 1 (or None), got {self.split_above_mean}")
        for name in ("imbalance_tolerance", "node_imbalance"):
            v = getattr(self, name)
            if v is not None and check_finite(name, v) <= 0.0:
                raise InvalidValueError(f"{name} must be > 0 (or None to disable), got {v}")
        for name in ("shed_margin", "min_rebalance_gain"):
            v = check_finite(name, getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise InvalidValueError(f"{name} must be in [0, 1], got {v}")
        check_int("cooldown_rounds", self.cooldown_rounds, 0, 1_000_000)
        check_int("max_actions", self.max_actions, 1, 10_000_000)
        check_int("min_shards", self.min_shards, 1, 10_000_000)
        check_int("max_shards", self.max_shards, self.min_shards, 10_000_000)


@dataclass(frozen=True)
class MapView:
    """An array snapshot of one shard map epoch: what the kernel plans against."""

    epoch: int
    shards: list[str]
    nodes: list[str]
    shard_node: np.ndarray  # int32 per shard: index into nodes
    starts: list[int]
    ends: list[int]
    starts_u64: np.ndarray  # uint64 per slice, for searchsorted
    widths: np.ndarray  # float64 per slice: share of the hash space
    slice_shard: np.ndarray  # int32 per slice: index into shards

    @classmethod
    def from_map(cls, shard_map) -> MapView:  # noqa: ANN001 - a fastshard.shardmap.ShardMap
        epoch = shard_map.epoch
        shards = list(shard_map.shards)
        nodes = list(shard_map.nodes)
        slices = shard_map.slices
        placement = shard_map.placement()
        sidx = {s: i for i, s in enumerate(shards)}
        nidx = {n: i for i, n in enumerate(nodes)}
        starts = [s.start for s in slices]
        ends = [s.end for s in slices]
        return cls(
            epoch=epoch,
            shards=shards,
            nodes=nodes,
            shard_node=np.array([nidx[placement[s]] for s in shards], dtype=np.int32),
            starts=starts,
            ends=ends,
            starts_u64=np.array(starts, dtype=np.uint64),
            widths=np.array([(e - s) / HASH_SPACE for s, e in zip(starts, ends, strict=True)]),
            slice_shard=np.array([sidx[s.shard] for s in slices], dtype=np.int32),
        )

    @property
    def n_slices(self) -> int:
        return len(self.starts)

    def slice_of_hash(self, hashes: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts_u64, hashes.astype(np.uint64), side="right") - 1


@dataclass
class RoundResult:
    actions: list[Action]
    moved_fraction: float
    moved_load: float
    relief_load: float
    min_load_needed: float
    skipped: dict[str, int]
    retiring: list[str]  # shards still being emptied after this round


def plan_round(
    view: MapView,
    upper: np.ndarray,
    capacity: np.ndarray,
    *,
    config: PlannerConfig,
    cooling: np.ndarray,
    failed: np.ndarray,
    new_name: Callable[[str], str],
    measured: np.ndarray | None = None,
    point: np.ndarray | None = None,
    expected: np.ndarray | None = None,
    hot_hashes: Sequence[int] = (),
    hot_upper: np.ndarray | None = None,
    key_hashes: np.ndarray | None = None,
    key_load: np.ndarray | None = None,
    retiring: Sequence[str] = (),
    scale_cooldown: bool = False,
    new_capacity: float | None = None,
) -> RoundResult:
    """Plan one round against ``view``.

    ``upper`` (predicted upper bound), ``point`` (central forecast, the peak over the
    horizon), ``expected`` (the next interval's expected load, what rebalancing evens out)
    and ``measured`` (last measured load, used only to flag proactive actions) are per slice;
    ``capacity`` (health-adjusted), ``cooling`` and ``failed`` are per shard.
    ``new_name(kind)`` returns a fresh shard id. ``key_hashes`` / ``key_load``: an optional
    sample of keys with their load that places cuts between real keys. ``retiring``: shards
    a previous round began to empty; ``scale_cooldown``: a split happened recently, so no
    new retirement starts. Inputs are validated by the caller
    (:class:`fastshard.sharding.ShardManager`).
    """
    reserve = config.max_actions + len(hot_hashes) + 1
    r = rules.Round(view, upper, capacity, config, cooling, new_name, measured, point, expected,
                    reserve=reserve, new_capacity=new_capacity)
    if key_hashes is not None and key_load is not None and len(key_hashes):
        r.keys = KeyIndex(view, key_hashes, key_load, r.point, r.upper, r.expected)
    index = {name: i for i, name in enumerate(view.shards)}
    for name in retiring:
        if name in index:
            r.retiring[index[name]] = True
    rules.drain_failed(r, np.asarray(failed, dtype=bool))
    if len(hot_hashes):
        hu = np.zeros(len(hot_hashes)) if hot_upper is None else np.asarray(hot_upper, dtype=np.float64)
        rules.isolate_hot_keys(r, hot_hashes, hu)
    hosts.rejoin_cooled_keys(r)
    hosts.protect_host_keys(r)
    hosts.relieve_key_hosts(r)
    balance.relieve_overload(r)
    balance.retire_surplus(r, scale_cooldown)
    rules.merge_cold(r)
    if config.imbalance_tolerance is not None:
        hosts.level_key_hosts(r)
        balance.rebalance(r)
    if config.node_imbalance is not None:
        rules.move_between_nodes(r)
    still = [r.names[int(i)] for i in np.flatnonzero(r.retiring & r.alive)]
    return RoundResult(r.actions, r.moved_fraction, r.moved_load, r.relief_load, r.min_needed,
                       r.skipped, still)
