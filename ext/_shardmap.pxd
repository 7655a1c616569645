# cython: language_level=3
# The compiled slice table behind fastshard.ShardMap.
#
# A table is immutable once built: ShardMap builds a new one for every epoch and swaps the
# reference, so a reader that picked up a table sees one consistent epoch for its whole call
# (including batch lookups that run without the GIL).

from libc.stdint cimport uint64_t, int32_t, int64_t


cdef class SliceTable:
    # NumPy arrays owning the memory the raw pointers below point into.
    cdef readonly object starts        # uint64[n]: sorted slice starts, starts[0] == 0
    cdef readonly object slice_shard   # int32[n]: slice index -> shard index
    cdef readonly tuple shard_names    # shard index -> shard id (str)
    cdef readonly int64_t epoch
    cdef object _radix_array           # int32[2**bits + 1]
    cdef const uint64_t *_starts
    cdef const int32_t *_slice_shard
    cdef const int32_t *_radix
    cdef int _shift                    # 64 - bits: h >> _shift is the radix bucket
    cdef Py_ssize_t _n


cdef class ShardMapCore:
    cdef SliceTable _table


# Index of the slice containing hash `h`: the last i with starts[i] <= h.
# The radix index narrows the search to the slices overlapping h's top-bits bucket,
# radix[b] being the slice containing the first hash of bucket b (and radix[2**bits] the
# last slice), so the answer lies in [radix[b], radix[b + 1]]; usually that range is one
# slice and the binary search does no iteration.
cdef inline Py_ssize_t find_slice(const uint64_t *starts, const int32_t *radix, int shift,
                                  uint64_t h) noexcept nogil:
    cdef uint64_t bucket = h >> shift
    cdef Py_ssize_t lo = radix[bucket]
    cdef Py_ssize_t hi = radix[bucket + 1]
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if starts[mid] <= h:
            lo = mid
        else:
            hi = mid - 1
    return lo
