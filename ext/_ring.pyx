# cython: language_level=3, binding=False, always_allow_keywords=False
"""Compiled core of fastshard.Ring: weighted consistent placement through a slot table.

Lookups (``ring_node`` in _ring.pxd) are one shift and one table read in C. Changes to the
ring are rare and run here in Python-level code: they decide which slots change owner,
following the rules in docs/hashing.md, then publish a new immutable table.
"""

import base64
import heapq
import math
import numbers
import threading
import zlib

from libc.stdint cimport uint64_t, int32_t
from cpython.list cimport PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

cimport numpy as cnp
import numpy as np

from fs_keys cimport hash_object, hash_value_arg

from fastshard.errors import (
    DuplicateNodeError,
    EmptyRingError,
    InvalidTypeError,
    InvalidValueError,
    UnknownNodeError,
    check_int,
    check_positive,
)

cnp.import_array()

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)

# Slots per node the table keeps at least: a node's share is placed to within about
# 1/64 of itself, and 1024 nodes need a 65536-slot (256 KiB) table that stays in L2.
DEFAULT_SLOTS_PER_NODE = 64
# The table never has fewer slots than this (so shift <= 52 and a small ring is fine-grained).
MIN_SLOTS = 1 << 12
# ... nor more (64 MiB of int32); with the default density that is 262,144 nodes.
MAX_SLOTS = 1 << 24
# Version of the to_dict() layout.
STATE_VERSION = 2


cdef class RingTable:
    """One immutable snapshot: the slot -> node table and the node names."""

    def __init__(self):
        raise TypeError("RingTable is internal; build a fastshard.Ring")

    @property
    def working(self):
        return len(self.names)


cdef RingTable _make_table(object owner, tuple names):
    cdef RingTable t = RingTable.__new__(RingTable)
    owner = np.ascontiguousarray(owner, dtype=np.int32)
    owner.setflags(write=False)
    t.owner = owner
    t.names = names
    t.n_slots = owner.shape[0]
    t.shift = 64 - (t.n_slots.bit_length() - 1)
    t._owner = <const int32_t *>cnp.PyArray_DATA(owner)
    return t


# ---- validation helpers ------------------------------------------------------------------

cdef object _check_name(object node):
    if isinstance(node, bool) or not isinstance(node, (str, int)):
        raise InvalidTypeError(f"node must be a str or int name, got {type(node).__name__}")
    return node


cdef double _check_weight(object weight) except -1:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise InvalidTypeError(
            f"weight must be a real number > 0, got {type(weight).__name__}")
    return check_positive("weight", weight)


def slots_needed(Py_ssize_t nodes, Py_ssize_t slots_per_node, Py_ssize_t current=MIN_SLOTS):
    """Table size for `nodes` nodes: the smallest power of two >= current, MIN_SLOTS and
    slots_per_node * nodes. Raises when that exceeds MAX_SLOTS."""
    cdef Py_ssize_t s = max(current, MIN_SLOTS)
    while s < slots_per_node * nodes:
        s *= 2
    if s > MAX_SLOTS:
        raise InvalidValueError(
            f"a ring of {nodes} nodes at slots_per_node={slots_per_node} needs {s} slots, "
            f"more than {MAX_SLOTS}; lower slots_per_node")
    return s


def total_weight(weights):
    """Sum of the weights, added left to right in node order (the documented order)."""
    cdef double total = 0.0
    for w in weights:
        total += <double>w
    return total


def target_slots(Py_ssize_t n_slots, double weight, double total, Py_ssize_t others):
    """Slots a node of `weight` should own: round-half-up of n_slots * weight / total,
    at least 1 and leaving at least one slot to each of `others` nodes."""
    cdef double exact = (<double>n_slots * weight) / total
    cdef Py_ssize_t t = <Py_ssize_t>math.floor(exact + 0.5)
    return max(1, min(n_slots - others, t))


