"""The embedded in-memory backend: the default everywhere, and the reference for the contract.

Everything lives in this process behind one condition variable, so every operation is
atomic with respect to every other. It keeps nothing across restarts; use a server backend
for that. Consumer groups behave like Kafka's or Redis streams': each group has a cursor
into the queue's log and a pending list of delivered-but-unacked messages, redelivered after
the visibility timeout. The log is trimmed once every group that has read a queue has acked
a prefix of it; a group that starts reading later begins at the oldest retained message.
"""

from __future__ import annotations

import queue as _queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fastshard.backends.base import Backend, LeaseInfo, Message, Subscription, Versioned
from fastshard.backends.plugins import hookimpl
from fastshard.backends.stamp import HASH_HEADER, SEQ_HEADER, checked_stamped_batch
from fastshard.errors import InvalidValueError, UnknownQueueError, check_seconds


@dataclass(slots=True)
class _Group:
    cursor: int  # offset of the next never-delivered message
    # offset -> (redeliver_at monotonic deadline, delivery_count)
    pending: dict[int, tuple[float, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Queue:
    base: int = 0  # offset of log[0]
    log: deque = field(default_factory=deque)  # (key, value, headers, epoch)
    groups: dict[str, _Group] = field(default_factory=dict)


class _MemorySubscription(Subscription):
    def __init__(self, backend: MemoryBackend, channel: str) -> None:
        self._backend = backend
        self._channel = channel
        self._inbox: _queue.SimpleQueue[bytes] = _queue.SimpleQueue()
        self._closed = False

    def get(self, timeout: float | None = None) -> bytes | None:
        try:
            return self._inbox.get(timeout=timeout) if timeout != 0 else self._inbox.get_nowait()
        except _queue.Empty:
            return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._backend._unsubscribe(self._channel, self)


class MemoryBackend(Backend):
    """In-process backend. ``visibility_timeout`` and ``max_message_bytes`` are options."""

    name = "memory"

    def __init__(self, *, visibility_timeout: float = 30.0, max_message_bytes: int = 1 << 20) -> None:
        vt = check_seconds("visibility_timeout", visibility_timeout)
        if not isinstance(max_message_bytes, int) or not 1 <= max_message_bytes <= 1 << 30:
            raise InvalidValueError(
                f"max_message_bytes must be an int in [1, 2**30], got {max_message_bytes!r}"
            )
        self.visibility_timeout = vt
        self.max_message_bytes = max_message_bytes
        self._cv = threading.Condition()
        self._queues: dict[str, _Queue] = {}
        self._kv: dict[str, Versioned] = {}
        self._counters: dict[str, int] = {}
        self._leases: dict[str, tuple[str, int, float]] = {}  # name -> owner, token, deadline
        self._lease_tokens: dict[str, int] = {}
        self._subs: dict[str, list[_MemorySubscription]] = {}

    # ------------------------------------------------------------------ queues
    def _create_queue(self, queue: str) -> None:
        with self._cv:
            self._queues.setdefault(queue, _Queue())

    def _delete_queue(self, queue: str) -> None:
        with self._cv:
            self._queues.pop(queue, None)

    def _list_queues(self) -> Iterable[str]:
        with self._cv:
            return list(self._queues)

    def _queue(self, queue: str) -> _Queue:
        q = self._queues.get(queue)
        if q is None:
            # Publishing or reading a queue that was never created is a caller bug (e.g. a
            # router with a stale map); say so rather than invent the queue.
            raise UnknownQueueError(f"queue {queue!r} does not exist; create_queue it first")
        return q

    def _publish_batch(
        self, queue: str, batch: list[tuple[bytes, bytes]], headers: dict[str, str], epoch: int
    ) -> list[str]:
        with self._cv:
            q = self._queue(queue)
            first = q.base + len(q.log)
            for key, value in batch:
                q.log.append((key, value, headers, epoch))
            self._cv.notify_all()
            return [str(first + i) for i in range(len(batch))]

    def publish_stamped_batch(
        self, queue: str, keys: Sequence[bytes], values: Sequence[bytes | str], epoch: int,
        first_seq: int, key_hashes: Sequence[int], headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """One queue's part of ``Router.publish_many`` (the router's ``StampedBatchPublisher``
        hook): validated like ``publish_batch``, then appended under one lock hold, so the
        whole group is published or none of it, each message with its own stamp."""
        items, hdrs, epoch = checked_stamped_batch(self, queue, keys, values, epoch, first_seq,
                                                   key_hashes, headers)
        logged = [
            (k, v, {**hdrs, SEQ_HEADER: str(first_seq + i), HASH_HEADER: str(h)}, epoch)
            for i, ((k, v), h) in enumerate(zip(items, key_hashes, strict=True))
        ]
        with self._cv:
            q = self._queue(queue)
            first = q.base + len(q.log)
            q.log.extend(logged)
            self._cv.notify_all()
            return [str(first + i) for i in range(len(logged))]

    def _consume(
        self, queue: str, group: str, consumer: str, max_messages: int, timeout: float
    ) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                q = self._queue(queue)
                g = q.groups.get(group)
                if g is None:
                    g = q.groups[group] = _Group(cursor=q.base)
                out = self._take(queue, q, g, max_messages)
                now = time.monotonic()
                if out or now >= deadline:
                    return out
                wait = deadline - now
                if g.pending:
                    wait = min(wait, max(0.0, min(d for d, _ in g.pending.values()) - now))
                self._cv.wait(timeout=max(wait, 0.001))

    def _take(self, queue: str, q: _Queue, g: _Group, limit: int) -> list[Message]:
        now = time.monotonic()
        out: list[Message] = []
        due = sorted(off for off, (d, _) in g.pending.items() if d <= now)
        for off in due[:limit]:
            _, count = g.pending[off]
            g.pending[off] = (now + self.visibility_timeout, count + 1)
            out.append(self._message(queue, q, off, count + 1))
        end = q.base + len(q.log)
        g.cursor = max(g.cursor, q.base)
        while len(out) < limit and g.cursor < end:
            off = g.cursor
            g.cursor += 1
            g.pending[off] = (now + self.visibility_timeout, 1)
            out.append(self._message(queue, q, off, 1))
        return out

    @staticmethod
    def _message(queue: str, q: _Queue, off: int, count: int) -> Message:
        key, value, headers, epoch = q.log[off - q.base]
        return Message(queue, str(off), key, value, headers, epoch, count)

    def _ack(self, queue: str, group: str, ids: list[str]) -> int:
        with self._cv:
            q = self._queue(queue)
            g = q.groups.get(group)
            if g is None:
                return 0
            done = 0
            for mid in ids:
                try:
                    off = int(mid)
                except ValueError:
                    raise InvalidValueError(f"ids must be ids returned by consume, got {mid!r}") from None
                if g.pending.pop(off, None) is not None:
                    done += 1
            self._trim(q)
            return done

    @staticmethod
    def _trim(q: _Queue) -> None:
        # Everything below every group's lowest unacked offset is no longer needed.
        if not q.groups:
            return
        low = min(min(g.pending, default=g.cursor) for g in q.groups.values())
        while q.base < low and q.log:
            q.log.popleft()
            q.base += 1

    def _backlog(self, queue: str, group: str) -> int:
        with self._cv:
            q = self._queue(queue)
            g = q.groups.get(group)
            end = q.base + len(q.log)
            if g is None:
                return end - q.base
            return (end - max(g.cursor, q.base)) + len(g.pending)

    # ------------------------------------------------------------------ key-value
    def _kv_get(self, key: str) -> Versioned | None:
        with self._cv:
            return self._kv.get(key)

    def _kv_set(self, key: str, value: bytes) -> int:
        with self._cv:
            old = self._kv.get(key)
            v = Versioned(value, (old.version if old else 0) + 1)
            self._kv[key] = v
            return v.version

    def _kv_cas(self, key: str, value: bytes, expected_version: int) -> int | None:
        with self._cv:
            old = self._kv.get(key)
            if (old.version if old else 0) != expected_version:
                return None
            self._kv[key] = Versioned(value, expected_version + 1)
            return expected_version + 1

    def _kv_delete(self, key: str) -> bool:
        with self._cv:
            return self._kv.pop(key, None) is not None

    def _kv_keys(self, prefix: str) -> Iterable[str]:
        with self._cv:
            return [k for k in self._kv if k.startswith(prefix)]

    def _notify(self, channel: str, payload: bytes) -> None:
        with self._cv:
            subs = list(self._subs.get(channel, ()))
        for s in subs:
            s._inbox.put(payload)

    def _subscribe(self, channel: str) -> Subscription:
        sub = _MemorySubscription(self, channel)
        with self._cv:
            self._subs.setdefault(channel, []).append(sub)
        return sub

    def _unsubscribe(self, channel: str, sub: _MemorySubscription) -> None:
        with self._cv:
            subs = self._subs.get(channel, [])
            if sub in subs:
                subs.remove(sub)

    # ------------------------------------------------------------------ counters and leases
    def _counter_add(self, name: str, delta: int) -> int:
        with self._cv:
            v = self._counters.get(name, 0) + delta
            self._counters[name] = v
            return v

    def _lease_acquire(self, name: str, owner: str, ttl: float) -> int | None:
        with self._cv:
            now = time.monotonic()
            held = self._leases.get(name)
            if held is not None and held[2] > now and held[0] != owner:
                return None
            if held is not None and held[2] > now and held[0] == owner:
                token = held[1]
            else:
                token = self._lease_tokens.get(name, 0) + 1
                self._lease_tokens[name] = token
            self._leases[name] = (owner, token, now + ttl)
            return token

    def _lease_renew(self, name: str, owner: str, token: int, ttl: float) -> bool:
        with self._cv:
            now = time.monotonic()
            held = self._leases.get(name)
            if held is None or held[0] != owner or held[1] != token:
                return False
            if held[2] <= now and self._lease_tokens.get(name) != token:
                return False
            self._leases[name] = (owner, token, now + ttl)
            return True

    def _lease_release(self, name: str, owner: str, token: int) -> bool:
        with self._cv:
            held = self._leases.get(name)
            if held is None or held[0] != owner or held[1] != token:
                return False
            del self._leases[name]
            return True

    def _lease_info(self, name: str) -> LeaseInfo | None:
        with self._cv:
            held = self._leases.get(name)
            now = time.monotonic()
            if held is None or held[2] <= now:
                return None
            return LeaseInfo(held[0], held[1], held[2] - now)


@hookimpl
def fastshard_backends() -> list[type[Backend]]:
    return [MemoryBackend]
