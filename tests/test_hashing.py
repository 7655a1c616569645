"""fastshard.hashing: XXH3-64 key hashing and the monotone bucket functions.

The compiled kernels are checked against independent references: the ``xxhash`` package for
XXH3, and plain-Python twins (below) for jump hash and JumpBackHash.
"""

from __future__ import annotations

import random

import jump
import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import fastshard
from fastshard.errors import InvalidTypeError, InvalidValueError
from fastshard.hashing import (
    MAX_BUCKETS,
    hash_key,
    hash_many,
    jump_hash,
    jump_hash_many,
    jumpback_hash,
    jumpback_hash_many,
    key_bytes,
)

M64 = (1 << 64) - 1

# ---------------------------------------------------------------------------------------
# Plain-Python twins of the compiled kernels (the specification, executable).
# ---------------------------------------------------------------------------------------


def py_mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def py_jump_hash(key: int, n: int) -> int:
    b, j = -1, 0
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) & M64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def py_jumpback_word(h: int, q: int, k: int) -> int:
    return py_mix64((h + 0x9E3779B97F4A7C15 * (64 * k + q + 1)) & M64)


def py_jumpback_hash(h: int, n: int) -> int:
    if n <= 1:
        return 0
    top = (n - 1).bit_length() - 1
    v = py_mix64(h) & ((2 << top) - 1)
    while v:
        q = v.bit_length() - 1
        low = 1 << q
        x = low + (py_jumpback_word(h, q, 0) & (low - 1))
        if x < n:
            return x
        k = 1
        while True:
            x = ((py_jumpback_word(h, q, k) >> 32) * x) >> 32
            if x < low:
                break
            if x < n:
                return x
            k += 1
        v &= ~low
    return 0


# ---------------------------------------------------------------------------------------
# XXH3-64 against the xxhash package
# ---------------------------------------------------------------------------------------

# Every length class of XXH3 and the edges between them (0, 1..3, 4..8, 9..16, 17..128,
# 129..240, >240 with partial/whole 1024-byte blocks).
BOUNDARY_LENGTHS = [
    0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 95, 96, 97,
    127, 128, 129, 143, 144, 239, 240, 241, 255, 256, 257, 319, 320, 1023, 1024, 1025, 1087,
    1088, 2047, 2048, 2049, 3000, 4096, 10_000,
]


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_hash_key_equals_xxhash_at_every_length_class(length):
    rng = random.Random(length)
    for _ in range(8):
        data = rng.randbytes(length)
        assert hash_key(data) == xxhash.xxh3_64_intdigest(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=1200))
def test_hash_key_bytes_property(data):
    assert hash_key(data) == xxhash.xxh3_64_intdigest(data)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_hash_key_str_is_xxh3_of_utf8(text):
    assert hash_key(text) == xxhash.xxh3_64_intdigest(text.encode("utf-8"))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1))
def test_hash_key_int_is_xxh3_of_8_le_bytes(value):
    encoded = (value % (1 << 64)).to_bytes(8, "little")
    assert key_bytes(value) == encoded
    assert hash_key(value) == xxhash.xxh3_64_intdigest(encoded)


def test_same_key_same_hash_across_types_only_when_bytes_match():
    assert hash_key("abc") == hash_key(b"abc")
    assert hash_key(-1) == hash_key((1 << 64) - 1)
    assert hash_key(1) != hash_key("1")


@pytest.mark.parametrize("value", [-(1 << 63) - 1, 1 << 64, 10**30, -(10**30)])
def test_hash_key_int_out_of_range(value):
    with pytest.raises(InvalidValueError, match=r"\[-2\*\*63, 2\*\*64\)"):
        hash_key(value)
    with pytest.raises(InvalidValueError):
        key_bytes(value)


@pytest.mark.parametrize("key", [1.5, None, ["a"], bytearray(b"a"), memoryview(b"a"), object()])
def test_hash_key_wrong_type_names_the_type(key):
    with pytest.raises(InvalidTypeError, match=type(key).__name__):
        hash_key(key)
    with pytest.raises(TypeError):  # also a plain TypeError for callers catching builtins
        hash_key(key)


def test_hash_key_accepts_str_bytes_and_int_subclasses():
    import enum

    class Name(str):
        pass

    class Code(enum.IntEnum):
        SEVEN = 7

    assert hash_key(Name("node")) == hash_key("node")
    assert hash_key(Code.SEVEN) == hash_key(7)
    assert hash_key(True) == hash_key(1)


def test_hash_key_refuses_strings_that_have_no_utf8_form():
    with pytest.raises(ValueError):  # UnicodeEncodeError: a lone surrogate is not UTF-8
        hash_key("bad \ud800")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=300),
                          st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)),
                max_size=60))
def test_hash_many_equals_hash_key(keys):
    expected = np.array([hash_key(k) for k in keys], dtype=np.uint64)
    for container in (keys, tuple(keys), iter(keys)):
        got = hash_many(container)
        assert got.dtype == np.uint64
        assert np.array_equal(got, expected)


def test_hash_many_of_object_array_and_empty():
    keys = np.array(["a", "bb", "ccc"], dtype=object)
    assert list(hash_many(keys)) == [hash_key(k) for k in keys]
    empty = hash_many([])
    assert empty.dtype == np.uint64 and empty.shape == (0,)


def test_hash_many_rejects_bad_elements_and_single_strings():
    with pytest.raises(InvalidTypeError, match="float"):
        hash_many(["a", 2.0])
    with pytest.raises(InvalidValueError):
        hash_many([1 << 64])
    with pytest.raises(InvalidTypeError, match="str"):
        hash_many("abc")
    with pytest.raises(InvalidTypeError):
        hash_many(5)


