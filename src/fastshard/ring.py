"""Consistent, weighted placement of keys onto named nodes: :class:`Ring`.

``Ring`` is implemented in the compiled module ``fastshard._ring`` (the whole class, so that
``ring.lookup(key)`` is one C call with no Python frame). In short:

* each node owns ``max(1, floor(weight * resolution + 0.5))`` virtual buckets
  (``resolution`` defaults to :data:`DEFAULT_RESOLUTION` buckets per unit of weight);
* a key is hashed with XXH3-64 (:func:`fastshard.hash_key`), its hash picks a bucket with
  JumpBackHash over all buckets ever created, and a removed bucket hands the key to a
  surviving one AnchorHash-style (Mendelson et al. 2020), so removing any node moves only
  its keys and adding one moves only keys onto it;
* ``lookup_many`` places many keys at once (pre-hashed ``uint64`` arrays without the GIL).

docs/hashing.md specifies the algorithm exactly, so other languages can reproduce placement.
"""

from __future__ import annotations

from fastshard._ring import (
    DEFAULT_RESOLUTION,
    MAX_RING_BUCKETS,
    STATE_VERSION,
    Ring,
    RingTable,
)

__all__ = ["DEFAULT_RESOLUTION", "MAX_RING_BUCKETS", "STATE_VERSION", "Ring", "RingTable"]
