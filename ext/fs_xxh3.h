/*
 * fs_xxh3.h -- XXH3-64 (seed 0, default secret), written for fastshard from the published
 * XXH3 specification (xxHash "doc/xxhash_spec.md" / the XXH3 algorithm description).
 *
 * Why our own: the compiled core must hash keys without calling the Python `xxhash` module
 * and without linking a system library, so wheels stay self-contained. The output is
 * bit-for-bit equal to xxhash.xxh3_64_intdigest(data) (tests/test_hashing.py proves it with
 * hypothesis across every length class).
 *
 * Only the seed-0, default-secret, 64-bit variant is implemented, in portable scalar C:
 * the per-key path is dominated by short keys, where a scalar implementation is as fast as
 * the SIMD one. All functions are `static inline` so each extension module that includes
 * this header gets its own copy and no symbol is exported.
 *
 * Length classes (each is a separate routine, as in the specification):
 *     0, 1..3, 4..8, 9..16, 17..128, 129..240, > 240 (stripes / blocks / scrambles).
 */
#ifndef FS_XXH3_H
#define FS_XXH3_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER)
#  include <intrin.h>
#  include <stdlib.h>
#  define FS_FORCE_INLINE static __forceinline
#else
#  define FS_FORCE_INLINE static inline __attribute__((always_inline))
#endif

/* ---- constants from the specification ------------------------------------------------ */

#define FS_PRIME32_1 0x9E3779B1U
#define FS_PRIME32_2 0x85EBCA77U
#define FS_PRIME32_3 0xC2B2AE3DU
#define FS_PRIME64_1 0x9E3779B185EBCA87ULL
#define FS_PRIME64_2 0xC2B2AE3D27D4EB4FULL
#define FS_PRIME64_3 0x165667B19E3779F9ULL
#define FS_PRIME64_4 0x85EBCA77C2B2AE63ULL
#define FS_PRIME64_5 0x27D4EB2F165667C5ULL
#define FS_PRIME_MX1 0x165667919E3779F9ULL
#define FS_PRIME_MX2 0x9FB21C651E98DF25ULL

#define FS_XXH3_STRIPE_LEN 64
#define FS_XXH3_SECRET_CONSUME_RATE 8
#define FS_XXH3_SECRET_SIZE 192
#define FS_XXH3_MIDSIZE_STARTOFFSET 3
#define FS_XXH3_MIDSIZE_LASTOFFSET 17
#define FS_XXH3_SECRET_SIZE_MIN 136
#define FS_XXH3_SECRET_LASTACC_START 7
#define FS_XXH3_SECRET_MERGEACCS_START 11

/* The 192-byte default secret ("kSecret") of the specification. */
static const uint8_t fs_xxh3_ksecret[FS_XXH3_SECRET_SIZE] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

/* ---- primitive operations --------------------------------------------------------------- */

/* Little-endian loads via memcpy: no alignment assumption, compiles to one mov on x86/ARM. */
FS_FORCE_INLINE uint32_t fs_read_le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    v = __builtin_bswap32(v);
#endif
    return v;
}

FS_FORCE_INLINE uint64_t fs_read_le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    v = __builtin_bswap64(v);
#endif
    return v;
}

FS_FORCE_INLINE uint64_t fs_rotl64(uint64_t x, unsigned r) {
    return (x << r) | (x >> (64 - r));
}

FS_FORCE_INLINE uint64_t fs_swap64(uint64_t x) {
#if defined(_MSC_VER)
    return _byteswap_uint64(x);
#else
    return __builtin_bswap64(x);
#endif
}

