"""A plan: the actions one round of the shard manager wants, with what they would cost.

A plan is data. It is produced by :meth:`ShardManager.adjust_sharding` from arrays of
predicted load and applied by :meth:`ShardManager.apply` as ONE shard-map epoch. Every action
says why it was chosen, how much of the hash space (a proxy for the share of keys) and how
much predicted load it moves, and whether it was *proactive*: chosen because of a forecast
while the measured load was still fine. The simulator uses those fields to judge plans in
hindsight (moved load against the minimum needed, unnecessary proactive actions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fastshard.shardmap import ShardMap

HASH_SPACE = 2**64

#: why a range changes owner
ReassignKind = Literal["split", "isolate", "resize", "drain", "merge"]


@dataclass(frozen=True, slots=True)
class Reassign:
    """Hash range ``[start, end)`` goes from ``from_shard`` to ``to_shard``.

    ``to_shard`` is created on ``node`` when it does not exist yet. This one action covers a
    split (part of an overloaded shard to a new shard), the isolation of one hot key
    (``end == start + 1``), a resize (load handed from one existing shard to another), part
    of a merge (a shard being retired hands its ranges to others; once it owns nothing it
    disappears) and the drain of a failed shard's slices.
    """

    start: int
    end: int
    from_shard: str
    to_shard: str
    node: str
    kind: ReassignKind
    moved_fraction: float  # share of the 64-bit hash space that changes owner
    moved_load: float  # predicted load (upper bound) carried by that range
    proactive: bool = False
    reason: str = ""

    def apply_to(self, shard_map: ShardMap) -> None:
        shard_map.assign_range(self.start, self.end, self.to_shard, node=self.node)

    @property
    def shards(self) -> tuple[str, ...]:
        return (self.from_shard, self.to_shard)


@dataclass(frozen=True, slots=True)
class Merge:
    """``retired``'s slices join its neighbour ``into``; ``retired`` disappears."""

    into: str
    retired: str
    moved_fraction: float
    moved_load: float
    proactive: bool = False
    reason: str = ""
    drain: bool = False  # the retired shard failed: its messages must go somewhere

    def apply_to(self, shard_map: ShardMap) -> None:
        shard_map.merge(self.into, self.retired)

    @property
    def shards(self) -> tuple[str, ...]:
        return (self.into, self.retired)


@dataclass(frozen=True, slots=True)
class Move:
    """Place ``shard`` (its queue and consumers) on another node; routing is unchanged."""

    shard: str
    from_node: str
    to_node: str
    moved_fraction: float
    moved_load: float
    proactive: bool = False
    reason: str = ""

    def apply_to(self, shard_map: ShardMap) -> None:
        shard_map.move(self.shard, self.to_node)

    @property
    def shards(self) -> tuple[str, ...]:
        return (self.shard,)


@dataclass(frozen=True, slots=True)
class CreateService:
    """A message type the manager has not seen gets its own shard map of ``shards`` shards."""

    message_type: str
    shards: int
    nodes: tuple[str, ...]
    predicted_load: float
    proactive: bool = False
    reason: str = ""
    moved_fraction: float = 0.0  # new keys: nothing moves
    moved_load: float = 0.0

    @property
    def shard_names(self) -> tuple[str, ...]:
        return tuple(f"s{i}" for i in range(self.shards))


Action = Reassign | Merge | Move | CreateService


@dataclass(frozen=True)
class Plan:
    """The actions of one round, in the order they are applied, plus their cost and timing.

    ``base_epoch`` is the shard-map epoch the plan was computed against; :meth:`apply
    <fastshard.sharding.ShardManager.apply>` refuses a plan whose base epoch is no longer
    current. ``min_load_needed`` is the least predicted load that had to leave the overloaded
    shards to bring each back to its high-water mark; compare ``relief_load`` with it.
    """

    message_type: str | None
    base_epoch: int
    actions: tuple[Action, ...] = ()
    moved_fraction: float = 0.0
    moved_load: float = 0.0
    relief_load: float = 0.0  # load moved by split/resize actions taken against an overload
    min_load_needed: float = 0.0
    planning_seconds: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> how many candidates
    retiring: tuple[str, ...] = ()  # shards still being emptied once this plan is applied

    def __bool__(self) -> bool:
        return bool(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def count(self, kind: str) -> int:
        """How many actions of ``kind`` ("split", "isolate", "resize", "drain", "merge", "move",
        "create"); a range handed over by a retiring shard counts as "merge"."""
        return sum(1 for a in self.actions if action_kind(a) == kind)

    def summary(self) -> str:
        if not self.actions:
            return f"epoch {self.base_epoch}: no change"
        kinds: dict[str, int] = {}
        for a in self.actions:
            k = action_kind(a)
            kinds[k] = kinds.get(k, 0) + 1
        parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return (
            f"epoch {self.base_epoch}: {parts}; moves {self.moved_fraction:.2%} of keys, "
            f"{self.moved_load:.1f} load"
        )


def action_kind(action: Action) -> str:
    if isinstance(action, Reassign):
        return action.kind
    if isinstance(action, Merge):
        return "drain" if action.drain else "merge"
    if isinstance(action, Move):
        return "move"
    return "create"
