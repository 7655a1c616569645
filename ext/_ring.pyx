# cython: language_level=3, binding=False, always_allow_keywords=False
"""Compiled core of fastshard.Ring: weighted consistent placement with arbitrary removal.

See ext/_ring.pxd for the lookup kernel and docs/hashing.md for the full algorithm.
"""

import math
import numbers

from libc.stdint cimport uint64_t, int32_t
from libc.string cimport memcpy
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

cimport numpy as cnp
import numpy as np

from fs_keys cimport hash_object

from fastshard.errors import (
    DuplicateNodeError,
    EmptyRingError,
    InvalidTypeError,
    InvalidValueError,
    UnknownNodeError,
    check_positive,
)

cnp.import_array()

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    uint64_t PyLong_AsUnsignedLongLong(object o) except? <uint64_t>-1

# Default virtual buckets per unit of weight: weight 1.0 is placed within +-1.25% of its
# exact share, and 1024 equal nodes keep the lookup table (8 bytes per bucket) in L2 cache.
DEFAULT_RESOLUTION = 40.0
# Upper bound on buckets ever created (memory: ~20 bytes per bucket).
MAX_RING_BUCKETS = 1 << 24
# Version of the to_dict() layout.
STATE_VERSION = 1


cdef object _i32(Py_ssize_t n):
    return np.zeros(n, dtype=np.int32)


cdef class RingTable:
    """One immutable snapshot of the ring's bucket arrays (see _ring.pxd)."""

    def __init__(self):
        raise TypeError("RingTable is internal; build a fastshard.Ring")

    cdef RingTable copy(self, Py_ssize_t capacity):
        """A private copy with room for `capacity` buckets, to be mutated then published."""
        cdef RingTable t = RingTable.__new__(RingTable)
        cdef Py_ssize_t n = self.anchor
        if capacity < n:
            capacity = n
        t.slots = np.full(max(capacity, 1) * SLOT_WIDTH, -1, dtype=np.int32)
        t.succ = _i32(max(capacity, 1))
        t.position = _i32(max(capacity, 1))
        t.occupant = _i32(max(capacity, 1))
        t.removed = _i32(max(capacity, 1))
        t._slots = <int32_t *>cnp.PyArray_DATA(t.slots)
        t._succ = <int32_t *>cnp.PyArray_DATA(t.succ)
        t._position = <int32_t *>cnp.PyArray_DATA(t.position)
        t._occupant = <int32_t *>cnp.PyArray_DATA(t.occupant)
        t._removed = <int32_t *>cnp.PyArray_DATA(t.removed)
        if n:
            memcpy(t._slots, self._slots, n * SLOT_WIDTH * sizeof(int32_t))
            memcpy(t._succ, self._succ, n * sizeof(int32_t))
            memcpy(t._position, self._position, n * sizeof(int32_t))
            memcpy(t._occupant, self._occupant, n * sizeof(int32_t))
        if self.n_removed:
            memcpy(t._removed, self._removed, self.n_removed * sizeof(int32_t))
        t.names = self.names
        t.anchor = self.anchor
        t.working = self.working
        t.n_removed = self.n_removed
        t._capacity = capacity
        return t

    cdef int32_t acquire(self, int32_t node) noexcept nogil:
        """Put one bucket in service for `node`: the last removed one, else a new one.

        Restoring in LIFO order exactly undoes the matching release (AnchorHash ADDBUCKET),
        so the keys that come back are precisely those that left. A new bucket is only
        created when nothing is removed; jumpback then moves keys only onto it.
        """
        cdef int32_t b, last
        if self.n_removed > 0:
            self.n_removed -= 1
            b = self._removed[self.n_removed]
            last = self._occupant[self.working]
            self._position[last] = self.working
            self._occupant[self._position[b]] = b
        else:
            b = self.anchor
            self.anchor += 1
            self._position[b] = b
            self._occupant[b] = b
        self._succ[b] = b
        self._slots[SLOT_WIDTH * b + SLOT_REMOVED_AT] = -1
        self._slots[SLOT_WIDTH * b + SLOT_NODE] = node
        self.working += 1
        return b

    cdef void release(self, int32_t bucket) noexcept nogil:
        """Take a working bucket out of service (AnchorHash REMOVEBUCKET)."""
        cdef int32_t last
        self.working -= 1
        last = self._occupant[self.working]
        self._slots[SLOT_WIDTH * bucket + SLOT_REMOVED_AT] = self.working
        self._slots[SLOT_WIDTH * bucket + SLOT_NODE] = -1
        self._occupant[self._position[bucket]] = last
        self._position[last] = self._position[bucket]
        self._succ[bucket] = last
        self._removed[self.n_removed] = bucket
        self.n_removed += 1


