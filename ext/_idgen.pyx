# cython: freethreading_compatible = True
"""The hot path of fastshard.ids: IDs claimed from a leased block with one atomic fetch-add.

``IdCore`` holds a single block ``[start, end)`` of ready-made 64-bit IDs (time shard, host
id and counter already packed, so consecutive IDs of a block are consecutive integers) and a
cursor. ``next_id`` is one ``fetch_add`` plus two loads; ``next_ids`` claims whole runs with a
compare-exchange and fills a NumPy array without the GIL. Neither takes a lock, so they are
safe from many threads, also on free-threaded CPython.

When the block is exhausted (or was invalidated because the time shard changed, the lease was
lost or the process forked), they call ``self._refill(n)``, which the Python subclass
(:class:`fastshard.ids.IdGenerator`) implements: it installs the next block under a Python lock.

Why this is safe without a lock around the install: the cursor never decreases. ``install``
first sets ``end = 0`` (nothing validates), then ``start``, then raises the cursor to at least
``start`` with a compare-exchange, then publishes ``end``. Every value a reader gets from
``fetch_add`` is therefore handed to that one reader only, and it is kept only if it lies in the
``[start, end)`` the reader then sees; blocks are installed in increasing order, so a value that
an overshooting reader got from an old block and that falls in a new block's range was never
given to anyone else either. Values skipped this way are wasted, never duplicated. A reader
whose value was rejected may move the cursor back by exactly that value, and only if the
cursor still stands right after it: then no one else has been handed anything since.
"""

cimport cython
from libc.stdint cimport uint64_t

import numpy as np

from fastshard.errors import IdExhaustedError, InvalidTypeError, InvalidValueError

#: which atomics implementation the compiler picked (C11, GCC builtins or MSVC intrinsics)
ATOMICS = FS_ATOMIC_IMPL.decode("ascii")
#: the largest batch ``next_ids`` accepts in one call
MAX_BATCH = 1 << 28


cdef Py_ssize_t fs_block_take_many(fs_id_block *b, uint64_t *out, Py_ssize_t n) noexcept nogil:
    """Claim up to ``n`` consecutive IDs per run and write them to ``out``; returns how many."""
    cdef Py_ssize_t filled = 0, i, k
    cdef uint64_t c, s, e
    while filled < n:
        e = fs_atomic_load_u64(&b.end)
        s = fs_atomic_load_u64(&b.start)
        c = fs_atomic_load_u64(&b.cursor)
        if c < s or c >= e:
            break
        k = n - filled
        if <uint64_t>k > e - c:
            k = <Py_ssize_t>(e - c)
        # the compare-exchange makes [c, c+k) ours alone; a concurrent install moves the
        # cursor and makes it fail, so we never claim across a block change
        if not fs_atomic_cas_u64(&b.cursor, &c, c + <uint64_t>k):
            continue
        for i in range(k):
            out[filled + i] = c + <uint64_t>i
        filled += k
    return filled


cdef class IdCore:
    """A lock-free block of IDs; subclass it and implement ``_refill`` to supply blocks."""

    def __cinit__(self):
        self.blk.cursor = 0
        self.blk.start = 0
        self.blk.end = 0
        self.installs = 0

    def next_id(self):
        """One new ID (an ``int``)."""
        cdef uint64_t x, seen
        while True:
            if fs_block_take_one(&self.blk, &x):
                return x
            # give the rejected value back if nobody has moved the cursor since: a value no
            # one accepted may be handed out again, and without this every exhausted block
            # would skip the first ID of the next (contiguous) one
            seen = x + 1
            fs_atomic_cas_u64(&self.blk.cursor, &seen, x)
            self._refill(1)

    def next_ids(self, n):
        """``n`` new IDs as a ``numpy.uint64`` array, increasing within the call."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise InvalidTypeError(f"n must be an int, got {type(n).__name__}")
        if not 0 <= n <= MAX_BATCH:
            raise InvalidValueError(f"n must be in [0, {MAX_BATCH}], got {n}")
        cdef Py_ssize_t want = n, filled = 0, got
        out = np.empty(want, dtype=np.uint64)
        cdef uint64_t[::1] view = out
        while filled < want:
            with nogil:
                got = fs_block_take_many(&self.blk, &view[filled], want - filled)
            filled += got
            if filled < want:
                self._refill(want - filled)
        return out

    def _refill(self, n):
        raise IdExhaustedError("this IdCore has no block source; use fastshard.ids.IdGenerator")

    # ---------------------------------------------------------------- block management
    def install(self, uint64_t start, uint64_t end):
        """Replace the block by ``[start, end)``; blocks must come in increasing order.

        Call it from one thread at a time (IdGenerator holds its refill lock).
        """
        cdef uint64_t c
        if end <= start:
            raise InvalidValueError(f"block end must be > start, got [{start}, {end})")
        if start < fs_atomic_load_u64(&self.blk.start):
            raise InvalidValueError(
                f"blocks must be installed in increasing order: start {start} is below "
                f"the current block's start {self.blk.start}"
            )
        fs_atomic_store_u64(&self.blk.end, 0)
        fs_atomic_store_u64(&self.blk.start, start)
        c = fs_atomic_load_u64(&self.blk.cursor)
        while c < start:
            if fs_atomic_cas_u64(&self.blk.cursor, &c, start):
                break
        fs_atomic_store_u64(&self.blk.end, end)
        self.installs += 1

    def invalidate(self):
        """Stop issuing from the current block (the next call goes to ``_refill``)."""
        fs_atomic_store_u64(&self.blk.end, 0)

    def snapshot(self):
        """``(cursor, start, end)`` as seen now; the cursor may overshoot ``end``."""
        cdef uint64_t e = fs_atomic_load_u64(&self.blk.end)
        cdef uint64_t s = fs_atomic_load_u64(&self.blk.start)
        return fs_atomic_load_u64(&self.blk.cursor), s, e

    def remaining(self):
        """IDs left in the current block (0 when exhausted or invalidated)."""
        cdef uint64_t e = fs_atomic_load_u64(&self.blk.end)
        cdef uint64_t s = fs_atomic_load_u64(&self.blk.start)
        cdef uint64_t c = fs_atomic_load_u64(&self.blk.cursor)
        if c < s:
            c = s
        return e - c if c < e else 0
