"""Key hashing and monotone bucket functions.

* :func:`hash_key` / :func:`hash_many` -- 64-bit XXH3 (seed 0) of a key, bit-for-bit equal to
  ``xxhash.xxh3_64_intdigest`` on the key's bytes, so services in other languages compute the
  same value. Key encoding: ``str`` -> UTF-8, ``bytes`` -> as is, ``int`` -> the 8
  little-endian bytes of ``key mod 2**64`` (accepted range ``[-2**63, 2**64)``).
* :func:`jump_hash` -- Lamping & Veach jump consistent hash (same results as the
  ``jump-consistent-hash`` package).
* :func:`jumpback_hash` -- JumpBackHash (Ertl 2024) as specified in ``ext/fs_jump.h`` and
  docs/hashing.md: same distribution and minimal-movement property, constant expected time.
* ``*_many`` variants work on NumPy ``uint64`` arrays with the GIL released.

Everything runs in the compiled module ``fastshard._hashing``; the Python ``xxhash`` package
is never called on the per-key path.
"""

from __future__ import annotations

from fastshard._hashing import (
    MAX_BUCKETS,
    as_hash_array,
    hash_key,
    hash_many,
    jump_hash,
    jump_hash_many,
    jumpback_hash,
    jumpback_hash_many,
)
from fastshard.errors import InvalidTypeError, InvalidValueError

__all__ = [
    "MAX_BUCKETS",
    "as_hash_array",
    "hash_key",
    "hash_many",
    "jump_hash",
    "jump_hash_many",
    "jumpback_hash",
    "jumpback_hash_many",
    "key_bytes",
]

_U64 = 1 << 64


def key_bytes(key: str | bytes | int) -> bytes:
    """The exact bytes :func:`hash_key` hashes for ``key`` (the documented key encoding).

    Useful to reproduce a placement elsewhere: ``xxh3_64(key_bytes(k)) == hash_key(k)``.
    """
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    if isinstance(key, int):
        if not -(1 << 63) <= key < _U64:
            raise InvalidValueError(f"int key must be in [-2**63, 2**64), got {key}")
        return (key % _U64).to_bytes(8, "little")
    raise InvalidTypeError(f"key must be str, bytes or int, got {type(key).__name__}")