/* 64x64 -> 128 multiply, folded by XOR of the two halves (the spec's "mul128_fold64"). */
FS_FORCE_INLINE uint64_t fs_mul128_fold64(uint64_t lhs, uint64_t rhs) {
#if defined(__SIZEOF_INT128__)
    __uint128_t product = (__uint128_t)lhs * rhs;
    return (uint64_t)product ^ (uint64_t)(product >> 64);
#elif defined(_MSC_VER) && defined(_M_X64)
    uint64_t hi;
    uint64_t lo = _umul128(lhs, rhs, &hi);
    return lo ^ hi;
#else
    /* Portable schoolbook multiply on 32-bit halves. */
    uint64_t lo_lo = (lhs & 0xFFFFFFFFULL) * (rhs & 0xFFFFFFFFULL);
    uint64_t hi_lo = (lhs >> 32) * (rhs & 0xFFFFFFFFULL);
    uint64_t lo_hi = (lhs & 0xFFFFFFFFULL) * (rhs >> 32);
    uint64_t hi_hi = (lhs >> 32) * (rhs >> 32);
    uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFULL) + lo_hi;
    uint64_t upper = (hi_lo >> 32) + (cross >> 32) + hi_hi;
    uint64_t lower = (cross << 32) | (lo_lo & 0xFFFFFFFFULL);
    return lower ^ upper;
#endif
}

/* XXH64's final avalanche, used by the 0..3 byte paths. */
FS_FORCE_INLINE uint64_t fs_xxh64_avalanche(uint64_t h) {
    h ^= h >> 33;
    h *= FS_PRIME64_2;
    h ^= h >> 29;
    h *= FS_PRIME64_3;
    h ^= h >> 32;
    return h;
}

FS_FORCE_INLINE uint64_t fs_xxh3_avalanche(uint64_t h) {
    h ^= h >> 37;
    h *= FS_PRIME_MX1;
    h ^= h >> 32;
    return h;
}

/* "rrmxmx": the stronger finaliser of the 4..8 byte path (length is mixed in). */
FS_FORCE_INLINE uint64_t fs_xxh3_rrmxmx(uint64_t h, uint64_t len) {
    h ^= fs_rotl64(h, 49) ^ fs_rotl64(h, 24);
    h *= FS_PRIME_MX2;
    h ^= (h >> 35) + len;
    h *= FS_PRIME_MX2;
    return h ^ (h >> 28);
}

FS_FORCE_INLINE uint64_t fs_xxh3_mix16(const uint8_t *in, const uint8_t *secret) {
    return fs_mul128_fold64(fs_read_le64(in) ^ fs_read_le64(secret),
                            fs_read_le64(in + 8) ^ fs_read_le64(secret + 8));
}

/* ---- short inputs ------------------------------------------------------------------------ */

FS_FORCE_INLINE uint64_t fs_xxh3_len_1to3(const uint8_t *in, size_t len) {
    const uint8_t c1 = in[0], c2 = in[len >> 1], c3 = in[len - 1];
    const uint32_t combined = ((uint32_t)c1 << 16) | ((uint32_t)c2 << 24) | (uint32_t)c3 |
                              ((uint32_t)len << 8);
    const uint64_t bitflip =
        (uint64_t)(fs_read_le32(fs_xxh3_ksecret) ^ fs_read_le32(fs_xxh3_ksecret + 4));
    return fs_xxh64_avalanche((uint64_t)combined ^ bitflip);
}

/* The 4..8 byte path on the two (possibly overlapping) 32-bit words. */
FS_FORCE_INLINE uint64_t fs_xxh3_words_4to8(uint32_t first, uint32_t last, size_t len) {
    const uint64_t bitflip =
        fs_read_le64(fs_xxh3_ksecret + 8) ^ fs_read_le64(fs_xxh3_ksecret + 16);
    const uint64_t combined = (uint64_t)last + ((uint64_t)first << 32);
    return fs_xxh3_rrmxmx(combined ^ bitflip, (uint64_t)len);
}

FS_FORCE_INLINE uint64_t fs_xxh3_len_4to8(const uint8_t *in, size_t len) {
    return fs_xxh3_words_4to8(fs_read_le32(in), fs_read_le32(in + len - 4), len);
}

