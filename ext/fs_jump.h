/*
 * fs_jump.h -- monotone bucket functions for fastshard: key hash (uint64) -> bucket in [0, n).
 *
 *   fs_jump_hash(h, n)      Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash
 *                           Algorithm" (2014). O(log n) expected; bit-exact with the paper's
 *                           reference (and the jump-consistent-hash package).
 *   fs_jumpback_hash(h, n)  JumpBackHash (Ertl 2024) as reconstructed for fastshard, see below.
 *                           O(1) expected, same distribution and monotonicity as jump hash, no
 *                           floating point and no division.
 *   fs_mix64(z)             SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective
 *                           64-bit mixer used to derive independent pseudo-random words.
 *
 * The mathematics shared by both (why they are "consistent"): imagine, for each key, an
 * independent event at every bucket i >= 1 that happens with probability 1/(i+1) (bucket 0
 * always "happens"). The bucket of a key for n buckets is the largest i < n whose event
 * happened. Growing n to n+1 can only move a key to the new bucket n (when its event
 * happened), which is the minimal-movement (monotone) property, and P(bucket = i) = 1/n for
 * every i < n (uniformity). Jump hash walks the happened events upwards from 0.
 *
 * JumpBackHash walks downwards in dyadic intervals [2^q, 2^(q+1)): the probability that
 * no event happens in such an interval is prod (i/(i+1)) = 1/2, and the largest event in it
 * is uniform over the interval (P = 1/(i+1) * (i+1)/2^(q+1) = 2^-(q+1) for every i). So one
 * random bit per interval says whether it has an event, and one random word places the
 * largest one. For the top interval, cut by n, the largest event x may be >= n; given x,
 * the next event below x is uniform on [0, x) (the same telescoping product), so we walk
 * that chain down until it falls below n (answer) or below 2^q (the interval below n has no
 * event; continue with the lower intervals, whose bits are independent). Every random word
 * is a fixed function of (h, q, step), never of n, so all n see one realisation of the
 * events: monotone by construction. Expected work is O(1): the chain continues with
 * probability < 1/2 per step.
 *
 * Exact definition (for reproducing placement in other languages), with C = 0x9E3779B97F4A7C15
 * and all arithmetic mod 2^64:
 *     word(h, q, k) = mix64(h + C * (64*k + q + 1))          (q in 0..62, k >= 0)
 *     bits          = mix64(h)                                (bit q: interval q has an event)
 *     n == 1                    -> 0
 *     v = bits & (2^(t+1) - 1), t = floor(log2(n - 1))
 *     while v != 0:
 *         q = highest set bit of v
 *         x = 2^q + (word(h, q, 0) & (2^q - 1))
 *         if x < n: return x
 *         k = 1
 *         loop:                                            (only in the top interval, q == t)
 *             x = ((word(h, q, k) >> 32) * x) >> 32        (uniform on [0, x), 32-bit Lemire)
 *             if x < 2^q: break
 *             if x < n: return x
 *             k += 1
 *         v &= ~(2^q)
 *     return 0
 *
 * (The published JumpBackHash spends its random bits differently -- a seeded generator, and
 * rejection sampling on [0, 2^(q+1)) in the top interval instead of the backward chain; this
 * variant follows the same idea, one coin per dyadic interval walking back from n, and its
 * outputs are specified above rather than bit-compatible with hash4j.)
 */
#ifndef FS_JUMP_H
#define FS_JUMP_H

#include <stdint.h>

#if defined(_MSC_VER)
#  include <intrin.h>
#  define FS_JUMP_INLINE static __forceinline
#else
#  define FS_JUMP_INLINE static inline __attribute__((always_inline))
#endif

#define FS_GOLDEN_GAMMA 0x9E3779B97F4A7C15ULL

FS_JUMP_INLINE uint64_t fs_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Index of the highest set bit of a non-zero word. */
FS_JUMP_INLINE unsigned fs_high_bit(uint64_t v) {
#if defined(_MSC_VER)
    unsigned long idx;
    _BitScanReverse64(&idx, v);
    return (unsigned)idx;
#else
    return 63u - (unsigned)__builtin_clzll(v);
#endif
}

/* Lamping & Veach jump consistent hash; n must be >= 1. */
FS_JUMP_INLINE int32_t fs_jump_hash(uint64_t key, int32_t n) {
    int64_t b = -1, j = 0;
    while (j < n) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (int32_t)b;
}

FS_JUMP_INLINE uint64_t fs_jumpback_word(uint64_t h, unsigned q, unsigned k) {
    return fs_mix64(h + FS_GOLDEN_GAMMA * (uint64_t)(64u * k + q + 1u));
}

/* JumpBackHash as specified in the header comment; n must be in [1, 2^31). */
FS_JUMP_INLINE int32_t fs_jumpback_hash(uint64_t h, int32_t n) {
    uint64_t v, x, low;
    unsigned q, k, top;
    if (n <= 1) return 0;
    top = fs_high_bit((uint64_t)(n - 1));
    v = fs_mix64(h) & ((2ULL << top) - 1);
    while (v != 0) {
        q = fs_high_bit(v);
        low = 1ULL << q;
        x = low + (fs_jumpback_word(h, q, 0) & (low - 1));
        if (x < (uint64_t)n) return (int32_t)x;
        for (k = 1;; k++) {
            x = ((fs_jumpback_word(h, q, k) >> 32) * x) >> 32;
            if (x < low) break;
            if (x < (uint64_t)n) return (int32_t)x;
        }
        v &= ~low;
    }
    return 0;
}

#endif /* FS_JUMP_H */
