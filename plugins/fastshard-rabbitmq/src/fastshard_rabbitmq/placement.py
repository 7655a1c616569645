"""Routing keys by fastshard's placement: the shard queue is computed client-side.

RabbitMQ's direct exchange then delivers on that exact routing key, so the broker needs no
plugin and agrees with every fastshard router by construction. Placement is
``fastshard.jump_hash(fastshard.hash_key(key), len(shards))`` (the compiled core), so growing from n to
m shards moves only ``1 - n/m`` of the keys, all of them to the new shards.

Per-key order when shards are added: a moved key's new messages go to a new shard queue
while its old ones may still wait in the old queue. Consumers of the new shards hold back
until the old shards are drained up to the fence (the backlog observed after every producer
switched epoch); see docs/backend-rabbitmq.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fastshard.backends.base import validate_name
from fastshard.errors import InvalidTypeError, InvalidValueError, check_int
from fastshard.hashing import hash_key, hash_many, jump_hash, jump_hash_many
from fastshard_rabbitmq.backend import RabbitMQBackend


def shard_for(key: bytes | str | int, shards: Sequence[str]) -> str:
    """The shard queue of ``key`` among ``shards`` (order matters: append new shards at the end)."""
    if not shards:
        raise InvalidValueError("shards must name at least one shard queue")
    return shards[jump_hash(hash_key(key), len(shards))]


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
        for i, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidTypeError(f"items[{i}] must be a (key, value) pair")
        by_queue: dict[str, list[int]] = {}
        placed = jump_hash_many(hash_many([k for k, _ in items]), len(self.shards)).tolist()
        for i, p in enumerate(placed):
            by_queue.setdefault(self.shards[p], []).append(i)
        out: list[tuple[str, str] | None] = [None] * len(items)
        for q, idx in by_queue.items():
            for i, mid in zip(idx, self.backend.publish_batch(q, [items[i] for i in idx],
                                                              epoch=self.epoch), strict=True):
                out[i] = (q, mid)
        return [o for o in out if o is not None]