FS_FORCE_INLINE uint64_t fs_xxh3_len_9to16(const uint8_t *in, size_t len) {
    const uint64_t bitflip1 =
        fs_read_le64(fs_xxh3_ksecret + 24) ^ fs_read_le64(fs_xxh3_ksecret + 32);
    const uint64_t bitflip2 =
        fs_read_le64(fs_xxh3_ksecret + 40) ^ fs_read_le64(fs_xxh3_ksecret + 48);
    const uint64_t lo = fs_read_le64(in) ^ bitflip1;
    const uint64_t hi = fs_read_le64(in + len - 8) ^ bitflip2;
    const uint64_t acc = (uint64_t)len + fs_swap64(lo) + hi + fs_mul128_fold64(lo, hi);
    return fs_xxh3_avalanche(acc);
}

FS_FORCE_INLINE uint64_t fs_xxh3_len_0to16(const uint8_t *in, size_t len) {
    if (len > 8) return fs_xxh3_len_9to16(in, len);
    if (len >= 4) return fs_xxh3_len_4to8(in, len);
    if (len > 0) return fs_xxh3_len_1to3(in, len);
    return fs_xxh64_avalanche(fs_read_le64(fs_xxh3_ksecret + 56) ^
                              fs_read_le64(fs_xxh3_ksecret + 64));
}

/* ---- medium inputs ----------------------------------------------------------------------- */

static inline uint64_t fs_xxh3_len_17to128(const uint8_t *in, size_t len) {
    const uint8_t *s = fs_xxh3_ksecret;
    uint64_t acc = (uint64_t)len * FS_PRIME64_1;
    if (len > 32) {
        if (len > 64) {
            if (len > 96) {
                acc += fs_xxh3_mix16(in + 48, s + 96);
                acc += fs_xxh3_mix16(in + len - 64, s + 112);
            }
            acc += fs_xxh3_mix16(in + 32, s + 64);
            acc += fs_xxh3_mix16(in + len - 48, s + 80);
        }
        acc += fs_xxh3_mix16(in + 16, s + 32);
        acc += fs_xxh3_mix16(in + len - 32, s + 48);
    }
    acc += fs_xxh3_mix16(in, s);
    acc += fs_xxh3_mix16(in + len - 16, s + 16);
    return fs_xxh3_avalanche(acc);
}

static inline uint64_t fs_xxh3_len_129to240(const uint8_t *in, size_t len) {
    const uint8_t *s = fs_xxh3_ksecret;
    const unsigned rounds = (unsigned)(len / 16);
    uint64_t acc = (uint64_t)len * FS_PRIME64_1;
    uint64_t acc_end;
    unsigned i;
    for (i = 0; i < 8; i++) acc += fs_xxh3_mix16(in + 16 * i, s + 16 * i);
    acc_end = fs_xxh3_mix16(in + len - 16,
                            s + FS_XXH3_SECRET_SIZE_MIN - FS_XXH3_MIDSIZE_LASTOFFSET);
    acc = fs_xxh3_avalanche(acc);
    for (i = 8; i < rounds; i++)
        acc_end += fs_xxh3_mix16(in + 16 * i, s + 16 * (i - 8) + FS_XXH3_MIDSIZE_STARTOFFSET);
    return fs_xxh3_avalanche(acc + acc_end);
}

/* ---- long inputs (> 240 bytes): 8 accumulators over 64-byte stripes -------------------- */

FS_FORCE_INLINE void fs_xxh3_accumulate_stripe(uint64_t acc[8], const uint8_t *in,
                                                 const uint8_t *secret) {
    for (unsigned i = 0; i < 8; i++) {
        const uint64_t data = fs_read_le64(in + 8 * i);
        const uint64_t keyed = data ^ fs_read_le64(secret + 8 * i);
        acc[i ^ 1] += data; /* swap adjacent lanes so each lane keeps the raw input too */
        acc[i] += (uint64_t)(uint32_t)keyed * (keyed >> 32);
    }
}

