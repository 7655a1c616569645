"""Dynamic sharding: plans from predicted load, routing with drain fences, shard health.

>>> from fastshard.shardmap import ShardMap
>>> from fastshard.sharding import ShardManager, Router
>>> from fastshard import backends
>>> m = ShardMap(4, ["node-a", "node-b"])
>>> router = Router(m, backends.get("memory"))
>>> manager = ShardManager(m, capacity=1000.0, router=router)
"""

from fastshard.sharding.fence import DrainFence, FenceRegistry
from fastshard.sharding.health import HealthMonitor, HealthThresholds, ShardHealth
from fastshard.sharding.manager import LoadForecast, ShardManager
from fastshard.sharding.plan import CreateService, Merge, Move, Plan, Reassign, action_kind
from fastshard.sharding.planner import MapView, PlannerConfig
from fastshard.sharding.policies import (
    POLICIES,
    Policy,
    PredictivePolicy,
    ReactivePolicy,
    StaticPolicy,
    make_policy,
)
from fastshard.sharding.router import FencedConsumer, RoutedMessage, Router

__all__ = [
    "POLICIES",
    "CreateService",
    "DrainFence",
    "FenceRegistry",
    "FencedConsumer",
    "HealthMonitor",
    "HealthThresholds",
    "LoadForecast",
    "MapView",
    "Merge",
    "Move",
    "Plan",
    "PlannerConfig",
    "Policy",
    "PredictivePolicy",
    "ReactivePolicy",
    "Reassign",
    "RoutedMessage",
    "Router",
    "ShardHealth",
    "ShardManager",
    "StaticPolicy",
    "action_kind",
    "make_policy",
]
