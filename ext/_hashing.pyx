# cython: language_level=3, binding=False, always_allow_keywords=False
"""Compiled key hashing (XXH3-64) and monotone bucket functions (jump hash, JumpBackHash).

Public Python API lives in fastshard.hashing; this module is the validated boundary around
the header-only C kernels in ext/fs_xxh3.h and ext/fs_jump.h.
"""

from libc.stdint cimport uint64_t, int32_t
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

cimport numpy as cnp
import numpy as np

from fs_keys cimport hash_object, hash_value_arg
from fs_jump cimport fs_jump_hash, fs_jumpback_hash

from fastshard.errors import InvalidTypeError, InvalidValueError

cnp.import_array()

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    long PyLong_AsLong(object o) except? -1

# Largest bucket count: buckets are int32 everywhere (NumPy int32 results, ring tables).
MAX_BUCKETS = 0x7FFFFFFF
cdef long _MAX_BUCKETS = 0x7FFFFFFF


def hash_key(key):
    """XXH3-64 (seed 0) of a str (UTF-8), bytes, or int (8 LE bytes of key mod 2**64) key."""
    cdef uint64_t h
    hash_object(key, &h)
    return h


cdef int hash_sequence(object keys, uint64_t *out) except -1:
    cdef Py_ssize_t i, n
    if type(keys) is list:
        n = PyList_GET_SIZE(keys)
        for i in range(n):
            # PyList_GET_ITEM returns a borrowed reference; hash_object does not keep it.
            hash_object(<object>PyList_GET_ITEM(keys, i), &out[i])
    elif type(keys) is tuple:
        n = PyTuple_GET_SIZE(keys)
        for i in range(n):
            hash_object(<object>PyTuple_GET_ITEM(keys, i), &out[i])
    else:
        i = 0
        for key in keys:
            hash_object(key, &out[i])
            i += 1
    return 0


cdef object _as_key_list(object keys):
    """A list or tuple of keys (the fast paths); other iterables are materialised once."""
    if type(keys) is list or type(keys) is tuple:
        return keys
    if isinstance(keys, (str, bytes)):
        raise InvalidTypeError(
            f"keys must be a sequence of keys, not a single {type(keys).__name__}")
    if isinstance(keys, np.ndarray):
        if keys.ndim != 1:
            raise InvalidValueError(f"keys must be 1-dimensional, got ndim={keys.ndim}")
        return keys.tolist()
    try:
        return list(keys)
    except TypeError:
        raise InvalidTypeError(
            f"keys must be an iterable of str/bytes/int, got {type(keys).__name__}") from None


def hash_many(keys):
    """Hash a list/tuple/iterable of str/bytes/int keys into a new uint64 array."""
    keys = _as_key_list(keys)
    cdef cnp.ndarray[cnp.uint64_t, ndim=1] out = np.empty(len(keys), dtype=np.uint64)
    if len(keys):
        hash_sequence(keys, <uint64_t *>cnp.PyArray_DATA(out))
    return out


cdef int32_t _bucket_count_arg(object n) except -1:
    cdef long value
    if PyLong_CheckExact(n):
        try:
            value = PyLong_AsLong(n)
        except OverflowError:
            value = 0
    elif isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InvalidTypeError(f"n must be an int bucket count, got {type(n).__name__}")
    else:
        value = n if 1 <= n <= _MAX_BUCKETS else 0
    if not 1 <= value <= _MAX_BUCKETS:
        raise InvalidValueError(f"n must be in [1, 2**31 - 1], got {n}")
    return <int32_t>value


def jump_hash(h, n):
    """Lamping & Veach jump consistent hash: bucket in [0, n) of the 64-bit hash `h`."""
    cdef uint64_t hv = hash_value_arg(h)
    cdef int32_t nb = _bucket_count_arg(n)
    return fs_jump_hash(hv, nb)


def jumpback_hash(h, n):
    """JumpBackHash (constant expected time, monotone like jump hash): bucket in [0, n)."""
    cdef uint64_t hv = hash_value_arg(h)
    cdef int32_t nb = _bucket_count_arg(n)
    return fs_jumpback_hash(hv, nb)


cdef void jump_many_nogil(const uint64_t *hashes, int32_t *out, Py_ssize_t count,
                          int32_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        out[i] = fs_jump_hash(hashes[i], n)


cdef void jumpback_many_nogil(const uint64_t *hashes, int32_t *out, Py_ssize_t count,
                              int32_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        out[i] = fs_jumpback_hash(hashes[i], n)


cpdef object as_hash_array(object hashes):
    """Validate an array-like of hash values and return it as a contiguous 1-D uint64 array.

    Unsigned integer arrays are used as they are; signed ones only if no value is negative
    (a negative hash is always a bug upstream, so it is refused rather than wrapped).
    """
    arr = np.asarray(hashes)
    if arr.ndim != 1:
        raise InvalidValueError(f"hashes must be 1-dimensional, got ndim={arr.ndim}")
    if arr.dtype != np.uint64:
        if arr.size == 0:
            return np.empty(0, dtype=np.uint64)
        if arr.dtype.kind == "i":
            if arr.min() < 0:
                raise InvalidValueError("hashes must be in [0, 2**64), got a negative value")
        elif arr.dtype.kind != "u":
            raise InvalidTypeError(
                f"hashes must be an unsigned integer array, got dtype {arr.dtype}")
        arr = arr.astype(np.uint64)
    return np.ascontiguousarray(arr)


ctypedef void (*bucket_fill_t)(const uint64_t *, int32_t *, Py_ssize_t, int32_t) noexcept nogil


cdef cnp.ndarray _buckets_many(object hashes, object n, bucket_fill_t fill):
    cdef int32_t nb = _bucket_count_arg(n)
    cdef cnp.ndarray arr = as_hash_array(hashes)
    cdef cnp.ndarray out = np.empty(arr.shape[0], dtype=np.int32)
    cdef const uint64_t *src = <const uint64_t *>cnp.PyArray_DATA(arr)
    cdef int32_t *dst = <int32_t *>cnp.PyArray_DATA(out)
    cdef Py_ssize_t count = arr.shape[0]
    with nogil:
        fill(src, dst, count, nb)
    return out


def jump_hash_many(hashes, n):
    """jump_hash over a uint64 array (GIL released); returns an int32 array of buckets."""
    return _buckets_many(hashes, n, jump_many_nogil)


def jumpback_hash_many(hashes, n):
    """jumpback_hash over a uint64 array (GIL released); returns an int32 array of buckets."""
    return _buckets_many(hashes, n, jumpback_many_nogil)