FS_FORCE_INLINE void fs_xxh3_scramble(uint64_t acc[8], const uint8_t *secret) {
    for (unsigned i = 0; i < 8; i++) {
        uint64_t a = acc[i];
        a ^= a >> 47;
        a ^= fs_read_le64(secret + 8 * i);
        a *= FS_PRIME32_1;
        acc[i] = a;
    }
}

static inline uint64_t fs_xxh3_hash_long(const uint8_t *in, size_t len) {
    const uint8_t *s = fs_xxh3_ksecret;
    uint64_t acc[8] = {FS_PRIME32_3, FS_PRIME64_1, FS_PRIME64_2, FS_PRIME64_3,
                       FS_PRIME64_4, FS_PRIME32_2, FS_PRIME64_5, FS_PRIME32_1};
    const size_t stripes_per_block =
        (FS_XXH3_SECRET_SIZE - FS_XXH3_STRIPE_LEN) / FS_XXH3_SECRET_CONSUME_RATE;
    const size_t block_len = FS_XXH3_STRIPE_LEN * stripes_per_block;
    const size_t blocks = (len - 1) / block_len;
    size_t b, n, last_stripes;
    uint64_t result;

    for (b = 0; b < blocks; b++) {
        const uint8_t *block = in + b * block_len;
        for (n = 0; n < stripes_per_block; n++)
            fs_xxh3_accumulate_stripe(acc, block + n * FS_XXH3_STRIPE_LEN,
                                      s + n * FS_XXH3_SECRET_CONSUME_RATE);
        fs_xxh3_scramble(acc, s + FS_XXH3_SECRET_SIZE - FS_XXH3_STRIPE_LEN);
    }
    /* the partial last block, then the (overlapping) final stripe */
    last_stripes = ((len - 1) - block_len * blocks) / FS_XXH3_STRIPE_LEN;
    for (n = 0; n < last_stripes; n++)
        fs_xxh3_accumulate_stripe(acc, in + blocks * block_len + n * FS_XXH3_STRIPE_LEN,
                                  s + n * FS_XXH3_SECRET_CONSUME_RATE);
    fs_xxh3_accumulate_stripe(acc, in + len - FS_XXH3_STRIPE_LEN,
                              s + FS_XXH3_SECRET_SIZE - FS_XXH3_STRIPE_LEN -
                                  FS_XXH3_SECRET_LASTACC_START);

    /* merge the accumulators */
    result = (uint64_t)len * FS_PRIME64_1;
    for (unsigned i = 0; i < 4; i++) {
        const uint8_t *ms = s + FS_XXH3_SECRET_MERGEACCS_START + 16 * i;
        result += fs_mul128_fold64(acc[2 * i] ^ fs_read_le64(ms),
                                   acc[2 * i + 1] ^ fs_read_le64(ms + 8));
    }
    return fs_xxh3_avalanche(result);
}

/* ---- public entry points ----------------------------------------------------------------- */

/* XXH3-64 with seed 0 of `length` bytes at `data` (data may be NULL when length is 0). */
static inline uint64_t fs_xxh3_64(const void *data, size_t length) {
    static const uint8_t empty[1] = {0};
    const uint8_t *in = data ? (const uint8_t *)data : empty;
    if (length <= 16) return fs_xxh3_len_0to16(in, length);
    if (length <= 128) return fs_xxh3_len_17to128(in, length);
    if (length <= 240) return fs_xxh3_len_129to240(in, length);
    return fs_xxh3_hash_long(in, length);
}

/* Same value as fs_xxh3_64 over the 8 little-endian bytes of `value` (the int-key encoding),
 * without going through memory: the 4..8 path reads the low word first, the high word last. */
static inline uint64_t fs_xxh3_64_u64(uint64_t value) {
    return fs_xxh3_words_4to8((uint32_t)value, (uint32_t)(value >> 32), 8);
}

#endif /* FS_XXH3_H */
