"""The smart routing layer: key -> shard -> queue, the epoch stamped on every message.

:class:`Router` routes with the shard map's compiled lookup and publishes through a
backend. Each published message carries the shard-map epoch it was routed under (the
backend's ``epoch`` field) plus two headers: ``fs-seq`` (the router's per-queue sequence
number) and ``fs-hash`` (the key's 64-bit hash). :class:`FencedConsumer` reads one shard's
queue and holds back messages of ranges that were just moved there until the old owner is
drained (see :mod:`fastshard.sharding.fence`), which keeps per-key order across splits,
merges and moves.

A reshard takes the router's gate exclusively for the instant of the switch, so no message
can be routed under the old epoch after the old queue's mark was taken.

With ``fence_store`` (a :class:`~fastshard.sharding.fence_store.FenceStore`) the marks,
the acknowledgements and the fences themselves live in the backend's key-value store, so
producers and consumers in different processes fence each other; each message then also
carries ``fs-prod``, its producer's id (see docs/sharding.md, "Fences across processes").

A backend may carry the epoch, sequence number and hash its own way by offering
``publish_stamped`` (see :class:`StampedPublisher`) and, for :meth:`Router.publish_many`,
``publish_stamped_batch`` (:class:`StampedBatchPublisher`; both live in
:mod:`fastshard.sharding.publishing`); the Kafka backend packs them into one header, which is
cheaper per message than three. Consumers see the same ``Message`` either way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

from fastshard.backends.base import Backend, Message, validate_name
from fastshard.errors import InvalidTypeError, InvalidValueError, UnknownQueueError
from fastshard.sharding.fence import HASH_HEADER, DrainFence, FenceRegistry
from fastshard.sharding.fence_store import (
    BARRIER_HEADER,
    MAX_SWITCHES,
    PRODUCER_HEADER,
    FenceStore,
    SharedFenceRegistry,
)

# the hook protocols are re-exported: they used to live here
from fastshard.sharding.publishing import (  # noqa: F401
    StampedBatchPublisher,
    StampedPublisher,
    publish_many,
    stamp_headers,
)

log = logging.getLogger(__name__)


def hash_key(key: str | bytes | int) -> int:
    """fastshard.hash_key (XXH3-64); falls back to xxhash, which gives the same values."""
    try:
        from fastshard.hashing import hash_key as _hk
    except ImportError:  # the compiled hashing module is not built in this tree
        import xxhash

        if isinstance(key, str):
            return xxhash.xxh3_64_intdigest(key.encode("utf-8"))
        if isinstance(key, int) and not isinstance(key, bool):
            return xxhash.xxh3_64_intdigest((key % 2**64).to_bytes(8, "little"))
        if isinstance(key, (bytes, bytearray, memoryview)):
            return xxhash.xxh3_64_intdigest(bytes(key))
        raise InvalidTypeError(f"key must be str, bytes or int, got {type(key).__name__}") from None
    globals()["hash_key"] = _hk
    return _hk(key)


def key_bytes(key: str | bytes | int) -> bytes:
    """The bytes a key is published as; hashing them gives the key's hash back."""
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    if isinstance(key, int) and not isinstance(key, bool):
        if not -(2**63) <= key < 2**64:
            raise InvalidValueError(f"int key must be in [-2**63, 2**64), got {key}")
        return (key % 2**64).to_bytes(8, "little")
    raise InvalidTypeError(f"key must be str, bytes or int, got {type(key).__name__}")


def queue_name(prefix: str, map_name: str, shard: str) -> str:
    """The backend queue that holds one shard's messages."""
    return validate_name("queue", f"{prefix}.{map_name}.{shard}")


class RoutedMessage(NamedTuple):
    """Where a published message went and under which epoch.

    An immutable record; a named tuple rather than a frozen dataclass because one is built
    per published message and a frozen dataclass costs ~0.4 µs more to construct.
    """

    shard: str
    queue: str
    id: str
    epoch: int
    seq: int