def _steal(list slots, list weights, double total, Py_ssize_t n_slots, Py_ssize_t count,
           Py_ssize_t skip):
    """Take `count` slots from the most over-served nodes (never the last slot of a node).

    Over-service of node i is len(slots[i]) - n_slots * w_i / total; the largest goes first,
    ties to the lower index; each pick takes that node's highest slot. Mutates `slots`.
    """
    heap = []
    for i in range(len(slots)):
        if i != skip and len(slots[i]) > 1:
            quota = (<double>n_slots * <double>weights[i]) / total
            heap.append((-(len(slots[i]) - quota), i, quota))
    heapq.heapify(heap)
    taken = []
    for _ in range(count):
        _, i, quota = heapq.heappop(heap)
        taken.append(slots[i].pop())
        if len(slots[i]) > 1:
            heapq.heappush(heap, (-(len(slots[i]) - quota), i, quota))
    return taken


def _give(list given, list slots, list weights, double total, Py_ssize_t n_slots,
          Py_ssize_t skip):
    """Hand each slot of `given`, in order, to the most under-served node (not `skip`).

    Under-service of node i is n_slots * w_i / total - len(slots[i]); the largest goes
    first, ties to the lower index. Returns the receiving node index per slot. Mutates
    `slots` (each receiving list stays sorted).
    """
    heap = []
    for i in range(len(slots)):
        if i != skip:
            quota = (<double>n_slots * <double>weights[i]) / total
            heap.append((-(quota - len(slots[i])), i, quota))
    heapq.heapify(heap)
    receivers = []
    touched = set()
    for s in given:
        _, i, quota = heapq.heappop(heap)
        slots[i].append(s)
        touched.add(i)
        receivers.append(i)
        heapq.heappush(heap, (-(quota - len(slots[i])), i, quota))
    for i in touched:
        slots[i].sort()
    return receivers


def _initial_counts(list weights, Py_ssize_t n_slots):
    """Slots per node for a ring built in one go: largest remainder, at least one each.

    floor(quota) (at least 1) first; leftover slots go one each to the largest
    quota - count (ties: lower index); an excess (from the minimum of one) is taken one
    each from the largest count - quota among nodes with more than one slot.
    """
    cdef double total = total_weight(weights)
    quotas = [(<double>n_slots * <double>w) / total for w in weights]
    counts = [max(1, <Py_ssize_t>math.floor(q)) for q in quotas]
    left = n_slots - sum(counts)
    if left > 0:
        order = sorted(range(len(counts)), key=lambda i: (-(quotas[i] - counts[i]), i))
        for k in range(left):
            counts[order[k % len(order)]] += 1
    while left < 0:
        i = min((i for i in range(len(counts)) if counts[i] > 1),
                key=lambda i: (-(counts[i] - quotas[i]), i))
        counts[i] -= 1
        left += 1
    return counts


cdef list _expand(list slots, Py_ssize_t factor):
    if factor == 1:
        return [list(s) for s in slots]
    return [[s * factor + j for s in own for j in range(factor)] for own in slots]


