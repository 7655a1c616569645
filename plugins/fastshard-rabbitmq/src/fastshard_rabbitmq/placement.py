"""Routing keys by fastshard's placement: the shard queue is computed client-side.

RabbitMQ's direct exchange then delivers on that exact routing key, so the broker needs no
plugin and agrees with every fastshard router by construction. Placement is jump consistent
hash over the key's XXH3-64 (the definition of ``fastshard.hash_key``), so growing from n to
m shards moves only ``1 - n/m`` of the keys, all of them to the new shards.

Per-key order when shards are added: a moved key's new messages go to a new shard queue
while its old ones may still wait in the old queue. Consumers of the new shards hold back
until the old shards are drained up to the fence (the backlog observed after every producer
switched epoch); see docs/backend-rabbitmq.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import xxhash

from fastshard.backends.base import validate_name
from fastshard.errors import InvalidTypeError, InvalidValueError, check_int
from fastshard_rabbitmq.backend import RabbitMQBackend

_MASK64 = (1 << 64) - 1


def _hash_key(key: bytes | str | int) -> int:
    """XXH3-64 (seed 0): bytes as is, str as UTF-8, int as 8 little-endian bytes mod 2**64."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
    elif isinstance(key, str):
        data = key.encode("utf-8")
    elif isinstance(key, int) and not isinstance(key, bool):
        data = (key & _MASK64).to_bytes(8, "little")
    else:
        raise InvalidTypeError(f"key must be bytes, str or int, got {type(key).__name__}")
    return xxhash.xxh3_64_intdigest(data)


def _jump(h: int, buckets: int) -> int:
    """Lamping & Veach jump consistent hash of a 64-bit ``h`` into ``[0, buckets)``."""
    b, j = -1, 0
    while j < buckets:
        b = j
        h = (h * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((h >> 33) + 1)))
    return b


def shard_for(key: bytes | str | int, shards: Sequence[str]) -> str:
    """The shard queue of ``key`` among ``shards`` (order matters: append new shards at the end)."""
    if not shards:
        raise InvalidValueError("shards must name at least one shard queue")
    return shards[_jump(_hash_key(key), len(shards))]


class ShardRouter:
    """Publishes each message to the shard queue its key is placed on, stamping the epoch."""

    def __init__(self, backend: RabbitMQBackend, shards: Sequence[str], *, epoch: int = 0) -> None:
        if not isinstance(backend, RabbitMQBackend):
            raise InvalidTypeError(f"backend must be a RabbitMQBackend, got {type(backend).__name__}")
        self.backend = backend
        self.shards = self._check(shards)
        self.epoch = check_int("epoch", epoch, 0, 2**63 - 1)

    @staticmethod
    def _check(shards: Sequence[str]) -> list[str]:
        if isinstance(shards, str) or not shards:
            raise InvalidValueError("shards must be a non-empty sequence of queue names")
        names = [validate_name("shards[]", s) for s in shards]
        if len(set(names)) != len(names):
            raise InvalidValueError(f"shards must be distinct, got {names}")
        return names

    def switch(self, shards: Sequence[str], epoch: int) -> None:
        """Route over ``shards`` from now on (a grown list keeps the old ones as its prefix)."""
        names = self._check(shards)
        check_int("epoch", epoch, self.epoch + 1, 2**63 - 1)
        self.shards, self.epoch = names, epoch

    def queue_for(self, key: bytes | str | int) -> str:
        return shard_for(key, self.shards)

    def publish(self, key: bytes | str, value: bytes | str, *,
                headers: Mapping[str, str] | None = None) -> tuple[str, str]:
        q = self.queue_for(key)
        return q, self.backend.publish(q, key, value, headers=headers, epoch=self.epoch)

    def publish_batch(self, items: Iterable[tuple[bytes | str, bytes | str]]) -> list[tuple[str, str]]:
        items = list(items)
        by_queue: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidTypeError(f"items[{i}] must be a (key, value) pair")
            by_queue.setdefault(self.queue_for(item[0]), []).append(i)
        out: list[tuple[str, str] | None] = [None] * len(items)
        for q, idx in by_queue.items():
            for i, mid in zip(idx, self.backend.publish_batch(q, [items[i] for i in idx],
                                                              epoch=self.epoch), strict=True):
                out[i] = (q, mid)
        return [o for o in out if o is not None]
