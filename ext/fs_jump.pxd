# cython: language_level=3
# Monotone bucket functions (ext/fs_jump.h), shared by every kernel that places hashes into
# buckets. Header-only C: cimporting this adds no run-time import between modules.

from libc.stdint cimport uint64_t, int32_t

cdef extern from "fs_jump.h" nogil:
    # SplitMix64 finaliser: a bijective 64-bit mixer.
    uint64_t fs_mix64(uint64_t z)
    # Lamping & Veach jump consistent hash; n >= 1.
    int32_t fs_jump_hash(uint64_t key, int32_t n)
    # JumpBackHash (Ertl 2024, as specified in fs_jump.h); 1 <= n < 2**31.
    int32_t fs_jumpback_hash(uint64_t h, int32_t n)