cdef class Ring:
    """Consistent placement of keys onto named, weighted nodes.

    ``lookup(key)`` returns the node owning a str/bytes/int key: its XXH3-64 hash's top
    bits select one of S slots and a table gives the slot's node. Each node owns about
    ``S * weight / total_weight`` slots (at least one; S >= slots_per_node * nodes), so:

    * a node's share of keys is proportional to its weight (to within ~1/slots_per_node);
    * ``add`` moves only keys onto the new node, ``remove`` only the removed node's keys
      (for ANY node), each the optimal fraction up to one slot per node.

    Placement depends on the sequence of ``add``/``remove``/``set_weight`` calls (not only on
    the final set of nodes): share it between processes with ``to_dict``/``from_dict``, or
    replay the same calls in the same order.
    """

    def __cinit__(self):
        self._write_lock = threading.Lock()

    def __init__(self, nodes=(), weights=None, *, slots_per_node=DEFAULT_SLOTS_PER_NODE):
        cdef Py_ssize_t spn = check_int("slots_per_node", slots_per_node, 1, MAX_SLOTS)
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
            if isinstance(weights, (str, bytes)):
                raise InvalidTypeError("weights must be a sequence of numbers, got str")
            try:
                ws = list(weights)
            except TypeError:
                raise InvalidTypeError(
                    f"weights must be a sequence of numbers, got {type(weights).__name__}"
                ) from None
            if len(ws) != len(names):
                raise InvalidValueError(
                    f"weights must have one entry per node ({len(names)}), got {len(ws)}")
        index = _index_nodes(names, ws, "nodes")
        cdef Py_ssize_t n_slots = slots_needed(len(names), spn)
        self.slots_per_node = spn
        if not names:
            self._publish(np.full(n_slots, -1, dtype=np.int32), (), [], [], {})
            return
        counts = _initial_counts(ws, n_slots)
        owner = np.repeat(np.arange(len(names), dtype=np.int32), counts)
        slots, start = [], 0
        for c in counts:
            slots.append(list(range(start, start + c)))
            start += c
        self._publish(owner, tuple(names), ws, slots, index)

    cdef _publish(self, object owner, tuple names, list weights, list slots, dict index):
        self._table = _make_table(owner, names)
        self._weights = weights
        self._slots = slots
        self._index = index

    # ---- lookups (the hot path) ------------------------------------------------------------

    def lookup(self, key):
        """Name of the node owning ``key`` (str, bytes, or int in [-2**63, 2**64))."""
        cdef uint64_t h
        cdef RingTable t = self._table
        hash_object(key, &h)
        if PyTuple_GET_SIZE(t.names) == 0:
            _raise_empty()
        return <object>PyTuple_GET_ITEM(t.names, ring_node(t._owner, t.shift, h))

    def lookup_hash(self, h):
        """Name of the node owning a key whose ``hash_key`` is ``h`` (int in [0, 2**64))."""
        cdef RingTable t = self._table
        cdef uint64_t hv = hash_value_arg(h)
        if PyTuple_GET_SIZE(t.names) == 0:
            _raise_empty()
        return <object>PyTuple_GET_ITEM(t.names, ring_node(t._owner, t.shift, hv))

    def lookup_index(self, key):
        """Index into ``nodes`` of the node owning ``key``."""
        cdef uint64_t h
        cdef RingTable t = self._table
        hash_object(key, &h)
        if PyTuple_GET_SIZE(t.names) == 0:
            _raise_empty()
        return ring_node(t._owner, t.shift, h)

    def lookup_many(self, keys):
        """Node indices (int32 array, into ``nodes``) for many keys.

        ``keys`` is either a list/tuple (or other iterable) of str/bytes/int keys, hashed
        like ``lookup``; or a NumPy unsigned/non-negative integer array of pre-computed
        ``hash_key`` values, placed with the GIL released.
        """
        cdef RingTable t = self._table
        cdef Py_ssize_t i, n
        cdef int shift = t.shift
        cdef const int32_t *owner = t._owner
        cdef const uint64_t *src
        cdef int32_t *dst
        cdef uint64_t h
        if isinstance(keys, np.ndarray) and keys.dtype.kind in "ui":
            from fastshard._hashing import as_hash_array
            hashes = as_hash_array(keys)
            n = hashes.shape[0]
            out = np.empty(n, dtype=np.int32)
            if n == 0:
                return out
            if PyTuple_GET_SIZE(t.names) == 0:
                _raise_empty()
            src = <const uint64_t *>cnp.PyArray_DATA(hashes)
            dst = <int32_t *>cnp.PyArray_DATA(out)
            with nogil:
                for i in range(n):
                    dst[i] = ring_node(owner, shift, src[i])
            return out
        keys = _key_sequence(keys)
        n = len(keys)
        out = np.empty(n, dtype=np.int32)
        if n == 0:
            return out
        if PyTuple_GET_SIZE(t.names) == 0:
            _raise_empty()
        dst = <int32_t *>cnp.PyArray_DATA(out)
        # hashing needs each key object (GIL held); the table read is one load per key
        if type(keys) is list:
            for i in range(n):
                hash_object(<object>PyList_GET_ITEM(keys, i), &h)
                dst[i] = ring_node(owner, shift, h)
        else:
            for i in range(n):
                hash_object(<object>PyTuple_GET_ITEM(keys, i), &h)
                dst[i] = ring_node(owner, shift, h)
        return out

    # ---- membership changes ---------------------------------------------------------------

    def add(self, node, weight=1.0):
        """Add ``node`` with ``weight`` (> 0, finite). Only keys moving onto it move."""
        with self._write_lock:
            self._add(node, weight)

    def remove(self, node):
        """Remove ``node`` (any node). Only the keys it owned move, spread over the others
        in proportion to their weights."""
        with self._write_lock:
            self._remove(node)

    def set_weight(self, node, weight):
        """Change a node's weight. Keys move only onto it (heavier) or only off it (lighter)."""
        with self._write_lock:
            self._set_weight(node, weight)

    cdef _add(self, object node, object weight):
        _check_name(node)
        cdef double w = _check_weight(weight)
        if node in self._index:
            raise DuplicateNodeError(f"node {node!r} is already in the ring")
        cdef RingTable t = self._table
        cdef Py_ssize_t n = len(t.names)
        cdef Py_ssize_t n_slots = slots_needed(n + 1, self.slots_per_node, t.n_slots)
        cdef Py_ssize_t factor = n_slots // t.n_slots
        # everything below works on copies and cannot fail: publish at the end
        owner = np.repeat(t.owner, factor) if factor > 1 else t.owner.copy()
        slots = _expand(self._slots, factor)
        weights = self._weights + [w]
        if n == 0:
            owner[:] = 0
            slots.append(list(range(n_slots)))
        else:
            total = total_weight(weights)
            want = target_slots(n_slots, w, total, n)
            taken = _steal(slots, weights, total, n_slots, want, n)
            taken.sort()
            owner[np.array(taken, dtype=np.int64)] = n
            slots.append(taken)
        index = dict(self._index)
        index[node] = n
        self._publish(owner, t.names + (node,), weights, slots, index)

    cdef _remove(self, object node):
        cdef Py_ssize_t idx = self._node_index(node)
        cdef RingTable t = self._table
        owner = t.owner.copy()
        slots = [list(s) for s in self._slots]
        weights = list(self._weights)
        freed = slots[idx]
        if len(weights) > 1:
            others = weights[:idx] + weights[idx + 1:]
            receivers = _give(freed, slots, weights, total_weight(others), t.n_slots, idx)
            owner[np.array(freed, dtype=np.int64)] = np.array(receivers, dtype=np.int32)
        else:
            owner[:] = -1
        del slots[idx]
        del weights[idx]
        # renumber the nodes after idx
        owner[owner > idx] -= 1
        names = t.names[:idx] + t.names[idx + 1:]
        index = {name: i for i, name in enumerate(names)}
        self._publish(owner, names, weights, slots, index)

    cdef _set_weight(self, object node, object weight):
        cdef Py_ssize_t idx = self._node_index(node)
        cdef double w = _check_weight(weight)
        cdef RingTable t = self._table
        weights = list(self._weights)
        weights[idx] = w
        cdef double total = total_weight(weights)
        cdef Py_ssize_t n = len(weights)
        cdef Py_ssize_t have = len(self._slots[idx])
        cdef Py_ssize_t want = target_slots(t.n_slots, w, total, n - 1)
        owner = t.owner.copy()
        slots = [list(s) for s in self._slots]
        if want > have:
            taken = _steal(slots, weights, total, t.n_slots, want - have, idx)
            owner[np.array(taken, dtype=np.int64)] = idx
            slots[idx] = sorted(slots[idx] + taken)
        elif want < have:
            freed = slots[idx][want:][::-1]      # its highest slots, highest first
            slots[idx] = slots[idx][:want]
            receivers = _give(freed, slots, weights, total, t.n_slots, idx)
            owner[np.array(freed, dtype=np.int64)] = np.array(receivers, dtype=np.int32)
        self._publish(owner, t.names, weights, slots, dict(self._index))

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
    def slot_counts(self):
        """Slots owned per node, in ``nodes`` order (each node's share is count / n_slots)."""
        return [len(s) for s in self._slots]

    @property
    def n_slots(self):
        """Size of the slot table (a power of two)."""
        return self._table.n_slots

    @property
    def table(self):
        """The current immutable slot table (for inspection and tests)."""
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
        return (f"Ring({len(self)} nodes, {self._table.n_slots} slots, "
                f"slots_per_node={self.slots_per_node})")

    # ---- sharing the exact placement between processes ------------------------------------

    def to_dict(self):
        """JSON-safe state that ``Ring.from_dict`` turns back into an identical ring.

        ``owner`` is the slot table as little-endian int32, zlib-compressed, base64-encoded.
        """
        raw = np.ascontiguousarray(self._table.owner, dtype="<i4").tobytes()
        return {
            "version": STATE_VERSION,
            "slots_per_node": int(self.slots_per_node),
            "nodes": list(self._table.names),
            "weights": list(self._weights),
            "n_slots": int(self._table.n_slots),
            "owner": base64.b64encode(zlib.compress(raw, 6)).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, state):
        """Rebuild a ring from ``to_dict()`` output (validated; placement is identical)."""
        if not isinstance(state, dict):
            raise InvalidTypeError(f"state must be a dict, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise InvalidValueError(
                f"state version must be {STATE_VERSION}, got {state.get('version')!r}")
        try:
            spn = state["slots_per_node"]
            names = list(state["nodes"])
            weights = list(state["weights"])
            n_slots = int(state["n_slots"])
            raw = zlib.decompress(base64.b64decode(state["owner"], validate=True))
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise InvalidValueError(f"state is missing or has a malformed field: {exc}") from None
        check_int("slots_per_node", spn, 1, MAX_SLOTS)
        if len(names) != len(weights):
            raise InvalidValueError("state nodes and weights must have equal lengths")
        if (n_slots < MIN_SLOTS or n_slots > MAX_SLOTS or n_slots & (n_slots - 1)
                or n_slots < spn * len(names)):
            raise InvalidValueError(
                f"state n_slots must be a power of two in [{MIN_SLOTS}, {MAX_SLOTS}] and "
                f">= slots_per_node * nodes, got {n_slots}")
        if len(raw) != 4 * n_slots:
            raise InvalidValueError(f"state owner must hold {n_slots} int32 slots")
        owner = np.frombuffer(raw, dtype="<i4").astype(np.int32)
        index = _index_nodes(names, weights, "state")
        if names:
            if owner.min() < 0 or owner.max() >= len(names):
                raise InvalidValueError("state owner refers to a node that does not exist")
            counts = np.bincount(owner, minlength=len(names))
            if counts.min() < 1:
                raise InvalidValueError("state owner leaves a node without slots")
        elif not np.all(owner == -1):
            raise InvalidValueError("state owner of an empty ring must be all -1")
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(len(names) + 1))
        slots = [order[bounds[i]:bounds[i + 1]].tolist() for i in range(len(names))]
        cdef Ring ring = Ring.__new__(Ring)
        ring.slots_per_node = spn
        ring._publish(owner, tuple(names), weights, slots, index)
        return ring

    def __reduce__(self):
        # pickling (multiprocessing, caches) goes through the validated state
        return (_ring_from_state, (self.to_dict(),))

    def copy(self):
        """An independent ring with the same placement."""
        return Ring.from_dict(self.to_dict())

    def __eq__(self, other):
        if not isinstance(other, Ring):
            return NotImplemented
        return (self.slots_per_node == (<Ring>other).slots_per_node
                and self._table.names == (<Ring>other)._table.names
                and self._weights == (<Ring>other)._weights
                and np.array_equal(self._table.owner, (<Ring>other)._table.owner))

    __hash__ = None