def test_lazy_package_exports():
    assert fastshard.hash_key is hash_key
    assert fastshard.jumpback_hash is jumpback_hash


# ---------------------------------------------------------------------------------------
# jump hash and JumpBackHash
# ---------------------------------------------------------------------------------------

hashes64 = st.integers(min_value=0, max_value=M64)
bucket_counts = st.one_of(st.integers(min_value=1, max_value=5000),
                          st.integers(min_value=1, max_value=MAX_BUCKETS))


@settings(max_examples=300, deadline=None)
@given(hashes64, bucket_counts)
def test_jump_hash_equals_twin_and_peer(h, n):
    assert jump_hash(h, n) == py_jump_hash(h, n) == jump.hash(h, n)


@settings(max_examples=300, deadline=None)
@given(hashes64, bucket_counts)
def test_jumpback_hash_equals_twin(h, n):
    b = jumpback_hash(h, n)
    assert b == py_jumpback_hash(h, n)
    assert 0 <= b < n


@settings(max_examples=100, deadline=None)
@given(st.lists(hashes64, max_size=200), bucket_counts)
def test_batch_versions_equal_scalar(hs, n):
    arr = np.array(hs, dtype=np.uint64)
    jb = jumpback_hash_many(arr, n)
    jp = jump_hash_many(arr, n)
    assert jb.dtype == np.int32 and jp.dtype == np.int32
    assert jb.tolist() == [jumpback_hash(h, n) for h in hs]
    assert jp.tolist() == [jump_hash(h, n) for h in hs]


def _random_hashes(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1 << 64, size=count, dtype=np.uint64)


@pytest.mark.parametrize("many", [jump_hash_many, jumpback_hash_many])
def test_monotone_a_key_only_moves_to_the_new_bucket(many):
    hs = _random_hashes(4000, 1)
    # every n from 1 to 300, plus windows around powers of two (JumpBackHash's interval edges)
    counts = list(range(1, 301))
    for p in (10, 16, 20, 30):
        counts += list(range((1 << p) - 3, (1 << p) + 4))
    counts.append(MAX_BUCKETS - 1)
    for n in counts:
        before, after = many(hs, n), many(hs, n + 1)
        moved = before != after
        assert np.all(after[moved] == n), f"a key moved to an old bucket when n {n}->{n + 1}"


@pytest.mark.parametrize("many", [jump_hash_many, jumpback_hash_many])
@pytest.mark.parametrize("n", [100, 1000, 4097])
def test_movement_on_growth_is_one_over_n(many, n):
    hs = _random_hashes(200_000, n)
    moved = np.count_nonzero(many(hs, n) != many(hs, n + 1)) / hs.size
    optimum = 1 / (n + 1)
    # binomial standard deviation, 6 sigma slack
    sigma = (optimum * (1 - optimum) / hs.size) ** 0.5
    assert abs(moved - optimum) < 6 * sigma + 1e-9


@pytest.mark.parametrize("many", [jump_hash_many, jumpback_hash_many])
@pytest.mark.parametrize("n", [2, 7, 64, 100, 1000, 1025])
def test_uniform_chi_square(many, n):
    hs = _random_hashes(300_000, 7 * n)
    counts = np.bincount(many(hs, n), minlength=n)
    assert counts.size == n
    expected = hs.size / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = n - 1
    # generous: mean dof, sd sqrt(2 dof); allow 6 sd
    assert chi2 < dof + 6 * (2 * dof) ** 0.5 + 10


def test_hash_then_bucket_of_string_keys_is_balanced():
    keys = [f"user:{i}" for i in range(100_000)]
    counts = np.bincount(jumpback_hash_many(hash_many(keys), 10), minlength=10)
    assert counts.min() > 9_500 and counts.max() < 10_500


@pytest.mark.parametrize("fn", [jump_hash, jumpback_hash])
def test_scalar_validation(fn):
    with pytest.raises(InvalidValueError, match=r"n must be in \[1, 2\*\*31 - 1\]"):
        fn(1, 0)
    with pytest.raises(InvalidValueError):
        fn(1, MAX_BUCKETS + 1)
    with pytest.raises(InvalidTypeError, match="bool"):
        fn(1, True)
    with pytest.raises(InvalidTypeError, match="float"):
        fn(1, 2.0)
    with pytest.raises(InvalidValueError, match=r"h must be in \[0, 2\*\*64\)"):
        fn(-1, 5)
    with pytest.raises(InvalidValueError):
        fn(1 << 64, 5)
    with pytest.raises(InvalidTypeError, match="str"):
        fn("abc", 5)
    assert fn(np.uint64(M64), np.int64(10)) == fn(M64, 10)


@pytest.mark.parametrize("many", [jump_hash_many, jumpback_hash_many])
def test_batch_validation_and_conversion(many):
    assert many(np.array([1, 2, 3], dtype=np.int64), 10).tolist() == \
        many(np.array([1, 2, 3], dtype=np.uint64), 10).tolist()
    assert many([5, 6], 3).tolist() == many(np.array([5, 6], dtype=np.uint64), 3).tolist()
    assert many(np.array([], dtype=np.float64), 3).shape == (0,)
    with pytest.raises(InvalidValueError, match="negative"):
        many(np.array([1, -2], dtype=np.int64), 10)
    with pytest.raises(InvalidTypeError, match="float64"):
        many(np.array([1.0]), 10)
    with pytest.raises(InvalidValueError, match="1-dimensional"):
        many(np.zeros((2, 2), dtype=np.uint64), 10)
    with pytest.raises(InvalidValueError):
        many(np.array([1], dtype=np.uint64), 0)
    # a strided view is accepted (copied to contiguous memory), results stay correct
    base = _random_hashes(20, 3)
    assert many(base[::2], 50).tolist() == many(base[::2].copy(), 50).tolist()
