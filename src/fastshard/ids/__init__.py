"""Distributed ID generation with temporal sharding and predictive counter blocks.

IDs are unsigned 64-bit integers laid out ``[time shard][host id][counter]`` (see
:class:`IdLayout`), unique across hosts and restarts, and k-sorted by time shard.

>>> from fastshard.ids import IdGenerator, parse, to_text
>>> gen = IdGenerator(3)
>>> i = gen.next_id()
>>> parse(i)[1]
3
>>> len(to_text(i))
13
"""

from fastshard.ids.coordinator import Coordinator, Grant, HostStatus
from fastshard.ids.generator import IdGenerator
from fastshard.ids.layout import DEFAULT_LAYOUT, IdLayout, from_text, parse, to_text
from fastshard.ids.persistence import HighWaterFile
from fastshard.ids.sizing import BlockSizer, UsageForecaster

__all__ = [
    "DEFAULT_LAYOUT",
    "BlockSizer",
    "Coordinator",
    "Grant",
    "HighWaterFile",
    "HostStatus",
    "IdGenerator",
    "IdLayout",
    "UsageForecaster",
    "from_text",
    "parse",
    "to_text",
]
