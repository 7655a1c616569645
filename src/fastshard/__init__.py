"""fastshard: predictive, dynamic sharding and routing.

The names below are imported lazily, so ``import fastshard`` stays cheap and a program
that only routes keys never loads Numba.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "hash_key": "fastshard.hashing",
    "hash_many": "fastshard.hashing",
    "jump_hash": "fastshard.hashing",
    "jumpback_hash": "fastshard.hashing",
    "Ring": "fastshard.ring",
    "ShardMap": "fastshard.shardmap",
    "SliceChange": "fastshard.shardmap",
    "ShardMaps": "fastshard.shardmap",
    "ShardMapStore": "fastshard.shardmap_store",
    "Router": "fastshard.sharding",
    "ShardManager": "fastshard.sharding",
    "HealthMonitor": "fastshard.sharding",
    "Forecaster": "fastshard.forecast",
    "TelemetryAggregator": "fastshard.telemetry",
    "IdGenerator": "fastshard.ids",
    "IdLayout": "fastshard.ids",
    "errors": "fastshard.errors",
    "backends": "fastshard.backends",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastshard' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module.endswith("." + name) else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
