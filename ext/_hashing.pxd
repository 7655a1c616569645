# cython: language_level=3
# C-level interface of fastshard._hashing: key hashing and monotone bucket functions.
#
# The kernels themselves are header-only C (fs_xxh3.h via fs_keys.pxd, fs_jump.h via
# fs_jump.pxd) so other extension modules cimport those directly instead of calling this
# module at run time. What this module adds is the Python boundary: argument validation and
# the batch loops.

from libc.stdint cimport uint64_t, int32_t

# Hash every element of a list/tuple of str/bytes/int keys into out[0:len(keys)].
# Raises InvalidTypeError / InvalidValueError naming the offending element; on error `out`
# may be partly written (callers allocate it fresh, so nothing user-visible is half-done).
cdef int hash_sequence(object keys, uint64_t *out) except -1

# Fill out[i] = bucket(hashes[i], n) for i < count, without the GIL.
cdef void jump_many_nogil(const uint64_t *hashes, int32_t *out, Py_ssize_t count,
                          int32_t n) noexcept nogil
cdef void jumpback_many_nogil(const uint64_t *hashes, int32_t *out, Py_ssize_t count,
                              int32_t n) noexcept nogil
