# cython: language_level=3
# C-level interface of fastshard._ring: the consistent, weighted ring with arbitrary removal.
#
# Placement (documented in docs/hashing.md so other languages can reproduce it):
#   * every node owns round(weight * resolution) (at least 1) virtual buckets;
#   * a key's 64-bit hash h picks a bucket b = jumpback(h, anchor), anchor being the number
#     of buckets ever created (working or removed);
#   * removed buckets are skipped AnchorHash-style (Mendelson et al. 2020, the scheme
#     MementoHash (Coluzzi et al. 2023) compacts): b was removed when the working set had
#     removed_at[b] buckets, so the key is re-hashed uniformly onto those; an id that itself
#     was removed earlier (removed_at >= removed_at[b]) is replaced by its successor `succ`,
#     i.e. the bucket that took its place in the working set when it was removed.
#
# A RingTable is never mutated once published: Ring builds a new one per change and swaps
# the reference, so a batch lookup running without the GIL keeps a consistent table.

from libc.stdint cimport uint64_t, int32_t

from fs_jump cimport fs_mix64, fs_jumpback_hash

# Working buckets have removed_at == -1.
cdef enum:
    SLOT_REMOVED_AT = 0
    SLOT_NODE = 1
    SLOT_WIDTH = 2


cdef class RingTable:
    # NumPy arrays owning the memory behind the raw pointers.
    cdef readonly object slots      # int32[anchor, 2]: (removed_at, node index) per bucket
    cdef readonly object succ       # int32[anchor]: AnchorHash K (replacement of a removed id)
    cdef readonly object position   # int32[anchor]: AnchorHash L (bucket -> working position)
    cdef readonly object occupant   # int32[anchor]: AnchorHash W (position -> bucket)
    cdef readonly object removed    # int32[anchor]: stack of removed buckets, bottom first
    cdef readonly tuple names       # node index -> node name
    cdef readonly int32_t anchor    # buckets ever created
    cdef readonly int32_t working   # buckets in service
    cdef readonly int32_t n_removed # depth of the removed stack (anchor - working)
    cdef int32_t *_slots
    cdef int32_t *_succ
    cdef int32_t *_position
    cdef int32_t *_occupant
    cdef int32_t *_removed
    cdef Py_ssize_t _capacity

    cdef RingTable copy(self, Py_ssize_t capacity)
    cdef int32_t acquire(self, int32_t node) noexcept nogil
    cdef void release(self, int32_t bucket) noexcept nogil


cdef class Ring:
    cdef RingTable _table
    cdef dict _index            # node name -> node index
    cdef list _weights          # node index -> weight as given (float)
    cdef list _buckets          # node index -> list of its buckets, in acquisition order
    cdef readonly double resolution

    cdef int _check_capacity(self, Py_ssize_t more) except -1
    cdef Py_ssize_t _node_index(self, object node) except -1


# The key's re-hash onto the `size` working buckets that remained when `bucket` was removed.
# Lemire's multiply-shift on the top 32 bits of a SplitMix64 word (size < 2**31).
cdef inline int32_t chain_rehash(uint64_t h, int32_t bucket, int32_t size) noexcept nogil:
    cdef uint64_t word = fs_mix64(h + 0xD1B54A32D192ED03ULL * <uint64_t>(bucket + 1))
    return <int32_t>(((word >> 32) * <uint64_t>size) >> 32)


# Bucket of hash h (the ring must have at least one working bucket).
cdef inline int32_t ring_bucket(const int32_t *slots, const int32_t *succ, int32_t anchor,
                                uint64_t h) noexcept nogil:
    cdef int32_t b = fs_jumpback_hash(h, anchor)
    cdef int32_t size = slots[SLOT_WIDTH * b + SLOT_REMOVED_AT]
    cdef int32_t x
    while size >= 0:
        x = chain_rehash(h, b, size)
        while slots[SLOT_WIDTH * x + SLOT_REMOVED_AT] >= size:
            x = succ[x]
        b = x
        size = slots[SLOT_WIDTH * b + SLOT_REMOVED_AT]
    return b


cdef inline int32_t ring_node(const int32_t *slots, const int32_t *succ, int32_t anchor,
                              uint64_t h) noexcept nogil:
    return slots[SLOT_WIDTH * ring_bucket(slots, succ, anchor, h) + SLOT_NODE]
