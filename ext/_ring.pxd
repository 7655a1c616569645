# cython: language_level=3
# C-level interface of fastshard._ring: the consistent, weighted ring.
#
# Placement (docs/hashing.md specifies it fully, so other languages can reproduce it):
#   * the 64-bit hash space is cut into S equal slots, S a power of two (at least 4096 and
#     at least slots_per_node * nodes); slot(h) = h >> (64 - log2 S), i.e. the top bits;
#   * an int32 table says which node owns each slot; a node owns about S * weight / total
#     slots (at least one);
#   * adding a node (or raising a weight) takes slots from the most over-served nodes,
#     removing one (or lowering a weight) hands its slots to the most under-served ones, so
#     only keys moving onto / off that node move; S doubling splits every slot in two
#     halves with the same owner, which moves nothing.
# A lookup is therefore one shift and one table read, with no data-dependent branch.
#
# A RingTable is never mutated once published: Ring builds a new one per change and swaps
# the reference, so a batch lookup running without the GIL keeps a consistent table.

from libc.stdint cimport uint64_t, int32_t


cdef class RingTable:
    cdef readonly object owner      # int32[S]: slot -> node index (-1 only in an empty ring)
    cdef readonly tuple names       # node index -> node name
    cdef readonly Py_ssize_t n_slots
    cdef readonly int shift         # 64 - log2(n_slots)
    cdef const int32_t *_owner


cdef class Ring:
    cdef RingTable _table
    cdef dict _index                # node name -> node index
    cdef list _weights              # node index -> weight as given (float)
    cdef list _slots                # node index -> ascending list of the slots it owns
    cdef readonly Py_ssize_t slots_per_node
    cdef object _write_lock         # serialises changes; lookups never take it

    cdef Py_ssize_t _node_index(self, object node) except -1
    cdef _add(self, object node, object weight)
    cdef _remove(self, object node)
    cdef _set_weight(self, object node, object weight)
    cdef _publish(self, object owner, tuple names, list weights, list slots, dict index)


# Node index owning hash h (the table must belong to a non-empty ring).
cdef inline int32_t ring_node(const int32_t *owner, int shift, uint64_t h) noexcept nogil:
    return owner[h >> shift]