def _ring_from_state(state):
    return Ring.from_dict(state)


cdef int _raise_empty() except -1:
    raise EmptyRingError("the ring has no nodes; add one before looking keys up")


cdef dict _index_nodes(list names, list weights, str where):
    """name -> position, checking every name and weight (weights are normalised in place)."""
    cdef dict index = {}
    for i, name in enumerate(names):
        _check_name(name)
        if name in index:
            raise DuplicateNodeError(f"node {name!r} appears twice in {where}")
        index[name] = i
        weights[i] = _check_weight(weights[i])
    return index


cdef object _key_sequence(object keys):
    """A list or tuple of keys; other iterables and object/str arrays are materialised."""
    if type(keys) is list or type(keys) is tuple:
        return keys
    if isinstance(keys, (str, bytes)):
        raise InvalidTypeError(
            f"keys must be a sequence of keys, not a single {type(keys).__name__}")
    if isinstance(keys, np.ndarray):
        if keys.ndim != 1:
            raise InvalidValueError(f"keys must be 1-dimensional, got ndim={keys.ndim}")
        if keys.dtype.kind not in "OUS":
            raise InvalidTypeError(
                f"keys array must hold hashes (unsigned ints) or str/bytes keys, "
                f"got dtype {keys.dtype}")
        return keys.tolist()
    try:
        return list(keys)
    except TypeError:
        raise InvalidTypeError(
            f"keys must be an iterable of str/bytes/int, got {type(keys).__name__}") from None
