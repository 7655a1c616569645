# cython: language_level=3
"""Compiled lookup for :class:`fastshard.ShardMap`: hash -> slice -> shard.

``SliceTable`` is one epoch's immutable table (sorted slice starts, slice -> shard index,
shard ids, a top-bits radix index). ``ShardMapCore`` holds the current table and answers
lookups; ``fastshard.shardmap.ShardMap`` subclasses it, so ``m.shard_for(key)`` is a direct
call into this module with no Python frame in between.
"""

from libc.stdint cimport uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, free
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

cimport numpy as cnp
import numpy as np

from fs_keys cimport (
    hash_object, hash_value_arg, fs_xxh3_64, fs_xxh3_64_u64, _int_key_bits, PyUnicode_AsUTF8AndSize,
)

from fastshard.errors import InvalidTypeError, InvalidValueError

cnp.import_array()

cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF
# Radix index size: 2 bits more than log2(slices) keeps most buckets inside one slice,
# capped so the index stays within L1/L2 (2**16 int32 = 256 KiB at the very most).
cdef int _MIN_RADIX_BITS = 4
cdef int _MAX_RADIX_BITS = 16


cdef int _radix_bits(Py_ssize_t n):
    cdef int bits = 0
    while (<Py_ssize_t>1 << bits) < n and bits < 62:
        bits += 1
    bits += 2
    if bits < _MIN_RADIX_BITS:
        bits = _MIN_RADIX_BITS
    if bits > _MAX_RADIX_BITS:
        bits = _MAX_RADIX_BITS
    return bits


cdef class SliceTable:
    """One epoch's immutable slice table.

    ``starts`` (uint64, strictly increasing, first 0) are the slice starts; slice ``i`` covers
    ``[starts[i], starts[i+1])`` (the last one up to 2**64). ``slice_shard[i]`` indexes
    ``shard_names``. Arguments are validated; the arrays are copied.
    """

    def __cinit__(self, starts, slice_shard, shard_names, int64_t epoch=1):
        cdef cnp.ndarray[cnp.uint64_t, ndim=1] st
        cdef cnp.ndarray[cnp.int32_t, ndim=1] sh
        cdef Py_ssize_t n, i, nshards
        cdef int bits
        cdef uint64_t first
        try:
            st = np.array(starts, dtype=np.uint64, copy=True)
            sh = np.array(slice_shard, dtype=np.int32, copy=True)
        except (OverflowError, ValueError, TypeError) as exc:
            raise InvalidValueError(
                f"starts must be hashes in [0, 2**64) and slice_shard shard indexes: {exc}"
            ) from None
        names = tuple(shard_names)
        for name in names:
            if not isinstance(name, str):
                raise InvalidTypeError(
                    f"shard_names must be str, got {type(name).__name__}")
        n = st.shape[0]
        nshards = len(names)
        if n < 1:
            raise InvalidValueError("starts must hold at least one slice start, got 0")
        if sh.shape[0] != n:
            raise InvalidValueError(
                f"slice_shard must have one entry per slice ({n}), got {sh.shape[0]}")
        if st[0] != 0:
            raise InvalidValueError(f"starts[0] must be 0 (slices cover [0, 2**64)), got {st[0]}")
        for i in range(1, n):
            if st[i] <= st[i - 1]:
                raise InvalidValueError(
                    f"starts must be strictly increasing; starts[{i}]={st[i]} "
                    f"<= starts[{i - 1}]={st[i - 1]}")
        for i in range(n):
            if sh[i] < 0 or sh[i] >= nshards:
                raise InvalidValueError(
                    f"slice_shard[{i}] must be in [0, {nshards - 1}], got {sh[i]}")
        st.setflags(write=False)
        sh.setflags(write=False)
        self.starts = st
        self.slice_shard = sh
        self.shard_names = names
        self.epoch = epoch
        self._n = n
        self._starts = <const uint64_t *>cnp.PyArray_DATA(st)
        self._slice_shard = <const int32_t *>cnp.PyArray_DATA(sh)

        bits = _radix_bits(n)
        self._shift = 64 - bits
        radix = np.empty((1 << bits) + 1, dtype=np.int32)
        self._radix_array = radix
        self._radix = <const int32_t *>cnp.PyArray_DATA(radix)
        _fill_radix(<int32_t *>cnp.PyArray_DATA(radix), self._starts, n, bits)

    def __len__(self):
        return self._n

    def slice_of_hash(self, uint64_t h):
        """Index of the slice containing hash ``h``."""
        return find_slice(self._starts, self._radix, self._shift, h)


