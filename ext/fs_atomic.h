/* fs_atomic.h - the few 64-bit atomic operations the ID generator's hot path needs.
 *
 * Preference order: C11 <stdatomic.h> when the compiler has it (and it is not MSVC, whose C11
 * atomics are still flagged experimental), then the GCC/Clang __atomic builtins, then the MSVC
 * _Interlocked* intrinsics. Every function works on a plain uint64_t slot so that Cython can
 * declare the slot as an ordinary struct field; the C11 branch casts it to _Atomic, which has
 * the same size and representation for uint64_t on every platform we build for (static-asserted).
 *
 * Orders: fetch-add, compare-exchange and stores are sequentially consistent (a lock-prefixed
 * instruction or an mfence on x86 either way; stores only happen on the rare block install);
 * loads are acquire, which is what the block-install protocol in _idgen.pyx relies on: the
 * installer publishes `end` last and readers load `end` before `start`.
 */
#ifndef FS_ATOMIC_H
#define FS_ATOMIC_H

#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__)
#  include <intrin.h>
#  define FS_ATOMIC_IMPL "msvc-interlocked"
static __inline uint64_t fs_atomic_fetch_add_u64(uint64_t *p, uint64_t v) {
    return (uint64_t)_InterlockedExchangeAdd64((volatile __int64 *)p, (__int64)v);
}
static __inline uint64_t fs_atomic_load_u64(uint64_t *p) {
    /* an interlocked no-op add is a full-barrier read, also on 32-bit targets */
    return (uint64_t)_InterlockedCompareExchange64((volatile __int64 *)p, 0, 0);
}
static __inline void fs_atomic_store_u64(uint64_t *p, uint64_t v) {
    _InterlockedExchange64((volatile __int64 *)p, (__int64)v);
}
static __inline int fs_atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) {
    __int64 seen = _InterlockedCompareExchange64((volatile __int64 *)p, (__int64)desired,
                                                 (__int64)*expected);
    if ((uint64_t)seen == *expected) return 1;
    *expected = (uint64_t)seen;
    return 0;
}

#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_ATOMICS__)
#  include <stdatomic.h>
#  define FS_ATOMIC_IMPL "c11-stdatomic"
_Static_assert(sizeof(_Atomic uint64_t) == sizeof(uint64_t), "atomic uint64_t must be plain-sized");
#  define FS_A(p) ((_Atomic uint64_t *)(p))
static inline uint64_t fs_atomic_fetch_add_u64(uint64_t *p, uint64_t v) {
    return atomic_fetch_add_explicit(FS_A(p), v, memory_order_seq_cst);
}
static inline uint64_t fs_atomic_load_u64(uint64_t *p) {
    return atomic_load_explicit(FS_A(p), memory_order_acquire);
}
static inline void fs_atomic_store_u64(uint64_t *p, uint64_t v) {
    atomic_store_explicit(FS_A(p), v, memory_order_seq_cst);
}
static inline int fs_atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return atomic_compare_exchange_strong_explicit(FS_A(p), expected, desired,
                                                   memory_order_seq_cst, memory_order_acquire);
}

#elif defined(__GNUC__) || defined(__clang__)
#  define FS_ATOMIC_IMPL "gcc-builtins"
static inline uint64_t fs_atomic_fetch_add_u64(uint64_t *p, uint64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline uint64_t fs_atomic_load_u64(uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void fs_atomic_store_u64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}
static inline int fs_atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_ACQUIRE);
}

#else
#  error "fastshard needs C11 atomics, GCC/Clang __atomic builtins or MSVC interlocked intrinsics"
#endif

#endif /* FS_ATOMIC_H */
