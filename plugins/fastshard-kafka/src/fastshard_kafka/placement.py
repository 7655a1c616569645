"""fastshard's placement as the Kafka partitioner, and the cut-over when partitions are added.

Kafka's default partitioner is murmur2(key) mod N: growing N from 4 to 5 moves about 80 % of
keys, and every moved key is briefly in two partitions at once, so per-key order breaks.
Jump consistent hash over the key's XXH3-64 (fastshard's compiled core) moves only ``1 - n/m`` of keys when growing
from ``n`` to ``m`` buckets, and every moved key goes to a *new* partition (``>= n``), never
between two old ones. That makes the cut-over simple:

1. The topic has (or is given) ``m`` partitions; producers still place keys over ``n``.
2. Producers switch to ``m`` at a new shard-map epoch (every message carries its epoch).
3. Once every producer has switched, :meth:`PartitionCutover.capture_fence` records the
   high watermark of each old partition: everything routed under the old epoch is below it.
4. Consumers of the new partitions ``n..m-1`` wait (:meth:`PartitionCutover.wait_drained`)
   until their group has committed every old partition up to the fence; then they start.
   A moved key's old messages are therefore all processed before its first new one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from fastshard.errors import InvalidTypeError, InvalidValueError, check_int
from fastshard.hashing import MAX_BUCKETS, hash_key, hash_many, jump_hash, jump_hash_many
from fastshard_kafka.backend import KafkaBackend


def partition_for(key: bytes | str | int, partitions: int) -> int:
    """The partition fastshard places ``key`` on, among ``partitions`` partitions.

    ``fastshard.jump_hash(fastshard.hash_key(key), partitions)``: every fastshard router, in
    any process or language using XXH3-64 + jump hash, agrees with it.
    """
    check_int("partitions", partitions, 1, MAX_BUCKETS)
    return jump_hash(hash_key(key), partitions)


def partitions_for(keys: Sequence[bytes | str | int], partitions: int) -> np.ndarray:
    """:func:`partition_for` of many keys at once, in the compiled core (GIL released)."""
    check_int("partitions", partitions, 1, MAX_BUCKETS)
    return jump_hash_many(hash_many(keys), partitions)


class PlacementPublisher:
    """Publishes to ``topic``'s partitions, placing each key with :func:`partition_for`.

    ``partitions`` is how many partitions keys are spread over *now* (it may be fewer than
    the topic has, see the module docstring); ``epoch`` is stamped on every message.
    """

    def __init__(self, backend: KafkaBackend, topic: str, partitions: int, *, epoch: int = 0) -> None:
        if not isinstance(backend, KafkaBackend):
            raise InvalidTypeError(f"backend must be a KafkaBackend, got {type(backend).__name__}")
        if not isinstance(topic, str) or ":" in topic or not topic:
            raise InvalidValueError(f"topic must be a non-empty topic name without ':', got {topic!r}")
        self.backend = backend
        self.topic = topic
        self.partitions = check_int("partitions", partitions, 1, MAX_BUCKETS)
        self.epoch = check_int("epoch", epoch, 0, 2**63 - 1)

    def switch(self, partitions: int, epoch: int) -> None:
        """Place keys over ``partitions`` from now on, stamping ``epoch`` (must grow)."""
        check_int("partitions", partitions, 1, MAX_BUCKETS)
        check_int("epoch", epoch, self.epoch + 1, 2**63 - 1)
        self.partitions, self.epoch = partitions, epoch

    def queue_for(self, key: bytes | str | int) -> str:
        return self.backend.queue_name(self.topic, partition_for(key, self.partitions))

    def publish(self, key: bytes | str, value: bytes | str, *,
                headers: Mapping[str, str] | None = None) -> tuple[str, str]:
        """Publish one message; returns ``(queue, id)``."""
        q = self.queue_for(key)
        return q, self.backend.publish(q, key, value, headers=headers, epoch=self.epoch)

    def publish_batch(self, items: Iterable[tuple[bytes | str, bytes | str]]) -> list[tuple[str, str]]:
        """Publish many, confirmed together; per-key order holds (each partition keeps input order)."""
        items = list(items)
        for i, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidTypeError(f"items[{i}] must be a (key, value) pair")
        names = [self.backend.queue_name(self.topic, p) for p in range(self.partitions)]
        by_queue: dict[str, list[int]] = {}
        for i, p in enumerate(partitions_for([k for k, _ in items], self.partitions).tolist()):
            by_queue.setdefault(names[p], []).append(i)
        ids = self.backend.publish_routed(
            {q: [items[i] for i in idx] for q, idx in by_queue.items()}, epoch=self.epoch
        )
        out: list[tuple[str, str]] = [("", "")] * len(items)
        for q, idx in by_queue.items():
            for i, mid in zip(idx, ids[q], strict=True):
                out[i] = (q, mid)
        return out


class PartitionCutover:
    """The drain fence for growing the placement of ``topic`` from ``old`` to ``new`` partitions."""

    def __init__(self, backend: KafkaBackend, topic: str, old: int, new: int) -> None:
        self.backend = backend
        self.topic = topic
        self.old = check_int("old", old, 1, MAX_BUCKETS)
        self.new = check_int("new", new, old + 1, MAX_BUCKETS)

    @property
    def moved_partitions(self) -> range:
        """Partitions that receive keys which used to live elsewhere (jump hash: only new ones)."""
        return range(self.old, self.new)

    def capture_fence(self) -> dict[int, int]:
        """High watermark of every old partition: call after all producers switched epoch."""
        return {p: self.backend.high_watermark(self.backend.queue_name(self.topic, p))
                for p in range(self.old)}

    def drained(self, group: str, fence: Mapping[int, int]) -> bool:
        """Whether ``group`` has committed every old partition up to ``fence``."""
        return all(
            self.backend.committed_offset(self.backend.queue_name(self.topic, p), group) >= off
            for p, off in fence.items()
        )

    def wait_drained(self, group: str, fence: Mapping[int, int], *, timeout: float,
                     poll: float = 0.05) -> bool:
        """Block until :meth:`drained` (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while not self.drained(group, fence):
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True