cdef void _fill_radix(int32_t *radix, const uint64_t *starts, Py_ssize_t n, int bits) noexcept nogil:
    # One sweep: bucket b starts at hash b << (64 - bits); advance the slice cursor past it.
    cdef Py_ssize_t b, nb = (<Py_ssize_t>1) << bits
    cdef Py_ssize_t s = 0
    cdef uint64_t first
    cdef int shift = 64 - bits
    for b in range(nb):
        first = (<uint64_t>b) << shift
        while s + 1 < n and starts[s + 1] <= first:
            s += 1
        radix[b] = <int32_t>s
    radix[nb] = <int32_t>(n - 1)


cdef cnp.ndarray _as_hash_array(object hashes, str field):
    if not isinstance(hashes, np.ndarray):
        raise InvalidTypeError(
            f"{field} must be a numpy uint64 array, got {type(hashes).__name__}")
    if hashes.dtype != np.uint64:
        raise InvalidTypeError(f"{field} must have dtype uint64, got {hashes.dtype}")
    if hashes.ndim != 1:
        raise InvalidValueError(f"{field} must be 1-dimensional, got {hashes.ndim} dimensions")
    return np.ascontiguousarray(hashes)


cdef inline SliceTable _current(ShardMapCore core):
    # A core made with __new__ and never given a table must fail, not crash.
    cdef SliceTable t = core._table
    if t is None:
        raise InvalidValueError("shard map has no slice table yet (call _install_table first)")
    return t


cdef class ShardMapCore:
    """The lookup half of a shard map: the current :class:`SliceTable` and its queries."""

    def _install_table(self, SliceTable table not None):
        # One reference assignment: readers see either the old table or the new one.
        self._table = table

    @property
    def epoch(self):
        """The epoch of the table lookups currently use."""
        return _current(self).epoch

    def shard_for(self, key):
        """Shard id owning ``key`` (str, bytes or int, hashed with XXH3-64 like hash_key)."""
        cdef uint64_t h
        cdef SliceTable t = _current(self)
        hash_object(key, &h)
        return t.shard_names[t._slice_shard[find_slice(t._starts, t._radix, t._shift, h)]]

    def shard_and_epoch_for(self, key):
        """``(shard id, epoch)`` from one table, for stamping a routed message."""
        cdef uint64_t h
        cdef SliceTable t = _current(self)
        hash_object(key, &h)
        return (t.shard_names[t._slice_shard[find_slice(t._starts, t._radix, t._shift, h)]],
                t.epoch)

    def shard_for_hash(self, h):
        """Shard id owning the 64-bit hash ``h``."""
        cdef SliceTable t = _current(self)
        cdef uint64_t v = hash_value_arg(h)
        return t.shard_names[t._slice_shard[find_slice(t._starts, t._radix, t._shift, v)]]

    def slice_for_hash(self, h):
        """Index (into ``slices``) of the slice containing hash ``h``."""
        cdef SliceTable t = _current(self)
        cdef uint64_t v = hash_value_arg(h)
        return find_slice(t._starts, t._radix, t._shift, v)

    def slices_for_many(self, hashes):
        """Slice index of every hash in a uint64 array (int32 array; GIL released)."""
        cdef SliceTable t = _current(self)
        cdef cnp.ndarray arr = _as_hash_array(hashes, "hashes")
        cdef Py_ssize_t i, n = arr.shape[0]
        cdef cnp.ndarray out = np.empty(n, dtype=np.int32)
        cdef const uint64_t *src = <const uint64_t *>cnp.PyArray_DATA(arr)
        cdef int32_t *dst = <int32_t *>cnp.PyArray_DATA(out)
        with nogil:
            for i in range(n):
                dst[i] = <int32_t>find_slice(t._starts, t._radix, t._shift, src[i])
        return out

    def shards_for_many(self, keys):
        """Shard index (into ``shards``) of every key.

        ``keys`` is a uint64 array of pre-computed hashes, or a list/tuple of str/bytes/int
        keys (hashed like ``shard_for``). Returns an int32 array; the loop runs without the GIL.
        """
        cdef SliceTable t = _current(self)
        if isinstance(keys, np.ndarray):
            return _shards_for_hashes(t, _as_hash_array(keys, "keys"))
        if isinstance(keys, (list, tuple)):
            return _shards_for_keys(t, tuple(keys))
        raise InvalidTypeError(
            "keys must be a list of str/bytes/int keys or a numpy uint64 array of hashes, "
            f"got {type(keys).__name__}")


