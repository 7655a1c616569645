"""Consistent, weighted placement of keys onto named nodes: :class:`Ring`.

``Ring`` is implemented in the compiled module ``fastshard._ring`` (the whole class, so that
``ring.lookup(key)`` is one C call with no Python frame). In short:

* a key is hashed with XXH3-64 (:func:`fastshard.hash_key`); the top ``log2(S)`` bits of the
  hash pick one of ``S`` equal slots of the hash space (``S`` a power of two, at least 4096
  and at least ``slots_per_node`` per node), and an int32 table maps the slot to its node;
* each node owns about ``S * weight / total_weight`` slots (at least one);
* adding a node (or raising its weight) takes slots only from the most over-served nodes,
  removing any node (or lowering its weight) hands only its slots to the most under-served
  ones, and growing ``S`` splits every slot in place -- so only keys of the changed node
  move, the optimal fraction up to one slot per node;
* ``lookup_many`` places many keys at once (pre-hashed ``uint64`` arrays without the GIL).

docs/hashing.md specifies the algorithm exactly, so other languages can reproduce placement,
and explains why a slot table rather than JumpBackHash + AnchorHash places a Ring's keys.
"""

from __future__ import annotations

from fastshard._ring import (
    DEFAULT_SLOTS_PER_NODE,
    MAX_SLOTS,
    MIN_SLOTS,
    STATE_VERSION,
    Ring,
    RingTable,
    slots_needed,
    target_slots,
    total_weight,
)

__all__ = [
    "DEFAULT_SLOTS_PER_NODE",
    "MAX_SLOTS",
    "MIN_SLOTS",
    "STATE_VERSION",
    "Ring",
    "RingTable",
    "slots_needed",
    "target_slots",
    "total_weight",
]
