# cython: language_level=3
# Key -> 64-bit hash, shared by every kernel that places keys (ring, shard map, router).
#
# The encoding is fixed and documented so services in other languages compute the same hash:
#   str   -> its UTF-8 bytes
#   bytes -> the bytes themselves
#   int   -> 8 bytes, little-endian, of (key mod 2**64); accepted range [-2**63, 2**64)
# and the hash is XXH3-64 with seed 0 over those bytes (== xxhash.xxh3_64_intdigest).
#
# Everything here is `cdef inline`: it is compiled into each kernel module that cimports it,
# so no module imports another at run time.

from libc.stdint cimport uint64_t, int64_t, uint8_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

cdef extern from "fs_xxh3.h" nogil:
    # XXH3-64, seed 0, written from the XXH3 specification (ext/fs_xxh3.h).
    uint64_t fs_xxh3_64(const void *data, size_t length)
    # Same value as fs_xxh3_64 on the 8 little-endian bytes of `value`.
    uint64_t fs_xxh3_64_u64(uint64_t value)

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) except NULL
    bint PyUnicode_CheckExact(object o)
    bint PyBytes_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    uint64_t PyLong_AsUnsignedLongLongMask(object o) except? <uint64_t>-1
    uint64_t PyLong_AsUnsignedLongLong(object o) except? <uint64_t>-1
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow) except? -1


cdef inline uint64_t _int_key_bits(object key) except? 0xFFFFFFFFFFFFFFFF:
    # C conversions first (no Python-level comparisons on the per-key path); only keys
    # beyond int64 take the unsigned route, and anything outside [-2**63, 2**64) is an
    # error rather than silently truncated.
    cdef int overflow = 0
    cdef long long signed_value = PyLong_AsLongLongAndOverflow(key, &overflow)
    if overflow == 0:
        return <uint64_t>signed_value
    if overflow > 0:
        try:
            return PyLong_AsUnsignedLongLong(key)
        except OverflowError:
            pass
    from fastshard.errors import InvalidValueError
    raise InvalidValueError(f"int key must be in [-2**63, 2**64), got {key}")


cdef inline int hash_object(object key, uint64_t *out) except -1:
    """Hash one str/bytes/int key into *out; raise TypeError for anything else."""
    cdef const char *p
    cdef Py_ssize_t n
    if PyUnicode_CheckExact(key) or isinstance(key, str):
        p = PyUnicode_AsUTF8AndSize(key, &n)
        out[0] = fs_xxh3_64(p, <size_t>n)
        return 0
    if PyBytes_CheckExact(key) or isinstance(key, bytes):
        out[0] = fs_xxh3_64(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key))
        return 0
    if PyLong_CheckExact(key) or isinstance(key, int):
        out[0] = fs_xxh3_64_u64(_int_key_bits(key))
        return 0
    _raise_key_type(key)
    return -1


cdef inline int _raise_key_type(object key) except -1:
    from fastshard.errors import InvalidTypeError
    raise InvalidTypeError(
        f"key must be str, bytes or int, got {type(key).__name__}")


cdef extern from "Python.h":
    uint64_t PyLong_AsUnsignedLongLong(object o) except? <uint64_t>-1


cdef inline uint64_t hash_value_arg(object h) except? 0:
    """A pre-computed hash given by the caller: an int in [0, 2**64) (NumPy integers too)."""
    if PyLong_CheckExact(h):
        try:
            return PyLong_AsUnsignedLongLong(h)  # OverflowError for < 0 and >= 2**64
        except OverflowError:
            pass
    else:
        import numpy
        if isinstance(h, bool) or not isinstance(h, (int, numpy.integer)):
            from fastshard.errors import InvalidTypeError
            raise InvalidTypeError(
                f"h must be an int hash value in [0, 2**64), got {type(h).__name__}")
        if 0 <= h <= 0xFFFFFFFFFFFFFFFF:
            return PyLong_AsUnsignedLongLong(int(h))
    from fastshard.errors import InvalidValueError
    raise InvalidValueError(f"h must be in [0, 2**64), got {h}")