cdef cnp.ndarray _shards_for_hashes(SliceTable t, cnp.ndarray arr):
    cdef Py_ssize_t i, n = arr.shape[0]
    cdef cnp.ndarray out = np.empty(n, dtype=np.int32)
    cdef const uint64_t *src = <const uint64_t *>cnp.PyArray_DATA(arr)
    cdef int32_t *dst = <int32_t *>cnp.PyArray_DATA(out)
    with nogil:
        for i in range(n):
            dst[i] = t._slice_shard[find_slice(t._starts, t._radix, t._shift, src[i])]
    return out


cdef cnp.ndarray _shards_for_keys(SliceTable t, tuple keys):
    # Pass 1 (GIL held): collect each key's bytes pointer and length, or its int bits
    # (length -1). The tuple keeps every key, and so every UTF-8 buffer, alive.
    # Pass 2 (GIL released): hash and look up.
    cdef Py_ssize_t i, n = len(keys)
    cdef cnp.ndarray out = np.empty(n, dtype=np.int32)
    cdef int32_t *dst = <int32_t *>cnp.PyArray_DATA(out)
    cdef const char **ptrs
    cdef Py_ssize_t *lens
    cdef uint64_t *ints
    cdef Py_ssize_t length
    cdef uint64_t h
    if n == 0:
        return out
    ptrs = <const char **>malloc(n * sizeof(const char *))
    lens = <Py_ssize_t *>malloc(n * sizeof(Py_ssize_t))
    ints = <uint64_t *>malloc(n * sizeof(uint64_t))
    if ptrs == NULL or lens == NULL or ints == NULL:
        free(ptrs)
        free(lens)
        free(ints)
        raise MemoryError()
    try:
        for i in range(n):
            key = keys[i]
            if isinstance(key, str):
                ptrs[i] = PyUnicode_AsUTF8AndSize(key, &length)
                lens[i] = length
            elif isinstance(key, bytes):
                ptrs[i] = PyBytes_AS_STRING(key)
                lens[i] = PyBytes_GET_SIZE(key)
            elif isinstance(key, int):
                ints[i] = _int_key_bits(key)
                lens[i] = -1
            else:
                raise InvalidTypeError(
                    f"keys[{i}] must be str, bytes or int, got {type(key).__name__}")
        with nogil:
            for i in range(n):
                if lens[i] >= 0:
                    h = fs_xxh3_64(ptrs[i], <size_t>lens[i])
                else:
                    h = fs_xxh3_64_u64(ints[i])
                dst[i] = t._slice_shard[find_slice(t._starts, t._radix, t._shift, h)]
    finally:
        free(ptrs)
        free(lens)
        free(ints)
    return out