cdef RingTable _empty_table():
    cdef RingTable t = RingTable.__new__(RingTable)
    t.names = ()
    return t.copy(0)


cdef object _check_name(object node):
    if isinstance(node, bool) or not isinstance(node, (str, int)):
        raise InvalidTypeError(f"node must be a str or int name, got {type(node).__name__}")
    return node


cdef double _check_weight(object weight) except -1:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise InvalidTypeError(
            f"weight must be a real number > 0, got {type(weight).__name__}")
    return check_positive("weight", weight)


cdef Py_ssize_t _bucket_count(double weight, double resolution) except -1:
    cdef double scaled = math.floor(weight * resolution + 0.5)
    if scaled > MAX_RING_BUCKETS:
        raise InvalidValueError(
            f"weight * resolution must be <= {MAX_RING_BUCKETS} virtual buckets, got "
            f"{weight} * {resolution}")
    return max(1, <Py_ssize_t>scaled)


cdef class Ring:
    """Consistent placement of keys onto named, weighted nodes.

    ``lookup(key)`` returns the node owning a str/bytes/int key. Each node owns
    ``round(weight * resolution)`` virtual buckets (at least one); keys spread over buckets by
    JumpBackHash, and removed buckets hand their keys to the survivors AnchorHash-style, so:

    * a node's share of keys is proportional to its weight;
    * ``add`` moves only keys onto the new node, ``remove`` only the removed node's keys
      (for ANY node), each about the optimal fraction.

    Placement depends on the sequence of ``add``/``remove``/``set_weight`` calls (not only on
    the final set of nodes): share it between processes with ``to_dict``/``from_dict``, or
    replay the same calls in the same order.
    """

    def __init__(self, nodes=(), weights=None, *, resolution=DEFAULT_RESOLUTION):
        cdef double res = check_positive("resolution", resolution)
        if isinstance(nodes, (str, bytes)):
            raise InvalidTypeError(f"nodes must be a sequence of names, not a single "
                                   f"{type(nodes).__name__}")
        try:
            names = list(nodes)
        except TypeError:
            raise InvalidTypeError(
                f"nodes must be an iterable of names, got {type(nodes).__name__}") from None
        if weights is None:
            ws = [1.0] * len(names)
        else:
            try:
                ws = list(weights)
            except TypeError:
                raise InvalidTypeError(
                    f"weights must be a sequence of numbers, got {type(weights).__name__}"
                ) from None
            if len(ws) != len(names):
                raise InvalidValueError(
                    f"weights must have one entry per node ({len(names)}), got {len(ws)}")
        cdef Py_ssize_t c
        seen = {}
        counts = []
        total = 0
        for i, name in enumerate(names):
            _check_name(name)
            if name in seen:
                raise DuplicateNodeError(f"node {name!r} appears twice in nodes")
            seen[name] = i
            ws[i] = _check_weight(ws[i])
            c = _bucket_count(ws[i], res)
            counts.append(c)
            total += c
        if total > MAX_RING_BUCKETS:
            raise InvalidValueError(
                f"the ring would need {total} virtual buckets, more than {MAX_RING_BUCKETS}; "
                "lower the weights or the resolution")
        self.resolution = res
        cdef RingTable t = _empty_table().copy(total)
        buckets = []
        cdef Py_ssize_t k
        for i in range(len(names)):
            c = counts[i]
            own = [0] * c
            for k in range(c):
                own[k] = t.acquire(<int32_t>i)
            buckets.append(own)
        t.names = tuple(names)
        self._index = seen
        self._weights = ws
        self._buckets = buckets
        self._table = t

    # ---- lookups (the hot path) ------------------------------------------------------------

    def lookup(self, key):
        """Name of the node owning ``key`` (str, bytes, or int in [-2**63, 2**64))."""
        cdef uint64_t h
        cdef RingTable t = self._table
        hash_object(key, &h)
        if t.working == 0:
            _raise_empty()
        return <object>PyTuple_GET_ITEM(
            t.names, ring_node(t._slots, t._succ, t.anchor, h))

    def lookup_hash(self, h):
        """Name of the node owning a key whose ``hash_key`` is ``h`` (int in [0, 2**64))."""
        cdef RingTable t = self._table
        cdef uint64_t hv = _hash_value(h)
        if t.working == 0:
            _raise_empty()
        return <object>PyTuple_GET_ITEM(
            t.names, ring_node(t._slots, t._succ, t.anchor, hv))

    def lookup_index(self, key):
        """Index into ``nodes`` of the node owning ``key``."""
        cdef uint64_t h
        cdef RingTable t = self._table
        hash_object(key, &h)
        if t.working == 0:
            _raise_empty()
        return ring_node(t._slots, t._succ, t.anchor, h)

    def lookup_many(self, keys):
        """Node indices (int32 array, into ``nodes``) for many keys.

        ``keys`` is either a list/tuple (or other iterable) of str/bytes/int keys, hashed
        like ``lookup``; or a NumPy unsigned/non-negative integer array of pre-computed
        ``hash_key`` values, placed with the GIL released.
        """
        cdef RingTable t = self._table
        cdef cnp.ndarray hashes
        cdef Py_ssize_t i, n
        if isinstance(keys, np.ndarray) and keys.dtype.kind in "ui":
            from fastshard._hashing import as_hash_array
            hashes = as_hash_array(keys)
        else:
            if isinstance(keys, (str, bytes)):
                raise InvalidTypeError(
                    f"keys must be a sequence of keys, not a single {type(keys).__name__}")
            if isinstance(keys, np.ndarray):
                if keys.ndim != 1:
                    raise InvalidValueError(
                        f"keys must be 1-dimensional, got ndim={keys.ndim}")
                if keys.dtype.kind not in "OUS":
                    raise InvalidTypeError(
                        f"keys array must hold hashes (unsigned ints) or str/bytes keys, "
                        f"got dtype {keys.dtype}")
                keys = keys.tolist()
            elif not (type(keys) is list or type(keys) is tuple):
                try:
                    keys = list(keys)
                except TypeError:
                    raise InvalidTypeError(
                        f"keys must be an iterable of str/bytes/int, got "
                        f"{type(keys).__name__}") from None
            n = len(keys)
            hashes = np.empty(n, dtype=np.uint64)
            _hash_keys(keys, <uint64_t *>cnp.PyArray_DATA(hashes), n)
        n = hashes.shape[0]
        out = np.empty(n, dtype=np.int32)
        if n == 0:
            return out
        if t.working == 0:
            _raise_empty()
        cdef const uint64_t *src = <const uint64_t *>cnp.PyArray_DATA(hashes)
        cdef int32_t *dst = <int32_t *>cnp.PyArray_DATA(out)
        with nogil:
            for i in range(n):
                dst[i] = ring_node(t._slots, t._succ, t.anchor, src[i])
        return out

    # ---- membership changes ---------------------------------------------------------------

    def add(self, node, weight=1.0):
        """Add ``node`` with ``weight`` (> 0, finite). Only keys moving onto it move."""
        _check_name(node)
        cdef double w = _check_weight(weight)
        if node in self._index:
            raise DuplicateNodeError(f"node {node!r} is already in the ring")
        cdef Py_ssize_t c = _bucket_count(w, self.resolution)
        cdef RingTable t = self._table
        self._check_capacity(c)
        t = t.copy(t.anchor + max(0, c - t.n_removed))
        cdef int32_t idx = <int32_t>len(t.names)
        own = [t.acquire(idx) for _ in range(c)]
        t.names = t.names + (node,)
        # publish (nothing above can fail once the copy exists)
        self._index[node] = idx
        self._weights.append(w)
        self._buckets.append(own)
        self._table = t

    def remove(self, node):
        """Remove ``node`` (any node). Only the keys it owned move, spread over the others."""
        cdef Py_ssize_t idx = self._node_index(node)
        cdef RingTable t = self._table.copy(self._table.anchor)
        cdef Py_ssize_t k
        own = self._buckets[idx]
        # reverse acquisition order, so re-adding restores the same buckets in the same order
        for k in range(len(own) - 1, -1, -1):
            t.release(<int32_t>own[k])
        # renumber the nodes after idx
        node_col = t.slots[SLOT_NODE::SLOT_WIDTH]
        node_col[node_col > idx] -= 1
        names = list(t.names)
        del names[idx]
        t.names = tuple(names)
        del self._weights[idx]
        del self._buckets[idx]
        del self._index[node]
        for i in range(idx, len(names)):
            self._index[names[i]] = i
        self._table = t

    def set_weight(self, node, weight):
        """Change a node's weight. Keys move only onto it (heavier) or only off it (lighter)."""
        cdef Py_ssize_t idx = self._node_index(node)
        cdef double w = _check_weight(weight)
        cdef Py_ssize_t c = _bucket_count(w, self.resolution)
        own = self._buckets[idx]
        cdef Py_ssize_t have = len(own)
        cdef Py_ssize_t k
        cdef RingTable t = self._table
        if c > have:
            self._check_capacity(c - have)
            t = t.copy(t.anchor + max(0, c - have - t.n_removed))
            own = own + [t.acquire(<int32_t>idx) for _ in range(c - have)]
        elif c < have:
            t = t.copy(t.anchor)
            for k in range(have - 1, c - 1, -1):
                t.release(<int32_t>own[k])
            own = own[:c]
        self._buckets[idx] = own
        self._weights[idx] = w
        self._table = t

    cdef int _check_capacity(self, Py_ssize_t more) except -1:
        cdef RingTable t = self._table
        if t.anchor + max(0, more - t.n_removed) > MAX_RING_BUCKETS:
            raise InvalidValueError(
                f"the ring would exceed {MAX_RING_BUCKETS} virtual buckets; lower the "
                "weights or the resolution")
        return 0

    cdef Py_ssize_t _node_index(self, object node) except -1:
        try:
            return self._index[node]
        except (KeyError, TypeError):
            raise UnknownNodeError(f"node {node!r} is not in the ring") from None

    # ---- introspection ---------------------------------------------------------------------

    @property
    def nodes(self):
        """Node names; ``lookup_many`` returns indices into this list."""
        return list(self._table.names)

    @property
    def weights(self):
        """Weights as given, in ``nodes`` order."""
        return list(self._weights)

    @property
    def bucket_counts(self):
        """Virtual buckets per node, in ``nodes`` order (``round(weight * resolution)``)."""
        return [len(b) for b in self._buckets]

    @property
    def table(self):
        """The current immutable bucket table (for inspection and tests)."""
        return self._table

    def index(self, node):
        """Index of ``node`` in ``nodes``."""
        return self._node_index(node)

    def __len__(self):
        return len(self._table.names)

    def __contains__(self, node):
        try:
            return node in self._index
        except TypeError:
            return False

    def __iter__(self):
        return iter(self._table.names)

    def __repr__(self):
        return (f"Ring({len(self)} nodes, {self._table.working} buckets, "
                f"resolution={self.resolution:g})")

    # ---- sharing the exact placement between processes ------------------------------------

    def to_dict(self):
        """JSON-safe state that ``Ring.from_dict`` turns back into an identical ring."""
        return {
            "version": STATE_VERSION,
            "resolution": self.resolution,
            "nodes": list(self._table.names),
            "weights": list(self._weights),
            "buckets": [list(b) for b in self._buckets],
            "anchor": int(self._table.anchor),
            "removed": self._table.removed[:self._table.n_removed].tolist(),
        }

    @classmethod
    def from_dict(cls, state):
        """Rebuild a ring from ``to_dict()`` output (validated; placement is identical).

        The table is a function of the bucket count and the stack of removed buckets: new
        buckets are only created while none is removed, and a restore undoes the matching
        removal exactly, so replaying the removals from an all-working table reproduces it.
        """
        if not isinstance(state, dict):
            raise InvalidTypeError(f"state must be a dict, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise InvalidValueError(
                f"state version must be {STATE_VERSION}, got {state.get('version')!r}")
        try:
            resolution = state["resolution"]
            names = list(state["nodes"])
            weights = list(state["weights"])
            buckets = [list(b) for b in state["buckets"]]
            anchor = int(state["anchor"])
            removed = [int(b) for b in state["removed"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidValueError(f"state is missing or has a malformed field: {exc}") from None
        cdef Ring ring = Ring.__new__(Ring)
        ring.resolution = check_positive("resolution", resolution)
        if not (len(names) == len(weights) == len(buckets)):
            raise InvalidValueError("state nodes, weights and buckets must have equal lengths")
        if not 0 <= anchor <= MAX_RING_BUCKETS:
            raise InvalidValueError(f"state anchor must be in [0, {MAX_RING_BUCKETS}]")
        owner = [-1] * anchor
        index = {}
        for i, name in enumerate(names):
            _check_name(name)
            if name in index:
                raise DuplicateNodeError(f"node {name!r} appears twice in state")
            index[name] = i
            weights[i] = _check_weight(weights[i])
            if not buckets[i]:
                raise InvalidValueError(f"node {name!r} has no buckets in state")
            for b in buckets[i]:
                if not (isinstance(b, int) and 0 <= b < anchor) or owner[b] != -1:
                    raise InvalidValueError(f"state bucket {b!r} is out of range or shared")
                owner[b] = i
        if sorted(removed + [b for b, o in enumerate(owner) if o != -1]) != list(range(anchor)):
            raise InvalidValueError("state removed buckets and node buckets must partition "
                                    "range(anchor)")
        cdef RingTable t = _empty_table().copy(anchor)
        cdef int32_t k
        for k in range(anchor):
            t.acquire(-1)
        for b in removed:
            t.release(<int32_t>b)
        for b, o in enumerate(owner):
            if o != -1:
                t._slots[SLOT_WIDTH * b + SLOT_NODE] = o
        t.names = tuple(names)
        ring._index = index
        ring._weights = weights
        ring._buckets = buckets
        ring._table = t
        return ring

    def copy(self):
        """An independent ring with the same placement."""
        return Ring.from_dict(self.to_dict())

    def __eq__(self, other):
        if not isinstance(other, Ring):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None


cdef int _raise_empty() except -1:
    raise EmptyRingError("the ring has no nodes; add one before looking keys up")


cdef uint64_t _hash_value(object h) except? 0:
    if PyLong_CheckExact(h):
        if 0 <= h <= 0xFFFFFFFFFFFFFFFF:
            return PyLong_AsUnsignedLongLong(h)
    elif isinstance(h, bool) or not isinstance(h, (int, np.integer)):
        raise InvalidTypeError(f"h must be an int hash value, got {type(h).__name__}")
    elif 0 <= h <= 0xFFFFFFFFFFFFFFFF:
        return PyLong_AsUnsignedLongLong(int(h))
    raise InvalidValueError(f"h must be in [0, 2**64), got {h}")


cdef int _hash_keys(object keys, uint64_t *out, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    if type(keys) is list:
        for i in range(n):
            hash_object(<object>PyList_GET_ITEM(keys, i), &out[i])
    else:
        for i in range(n):
            hash_object(<object>PyTuple_GET_ITEM(keys, i), &out[i])
    return 0
