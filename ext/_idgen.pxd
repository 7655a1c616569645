# C-level interface of fastshard._idgen: the lock-free counter block behind IdGenerator.
from libc.stdint cimport uint64_t


cdef extern from "fs_atomic.h" nogil:
    const char *FS_ATOMIC_IMPL
    uint64_t fs_atomic_fetch_add_u64(uint64_t *p, uint64_t v)
    uint64_t fs_atomic_load_u64(uint64_t *p)
    void fs_atomic_store_u64(uint64_t *p, uint64_t v)
    int fs_atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired)


# One leased block of IDs [start, end) and the shared cursor threads draw from. The cursor
# sits on its own cache line: it is the only word written per ID.
cdef struct fs_id_block:
    uint64_t cursor
    uint64_t _pad_cursor[7]
    uint64_t start
    uint64_t end
    uint64_t _pad_bounds[6]


cdef inline bint fs_block_take_one(fs_id_block *b, uint64_t *out) noexcept nogil:
    """Claim one value into ``out``; true if it is a valid ID, false when the block is
    exhausted or being replaced (``out`` then holds the rejected value)."""
    cdef uint64_t x = fs_atomic_fetch_add_u64(&b.cursor, 1)
    out[0] = x
    # end before start: an installer publishes end last, so a reader that sees the new end
    # also sees the new start (and an old end paired with a new start is an empty range).
    return x < fs_atomic_load_u64(&b.end) and x >= fs_atomic_load_u64(&b.start)


cdef Py_ssize_t fs_block_take_many(fs_id_block *b, uint64_t *out, Py_ssize_t n) noexcept nogil


cdef class IdCore:
    cdef fs_id_block blk
    cdef readonly uint64_t installs