class _Gate:
    """Many producers at once, or one reshard alone (writer-preferring).

    :meth:`Router.publish` enters and leaves it inline, once per message: a counter update
    under a plain lock, waiting on the condition only while ``closed`` (a reshard is waiting
    or running) and notifying only when a reshard waits for the last producer to leave.
    """

    __slots__ = ("lock", "cv", "readers", "closed", "_writer", "_writers_waiting")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.readers = 0
        self.closed = False  # == self._writer or self._writers_waiting > 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self.lock:
            self._writers_waiting += 1
            self.closed = True
            while self._writer or self.readers:
                self.cv.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self.lock:
                self._writer = False
                self.closed = self._writers_waiting > 0
                self.cv.notify_all()


class Router:
    """Route keys of one shard map to its shards' queues on ``backend``.

    ``route(key)`` only looks the key up; ``publish(key, value)`` routes and sends, stamping
    the epoch. One Router object should be shared by every producer and consumer thread of
    a process: the drain fences live in it. ``store`` (optional, a
    ``fastshard.shardmap_store.ShardMapStore``) lets :meth:`observe_epoch` and :meth:`sync`
    catch up with a map published by another process. ``fence_store`` shares the fences
    with every other process routing the same map (``producer_id`` names this process's
    producer; unique per process, a random one by default).
    """

    def __init__(
        self,
        shard_map: Any,
        backend: Backend | None = None,
        *,
        queue_prefix: str = "fs",
        store: Any = None,
        create_queues: bool = True,
        fence_store: FenceStore | None = None,
        producer_id: str | None = None,
    ) -> None:
        if not isinstance(queue_prefix, str) or not queue_prefix:
            raise InvalidValueError(f"queue_prefix must be a non-empty str, got {queue_prefix!r}")
        if fence_store is not None:
            if not isinstance(fence_store, FenceStore):
                raise InvalidTypeError(f"fence_store must be a FenceStore, got {type(fence_store).__name__}")
            if fence_store.map_name != shard_map.name:
                raise InvalidValueError(
                    f"fence_store is for map {fence_store.map_name!r}, the router routes {shard_map.name!r}")
        elif producer_id is not None:
            raise InvalidValueError("producer_id needs a fence_store (it names this process's marks)")
        self._map = shard_map
        self.backend = backend
        self.queue_prefix = queue_prefix
        self.store = store
        self.fence_store = fence_store
        self.fences: FenceRegistry | SharedFenceRegistry = (
            FenceRegistry() if fence_store is None else SharedFenceRegistry(fence_store, producer_id))
        self._gate = _Gate()
        self._queue_cache: dict[str, str] = {}
        self.retired_queues: set[str] = set()
        self._live_shards: set[str] = set(shard_map.shards)
        self._shared_open: tuple[int, tuple[str, ...]] | None = None
        if backend is not None and create_queues:
            for shard in shard_map.shards:
                backend.create_queue(self.queue_of(shard))
        if fence_store is not None:
            self._adopt_open_fences()

    # ------------------------------------------------------------------ lookups
    @property
    def shard_map(self) -> Any:
        return self._map

    @property
    def epoch(self) -> int:
        return int(self._map.epoch)

    def queue_of(self, shard: str) -> str:
        q = self._queue_cache.get(shard)
        if q is None:
            q = self._queue_cache[shard] = queue_name(self.queue_prefix, self._map.name, shard)
        return q

    def route(self, key: str | bytes | int) -> str:
        """The shard ``key`` belongs to now."""
        return self._map.shard_for(key)

    def route_many(self, keys: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Indices into ``shard_map.shards`` for many keys (or uint64 hashes) at once."""
        return self._map.shards_for_many(keys)

    # ------------------------------------------------------------------ producing
    def publish(
        self,
        key: str | bytes | int,
        value: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> RoutedMessage:
        """Route ``key`` and append the message to its shard's queue, stamped with the epoch.

        This runs once per message, so it is kept lean: the gate is two short lock holds
        written out here, the queue name comes from the router's cache, and a backend with
        ``publish_stamped`` gets the epoch, sequence number and hash as ints (no str headers
        built only to be parsed again).
        """
        backend = self.backend
        if backend is None:
            raise InvalidValueError("publish needs a backend: Router(shard_map, backend)")
        kb = key if type(key) is bytes else key_bytes(key)
        h = hash_key(kb)
        fences = self.fences
        shared = self.fence_store is not None
        stamped = getattr(backend, "publish_stamped", None)
        gate = self._gate
        with gate.lock:  # enter the gate shared (inline: this runs once per message)
            while gate.closed:
                gate.cv.wait()
            gate.readers += 1
        try:
            epoch = self._map.epoch
            if shared:
                fences.before_publish(epoch)  # type: ignore[union-attr]
            shard = self._map.shard_for_hash(h)
            queue = self._queue_cache.get(shard) or self.queue_of(shard)
            seq = fences.next_seq(queue)
            extra = headers
            if shared:
                extra = dict(headers) if headers else {}
                extra[PRODUCER_HEADER] = fences.producer_id  # type: ignore[union-attr]
            try:
                if stamped is not None:
                    mid = stamped(queue, kb, value, epoch, seq, h, extra)
                else:
                    mid = backend.publish(queue, kb, value, headers=stamp_headers(seq, h, extra), epoch=epoch)
            except BaseException:
                # this number will never be acked: settle (or void) it so no fence waits for it
                fences.publish_failed(queue, seq)
                raise
        finally:
            with gate.lock:  # leave it
                gate.readers -= 1
                if gate.closed and not gate.readers:
                    gate.cv.notify_all()
        return RoutedMessage(shard, queue, mid, epoch, seq)

    def publish_many(
        self,
        keys: Sequence[str | bytes | int],
        values: Sequence[bytes | str],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> list[RoutedMessage]:
        """Route and publish a batch; one :class:`RoutedMessage` per input, in input order.

        Every message of one call is routed under one epoch (the gate is entered once, so a
        reshard waits for the whole batch). Messages are grouped by queue; inside a queue they
        keep call order and get consecutive sequence numbers; each queue's group goes to the
        backend in one call (its ``publish_stamped_batch`` when it has one, else message by
        message), groups in the order their queue first appears in ``keys`` (a backend with
        ``publish_stamped_groups`` gets all groups in one call; a failure then voids them all).

        If a group fails, the groups before it stay published and the later ones are not
        sent; the failed group's numbers (with a backend without the hook, those from the
        failing message on) and the later groups' are voided so no fence waits for them, and
        the error is raised with a note naming what was sent.
        """
        return publish_many(self, keys, values, headers)

    # ------------------------------------------------------------------ resharding
    @contextmanager
    def resharding(self) -> Iterator[None]:
        """Pause producers, let the caller change the map, then fence every moved range.

        Use as ``with router.resharding(): with shard_map.batch(): ...``. If the body raises,
        no fence is installed (the map's batch rolled back).
        """
        with self._gate.exclusive():
            before = self._map.epoch
            yield
            if self._map.epoch == before:
                return
            if isinstance(self.fences, SharedFenceRegistry):
                self._switch_shared(before)
            else:
                self._install_fences(self._map.diff(before))

    def _switch_shared(self, before: int) -> None:
        after = int(self._map.epoch)
        assert self.fence_store is not None and isinstance(self.fences, SharedFenceRegistry)
        steps: list[tuple[int, list[tuple[int, int, str, str]]]] = []
        for e in range(before + 1, after + 1):
            if e == before + 1 == after:
                moves = [(c.start, c.end, c.old_shard, c.new_shard) for c in self._map.diff(before)
                         if c.old_shard is not None and c.new_shard is not None and c.old_shard != c.new_shard]
            else:
                rec = self.fence_store.read_record(e)
                if rec is None:
                    # a manager without FencedMapStore: the collapsed diff is the best we know
                    log.warning("no fence record for epoch %d of map %r; using diff(%d)", e, self._map.name, e - 1)
                    moves = [(c.start, c.end, c.old_shard, c.new_shard) for c in self._map.diff(e - 1)
                             if c.old_shard is not None and c.new_shard is not None and c.old_shard != c.new_shard]
                else:
                    moves = rec
            steps.append((e, [(a, b, self.queue_of(o), self.queue_of(n)) for a, b, o, n in moves]))
        self.fences.switch(before, after, steps)
        self._retire_gone_shards()
        # a shard created and retired between two of our syncs never was in our map
        self._retire_moved_away(steps)

    def _retire_moved_away(self, steps: Sequence[tuple[int, list[tuple[int, int, str, str]]]]) -> None:
        live = {self.queue_of(s) for s in self._map.shards}
        for _, moves in steps:
            self.retired_queues.update(old_q for _, _, old_q, _ in moves if old_q not in live)

    def _adopt_open_fences(self) -> None:
        """Join late: install the fences of every epoch the manager reports may still be open
        and learn the retired queues still to drain. Without this a consumer started (or
        restarted) after a resharding would never drain a retired queue's backlog, and could
        deliver a moved key's new messages ahead of the old ones still queued elsewhere."""
        assert self.fence_store is not None and isinstance(self.fences, SharedFenceRegistry)
        now = int(self._map.epoch)
        start, retired = self.fence_store.read_open()
        # no record of what is open (no manager wrote one): look back as far as marks reach
        first = max(start if start is not None else 1, now - MAX_SWITCHES + 1, 1)
        steps = []
        for e in range(first, now + 1):
            rec = self.fence_store.read_record(e)
            if rec:
                steps.append((e, [(a, b, self.queue_of(o), self.queue_of(n)) for a, b, o, n in rec]))
        self.fences.adopt(steps)
        self.retired_queues.update(retired)
        self._retire_moved_away(steps)
        self.fences.refresh(force=True)

    def share_open_fences(self) -> None:
        """Record, for routers that start later, the oldest epoch with a fence still open
        here and the retired queues not deleted yet (the manager calls this after each apply
        and each :meth:`ShardManager.collect_retired`; a no-op without ``fence_store``)."""
        if self.fence_store is None or not isinstance(self.fences, SharedFenceRegistry):
            return
        self.fences.refresh(force=True)
        start = min((f.mark_epoch for f in self.fences.active()), default=int(self._map.epoch) + 1)
        state = (start, tuple(sorted(self.retired_queues)))
        if state != self._shared_open:
            self.fence_store.write_open(*state)
            self._shared_open = state

    def _retire_gone_shards(self) -> None:
        live = set(self._map.shards)
        for shard in self._live_shards - live:
            self.retired_queues.add(self.queue_of(shard))
        self._live_shards = live

    def _install_fences(self, changes: Sequence[Any]) -> None:
        assert isinstance(self.fences, FenceRegistry)
        fences: list[DrainFence] = []
        for c in changes:
            if c.old_shard is None or c.new_shard is None or c.old_shard == c.new_shard:
                continue  # a node-only move keeps the queue, and with it the order
            old_q = self.queue_of(c.old_shard)
            fences.append(
                DrainFence(c.start, c.end, old_q, self.queue_of(c.new_shard),
                           self.fences.last_seq(old_q), int(c.epoch))
            )
        self.fences.install(fences)
        self._retire_gone_shards()

    def observe_epoch(self, epoch: int) -> bool:
        """A message stamped with ``epoch`` was seen: refresh from the store first if it is
        newer than ours. Returns True when the map changed."""
        if epoch <= self._map.epoch or self.store is None:
            return False
        with self.resharding():
            ensure = getattr(self.store, "ensure_epoch", None)
            # the message proves the epoch exists: wait briefly for it to become readable
            newer = ensure(self._map, epoch) if ensure is not None else self.store.refresh(self._map)
            if newer is not self._map:
                self._map = newer
        return True

    def sync(self) -> bool:
        """Switch to the stored map if it is newer (producers call this now and then, or on a
        watcher's notification). Returns True when the map changed."""
        if self.store is None:
            raise InvalidValueError("sync needs a store: Router(shard_map, backend, store=...)")
        stored = self.store.epoch()
        if stored <= self._map.epoch:
            return False
        return self.observe_epoch(stored)

    # ------------------------------------------------------------------ consuming
    def consumer(self, shard_or_queue: str, group: str = "fastshard", name: str = "c0") -> FencedConsumer:
        """A consumer of one shard (or of a retired shard's queue, to drain it)."""
        q = shard_or_queue if shard_or_queue.startswith(self.queue_prefix + ".") else self.queue_of(shard_or_queue)
        return FencedConsumer(self, q, group, name)

    def live_queues(self) -> list[str]:
        """Queues of the current shards plus retired ones that still hold messages to drain."""
        return [self.queue_of(s) for s in self._map.shards] + sorted(self.retired_queues)

    def drained(self, queue: str, group: str = "fastshard") -> bool:
        """Has ``group`` acked everything on ``queue`` and does no fence wait for it?"""
        if self.backend is None:
            return True
        return self.backend.backlog(queue, group) == 0 and not self.fences.waiting_on(queue)


class FencedConsumer:
    """Consumes one queue, releasing each message only once no drain fence holds its range.

    Messages come out in queue order except that held ones wait (and with them every later
    message of the same key, so per-key order is kept). A message redelivered by the backend
    while it is held or delivered-but-unacked is dropped as a duplicate.
    """

    def __init__(self, router: Router, queue: str, group: str, name: str) -> None:
        self.router = router
        self.queue = validate_name("queue", queue)
        self.group = validate_name("group", group)
        self.name = validate_name("consumer", name)
        self._buffer: list[tuple[Message, int]] = []  # (message, key hash), held
        self._open: set[str] = set()  # ids held or delivered and not acked yet

    @property
    def held(self) -> int:
        return len(self._buffer)

    def poll(self, max_messages: int = 100, timeout: float = 0.0) -> list[Message]:
        backend = self.router.backend
        if backend is None:
            raise InvalidValueError("poll needs a backend: Router(shard_map, backend)")
        try:
            batch = backend.consume(self.queue, self.group, self.name, max_messages=max_messages, timeout=timeout)
        except UnknownQueueError:
            if self.queue not in self.router.retired_queues or self._buffer:
                raise
            # the manager deletes a retired queue once it is drained and no fence waits on it
            self.router.retired_queues.discard(self.queue)
            return []
        for m in batch:
            if m.id in self._open:
                continue
            if BARRIER_HEADER in m.headers:
                # a dead producer's barrier: not a user message; record its final mark
                if isinstance(self.router.fences, SharedFenceRegistry):
                    self.router.fences.barrier_seen(self.queue, m)
                backend.ack(self.queue, self.group, [m.id])
                continue
            self._open.add(m.id)
            if isinstance(self.router.fences, SharedFenceRegistry):
                self.router.fences.seen(self.queue, m)
            if m.epoch:
                self.router.observe_epoch(m.epoch)
            hs = m.headers.get(HASH_HEADER)
            self._buffer.append((m, int(hs) if hs is not None else hash_key(m.key)))
        out: list[Message] = []
        keep: list[tuple[Message, int]] = []
        blocked: set[bytes] = set()
        fences = self.router.fences
        if self._buffer and isinstance(fences, SharedFenceRegistry) and fences.pending_for(self.queue):
            fences.refresh()
        for m, h in self._buffer:
            if m.key in blocked or fences.holds(self.queue, h, m.epoch):
                blocked.add(m.key)
                keep.append((m, h))
            else:
                out.append(m)
        self._buffer = keep
        return out

    def ack(self, messages: Sequence[Message]) -> int:
        """Acknowledge delivered messages and settle their sequence numbers (may release fences)."""
        if not messages:
            return 0
        backend = self.router.backend
        assert backend is not None
        # settle first: a crash between the two redelivers a processed message (allowed,
        # delivery is at least once) but can never release a fence ahead of its messages
        self.router.fences.acked(self.queue, messages)
        n = backend.ack(self.queue, self.group, [m.id for m in messages])
        for m in messages:
            self._open.discard(m.id)
        return n
