"""The planning kernel: per-slice load arrays in, a list of actions out.

Everything here works on NumPy arrays over the slices of one shard map (one entry per
slice) and over its shards (one entry per shard), so a round over 10,000 slices costs a few
vectorised passes plus a Python loop over the *candidate* shards only (the overloaded, the
cold pairs, the failed), never over every slice.

The rules (implemented in :mod:`fastshard.sharding.rules`), in priority order (earlier
rules claim shards first; a shard takes part in at most one action per round):

1. **drain** – a failed shard merges into its least loaded healthy neighbour (exempt from
   the movement budget and cooldowns: its messages have nowhere else to go);
2. **isolate** – a single key predicted above ``hot_key_fraction`` of its shard's capacity
   gets the one-hash range ``[h, h + 1)`` as a shard of its own;
3. **split** – a shard whose predicted upper bound exceeds ``high_water`` x capacity (or,
   Slicer style, ``split_above_mean`` x the mean shard load) hands the top part of its
   heaviest slices to a new shard, just enough to come back to ``target_fill``;
4. **resize** – a shard above ``(1 + imbalance_tolerance)`` x mean shifts a boundary towards
   a neighbour below the mean;
5. **merge** – adjacent shards whose combined upper bound stays below ``low_water`` merge
   (the gap between ``low_water`` and ``high_water`` is the hysteresis that stops flapping),
   and isolated single-key shards whose key cooled rejoin a neighbour;
6. **move** – when one node carries more than ``(1 + node_imbalance)`` x the mean node load,
   one shard moves to the least loaded node.

Splits, resizes, merges and moves respect a per-shard cooldown (rounds since the shard was
last changed) and share one movement budget: at most ``max_move_fraction`` of the hash
space changes owner per round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fastshard.errors import InvalidValueError, check_finite, check_int
from fastshard.sharding import rules
from fastshard.sharding.plan import HASH_SPACE, Action


@dataclass(frozen=True)
class PlannerConfig:
    """Thresholds, as fractions of a shard's (health-adjusted) capacity unless noted."""

    high_water: float = 0.85
    target_fill: float = 0.80
    low_water: float = 0.40
    hot_key_fraction: float = 0.40
    split_above_mean: float | None = None
    imbalance_tolerance: float | None = 0.05
    node_imbalance: float | None = 0.25
    max_move_fraction: float = 0.09
    #: a shed moves the least needed (back under high_water) plus this share of it, so the
    #: next interval's growth does not trigger again at once
    shed_margin: float = 0.25
    #: a rebalance move must lower the pair's peak by this share of the mean shard load
    min_rebalance_gain: float = 0.02
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
    hot_hashes: Sequence[int] = (),
    hot_upper: np.ndarray | None = None,
    key_hashes: np.ndarray | None = None,
    key_load: np.ndarray | None = None,
) -> RoundResult:
    """Plan one round against ``view``.

    ``upper`` (predicted upper bound) and ``measured`` (last measured load, used only to
    flag proactive actions) are per slice; ``capacity`` (health-adjusted), ``cooling`` and
    ``failed`` are per shard. ``new_name(kind)`` returns a fresh shard id. ``key_hashes`` /
    ``key_load``: an optional sample of keys with their load (e.g. ``ShardMap.record_load``'s
    reservoir) that places cuts between real keys. Inputs are
    validated by the caller (:class:`fastshard.sharding.ShardManager`).
    """
    r = rules.Round(view, upper, capacity, config, cooling, new_name, measured, point)
    if key_hashes is not None and key_load is not None and len(key_hashes):
        order = np.argsort(key_hashes, kind="stable")
        r.sample = (np.asarray(key_hashes, dtype=np.uint64)[order],
                    np.concatenate(([0.0], np.cumsum(np.asarray(key_load, dtype=np.float64)[order]))))
        r.sample_keys = np.unique(r.sample[0])
    rules.drain_failed(r, np.asarray(failed, dtype=bool))
    if len(hot_hashes):
        hu = np.zeros(len(hot_hashes)) if hot_upper is None else np.asarray(hot_upper, dtype=np.float64)
        rules.isolate_hot_keys(r, hot_hashes, hu)
    rules.split_overloaded(r)
    if config.imbalance_tolerance is not None:
        rules.resize_imbalanced(r)
    rules.merge_cold(r, np.asarray(failed, dtype=bool))
    if config.node_imbalance is not None:
        rules.move_between_nodes(r)
    return RoundResult(r.actions, r.moved_fraction, r.moved_load, r.relief_load, r.min_needed, r.skipped)
