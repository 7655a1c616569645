"""RedisBackend: fastshard's backend contract on a Redis server (or Redis Cluster).

* queues: one stream per queue, consumer groups, redelivery by XAUTOCLAIM after the
  visibility timeout, backlog = group lag + pending entries;
* key-value: one hash ``{value, version}`` per key, CAS in a Lua script; notify/subscribe
  on pub/sub channels;
* counters: INCRBY; leases: a Lua script over ``{owner, token, exp}`` using the server's
  clock, fencing tokens from a per-lease INCR.

Retries. A dropped connection is retried (``retry_attempts`` times, capped exponential
backoff) for every call that is safe to repeat. Reads and the lease acquire/renew scripts
are naturally idempotent. Writes that are not (XADD with a server-assigned id, HINCRBY,
INCRBY, DEL) run inside scripts that take a request id and remember their result for
``dedup_ttl`` seconds, so a retry after a lost reply returns the first result instead of
writing twice. A single publish is one plain ``XADD`` carrying its request id; only its
retry runs a script that looks for that id first (see :mod:`fastshard_redis.single`). Consuming is at-least-once: a delivery whose reply was lost stays pending in
the group and is redelivered after the visibility timeout. ``notify`` is the one call that
is never retried (pub/sub cannot be de-duplicated and the contract is at-most-once); its
failure is surfaced. After the retries, :class:`BackendUnavailableError` is raised.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fastshard.backends.base import (
    Backend,
    LeaseInfo,
    Message,
    Subscription,
    Versioned,
    validate_name,
)
from fastshard.backends.retry import call_with_retry
from fastshard.backends.stamp import checked_stamped_batch
from fastshard.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidTypeError,
    InvalidValueError,
    UnknownQueueError,
    check_finite,
    check_int,
    check_seconds,
)
from fastshard_redis import scripts
from fastshard_redis.keys import KeyLayout
from fastshard_redis.single import TRANSIENT_ERRORS, SinglePublisher
from fastshard_redis.stamped import stamped_fields

T = TypeVar("T")

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
#: headers as compact JSON; a prebuilt encoder (json.dumps with options builds one per call)
_headers_json = json.JSONEncoder(separators=(",", ":")).encode
#: messages per publish script call: bounds how long one script blocks the server (~1 ms)
PUBLISH_CHUNK = 1000


class _RedisSubscription(Subscription):
    """A pub/sub connection of its own; SUBSCRIBE is confirmed before it is returned."""

    def __init__(self, backend: RedisBackend, channel: str) -> None:
        self._backend = backend
        self._channel = channel
        self._pubsub = backend._client.pubsub(ignore_subscribe_messages=False)
        self._closed = False
        backend._call(f"subscribe {channel!r}", self._subscribe_confirmed)

    def _subscribe_confirmed(self) -> None:
        # A notify sent after subscribe() returns must reach us, so wait for the server's
        # confirmation rather than returning while SUBSCRIBE is still in flight.
        self._pubsub.subscribe(self._channel)
        deadline = self._backend.socket_timeout
        while True:
            msg = self._pubsub.get_message(timeout=deadline)
            if msg is None:
                raise redis.exceptions.TimeoutError("no SUBSCRIBE confirmation")
            if msg["type"] == "subscribe":
                return

    def get(self, timeout: float | None = None) -> bytes | None:
        if timeout is not None:
            timeout = check_finite("timeout", timeout)
            if timeout < 0:
                raise InvalidValueError(f"timeout must be >= 0 seconds or None, got {timeout}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            # redis-py re-subscribes on reconnect; what was published meanwhile is lost,
            # which is pub/sub's (and the contract's) at-most-once delivery.
            msg = self._backend._call(
                f"receive on {self._channel!r}",
                partial(self._pubsub.get_message, timeout=wait),
            )
            if msg is not None and msg["type"] == "message":
                return bytes(msg["data"])
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._pubsub.close()
            except redis.exceptions.RedisError:
                pass  # the connection is being discarded anyway


class RedisBackend(Backend):
    """The ``redis`` backend.

    Options: ``url`` (``redis://host:port/db``, ``rediss://`` for TLS), ``namespace`` (key
    prefix isolating deployments and tests), ``cluster`` (use Redis Cluster), timeouts,
    retry settings, ``visibility_timeout``, ``max_message_bytes``, ``dedup_ttl`` (seconds a
    write's result is remembered for retries), ``max_connections`` and ``client_name``.
    Nothing connects until the first call; :meth:`ping` checks the server.
    """

    name = "redis"

    def __init__(
        self,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        namespace: str = "fastshard",
        cluster: bool = False,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        retry_attempts: int = 5,
        retry_base_delay: float = 0.05,
        retry_max_delay: float = 1.0,
        visibility_timeout: float = 30.0,
        max_message_bytes: int = 1 << 20,
        dedup_ttl: int = 300,
        max_connections: int = 64,
        client_name: str = "fastshard",
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidValueError(f"url must be a redis://, rediss:// or unix:// URL, got {url!r}")
        validate_name("namespace", namespace)
        if not isinstance(cluster, bool):
            raise InvalidTypeError(f"cluster must be a bool, got {type(cluster).__name__}")
        self.socket_timeout = check_seconds("socket_timeout", socket_timeout, 3600)
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout, 3600)
        self.retry_attempts = check_int("retry_attempts", retry_attempts, 1, 100)
        self.retry_base_delay = check_seconds("retry_base_delay", retry_base_delay, 60)
        self.retry_max_delay = check_seconds("retry_max_delay", retry_max_delay, 600)
        self.visibility_timeout = check_seconds("visibility_timeout", visibility_timeout, 86_400)
        self.max_message_bytes = check_int("max_message_bytes", max_message_bytes, 1, 512 << 20)
        self.dedup_ttl = check_int("dedup_ttl", dedup_ttl, 1, 86_400)
        check_int("max_connections", max_connections, 1, 100_000)
        validate_name("client_name", client_name)
        self.url = url
        self.namespace = namespace
        self.keys = KeyLayout(namespace)
        options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            # fastshard decides what is retried (see the module docstring), not redis-py
            "retry": Retry(NoBackoff(), 0),
            "max_connections": max_connections,
            # shows up in CLIENT LIST, so operators (and tests) can find our connections
            "client_name": client_name,
        }
        if cluster:
            from redis.cluster import RedisCluster
            from redis.exceptions import RedisClusterException

            # RedisCluster connects here (it reads the slot map), so an unreachable cluster
            # surfaces now: retried and reported like any other call
            self._client: Any = call_with_retry(
                lambda: RedisCluster.from_url(url, **options),
                what=f"redis cluster connect to {url}",
                retry_on=(*TRANSIENT_ERRORS, RedisClusterException),
                attempts=self.retry_attempts,
                base_delay=self.retry_base_delay,
                max_delay=self.retry_max_delay,
            )
        else:
            self._client = redis.Redis.from_url(url, **options)
        self._scripts = {
            name: self._client.register_script(getattr(scripts, name))
            for name in (
                "PUBLISH", "PUBLISH_STAMPED", "CONSUME", "ACK", "BACKLOG", "KV_SET", "KV_CAS", "KV_DELETE",
                "COUNTER_ADD", "LEASE_ACQUIRE", "LEASE_RENEW", "LEASE_RELEASE", "LEASE_INFO",
            )
        }
        # One XADD per single publish on connections of its own (not through redis-py's
        # command layer). On a cluster, single publishes take the batch script instead.
        self._single = None if cluster else SinglePublisher(self, max_connections)
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, fn: Callable[[], T], *, queue: str | None = None) -> T:
        """Run an idempotent call with retries; map Redis errors to fastshard's."""
        try:
            return call_with_retry(
                fn,
                what=f"redis {what} on {self.url}",
                retry_on=TRANSIENT_ERRORS,
                attempts=self.retry_attempts,
                base_delay=self.retry_base_delay,
                max_delay=self.retry_max_delay,
            )
        except redis.exceptions.ResponseError as exc:
            if queue is not None and str(exc).startswith("NOQUEUE"):
                raise UnknownQueueError(
                    f"queue {queue!r} does not exist; create_queue it first"
                ) from None
            raise BackendError(f"redis {what} failed: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    @staticmethod
    def _request_id() -> str:
        return os.urandom(12).hex()

    def ping(self) -> None:
        self._call("ping", self._client.ping)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._single is not None:
                self._single.close()
            self._client.close()

    def drop_namespace(self) -> int:
        """Delete every key of this namespace (tests, decommissioning); returns how many."""
        def drop() -> int:
            n = 0
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=self.keys.namespace_pattern(), count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    n += sum(self._client.delete(k) for k in batch)  # one slot per key on a cluster
                    batch.clear()
            n += sum(self._client.delete(k) for k in batch)
            return n

        return self._call("drop namespace", drop)

    # ------------------------------------------------------------------ queues
    def _create_queue(self, queue: str) -> None:
        stream = self.keys.stream(queue)

        def create() -> None:
            if not self._client.exists(stream):
                # An empty stream: add one entry and trim it away in the same command.
                self._client.execute_command("XADD", stream, "MAXLEN", "0", "*", "_", "")
            self._client.sadd(self.keys.queue_registry, queue)

        self._call(f"create queue {queue!r}", create)

    def _delete_queue(self, queue: str) -> None:
        def delete() -> None:
            self._client.srem(self.keys.queue_registry, queue)
            self._client.delete(self.keys.stream(queue))

        self._call(f"delete queue {queue!r}", delete)

    def _list_queues(self) -> Iterable[str]:
        members = self._call("list queues", lambda: self._client.smembers(self.keys.queue_registry))
        return [m.decode() for m in members]

    def _publish_batch(
        self, queue: str, batch: list[tuple[bytes, bytes]], headers: dict[str, str], epoch: int
    ) -> list[str]:
        stream = self.keys.stream(queue)
        hdr = _headers_json(headers) if headers else ""
        if len(batch) == 1 and self._single is not None:
            k, v = batch[0]
            return [self._single.publish(queue, stream, k, v, hdr.encode(), epoch)]
        return self._publish_chunks(queue, stream, "PUBLISH", [self.dedup_ttl, epoch, hdr], batch)

    def publish_stamped_batch(
        self, queue: str, keys: Sequence[bytes], values: Sequence[bytes | str], epoch: int,
        first_seq: int, key_hashes: Sequence[int], headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """One queue's part of ``Router.publish_many`` (its ``StampedBatchPublisher`` hook): one
        de-duplicated script run per :data:`PUBLISH_CHUNK` messages, each message with its own
        ``fs-seq``/``fs-hash`` headers (see :func:`fastshard_redis.stamped.stamped_fields`)."""
        items, hdrs, epoch = checked_stamped_batch(self, queue, keys, values, epoch, first_seq,
                                                   key_hashes, headers)
        return self._publish_chunks(queue, self.keys.stream(queue), "PUBLISH_STAMPED",
                                    [self.dedup_ttl, epoch],
                                    stamped_fields(items, hdrs, first_seq, key_hashes))

    def _publish_chunks(self, queue: str, stream: str, script: str, head: list[Any],
                        messages: Sequence[tuple[bytes, ...]]) -> list[str]:
        """Run ``script`` with ``head`` and then each message's arguments, PUBLISH_CHUNK
        messages per run."""
        ids: list[str] = []
        # Each chunk is one atomic, de-duplicated script run. If a later chunk fails after
        # its retries, the earlier chunks stay published and the error says how many.
        for start in range(0, len(messages), PUBLISH_CHUNK):
            args = list(head)
            for fields in messages[start : start + PUBLISH_CHUNK]:
                args.extend(fields)
            dedup = self.keys.request(stream, self._request_id())
            try:
                joined = self._call(
                    f"publish to {queue!r}",
                    partial(self._script, script, [stream, dedup], args),
                    queue=queue,
                )
            except BackendError as exc:
                if ids:
                    raise type(exc)(
                        f"{exc} (the first {len(ids)} of {len(messages)} messages were published "
                        f"with ids up to {ids[-1]})"
                    ) from exc
                raise
            ids.extend(joined.decode().split(","))
        return ids

    def _consume(
        self, queue: str, group: str, consumer: str, max_messages: int, timeout: float
    ) -> list[Message]:
        stream = self.keys.stream(queue)
        idle_ms = max(1, int(self.visibility_timeout * 1000))
        deadline = time.monotonic() + timeout
        while True:
            # Not idempotent in the strict sense (deliveries move into this consumer's
            # pending list), but a retry loses nothing: a delivery whose reply was lost is
            # redelivered after the visibility timeout, so consuming is at-least-once.
            flat = self._call(
                f"consume {queue!r}",
                lambda: self._script("CONSUME", [stream], [group, consumer, idle_ms, max_messages]),
                queue=queue,
            )
            if flat:
                return [
                    self._message(queue, flat[i], flat[i + 1], int(flat[i + 2]))
                    for i in range(0, len(flat), 3)
                ]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            # Block for new entries, waking at least every visibility_timeout / 4 to look
            # for deliveries that timed out in the meantime.
            wait = min(left, self.visibility_timeout / 4, 1.0, self.socket_timeout / 2)
            reply = self._call(
                f"consume {queue!r}",
                partial(
                    self._client.xreadgroup,
                    group,
                    consumer,
                    {stream: ">"},
                    count=max_messages,
                    block=max(1, int(wait * 1000)),
                ),
            )
            if reply:
                return [self._fields_message(queue, mid, fields, 1) for mid, fields in reply[0][1]]

    @staticmethod
    def _message(queue: str, mid: bytes, flat_fields: list[bytes], count: int) -> Message:
        f = {flat_fields[i]: flat_fields[i + 1] for i in range(0, len(flat_fields), 2)}
        return RedisBackend._build(queue, mid, f, count)

    @staticmethod
    def _fields_message(queue: str, mid: bytes, fields: dict[bytes, bytes], count: int) -> Message:
        return RedisBackend._build(queue, mid, fields, count)

    @staticmethod
    def _build(queue: str, mid: bytes, f: dict[bytes, bytes], count: int) -> Message:
        h = f.get(b"h")
        headers = json.loads(h) if h else {}
        return Message(queue, mid.decode(), f[b"k"], f[b"v"], headers, int(f.get(b"e", 0)), count)

    def _ack(self, queue: str, group: str, ids: list[str]) -> int:
        for mid in ids:
            if not _STREAM_ID.match(mid):
                raise InvalidValueError(f"ids must be ids returned by consume, got {mid!r}")
        # XACK is idempotent; a retry after a lost reply returns a smaller count.
        stream = self.keys.stream(queue)
        return int(
            self._call(
                f"ack {queue!r}",
                lambda: self._script(
                    "ACK", [stream, self.keys.trimmed_requests(stream)],
                    [group, self.dedup_ttl * 1000, *ids],
                ),
                queue=queue,
            )
        )

    def _backlog(self, queue: str, group: str) -> int:
        return int(
            self._call(
                f"backlog {queue!r}",
                lambda: self._script("BACKLOG", [self.keys.stream(queue)], [group]),
                queue=queue,
            )
        )

    # ------------------------------------------------------------------ key-value
    def _kv_get(self, key: str) -> Versioned | None:
        value, version = self._call(
            "kv_get", lambda: self._client.hmget(self.keys.kv(key), "value", "version")
        )
        if version is None:
            return None
        return Versioned(value if value is not None else b"", int(version))

    def _dedup_write(self, what: str, script: str, main_key: str, args: list[Any]) -> Any:
        dedup = self.keys.request(main_key, self._request_id())
        return self._call(what, lambda: self._script(script, [main_key, dedup], args))

    def _kv_set(self, key: str, value: bytes) -> int:
        return int(self._dedup_write("kv_set", "KV_SET", self.keys.kv(key), [value, self.dedup_ttl]))

    def _kv_cas(self, key: str, value: bytes, expected_version: int) -> int | None:
        r = self._dedup_write(
            "kv_cas", "KV_CAS", self.keys.kv(key), [value, expected_version, self.dedup_ttl]
        )
        return None if r is None else int(r)

    def _kv_delete(self, key: str) -> bool:
        return bool(self._dedup_write("kv_delete", "KV_DELETE", self.keys.kv(key), [self.dedup_ttl]))

    def _kv_keys(self, prefix: str) -> Iterable[str]:
        pattern = self.keys.kv_scan_pattern(prefix)

        def scan() -> list[str]:
            out = []
            for raw in self._client.scan_iter(match=pattern, count=1000):
                key = self.keys.kv_key_of(raw.decode())
                if key is not None and key.startswith(prefix):
                    out.append(key)
            return out

        return self._call("kv_keys", scan)

    def _notify(self, channel: str, payload: bytes) -> None:
        # Never retried: a PUBLISH whose reply was lost may have been delivered, and a
        # second one would break at-most-once. The caller sees BackendUnavailableError.
        try:
            self._client.publish(self.keys.channel(channel), payload)
        except TRANSIENT_ERRORS as exc:
            raise BackendUnavailableError(
                f"redis notify on {channel!r} failed ({type(exc).__name__}: {exc}); "
                "subscribers may or may not have received it"
            ) from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"redis notify on {channel!r} failed: {exc}") from exc

    def _subscribe(self, channel: str) -> Subscription:
        return _RedisSubscription(self, self.keys.channel(channel))

    # ------------------------------------------------------------------ counters and leases
    def _counter_add(self, name: str, delta: int) -> int:
        key = self.keys.counter(name)
        if delta == 0:
            value = self._call("counter_get", lambda: self._client.get(key))
            return 0 if value is None else int(value)
        return int(self._dedup_write("counter_add", "COUNTER_ADD", key, [delta, self.dedup_ttl]))

    @staticmethod
    def _us(seconds: float) -> int:
        return max(1, round(seconds * 1_000_000))

    def _lease_acquire(self, name: str, owner: str, ttl: float) -> int | None:
        r = self._call(
            "lease_acquire",
            lambda: self._script(
                "LEASE_ACQUIRE", [self.keys.lease(name), self.keys.lease_seq(name)],
                [owner, self._us(ttl)],
            ),
        )
        return None if r is None else int(r)

    def _lease_renew(self, name: str, owner: str, token: int, ttl: float) -> bool:
        r = self._call(
            "lease_renew",
            lambda: self._script("LEASE_RENEW", [self.keys.lease(name)], [owner, token, self._us(ttl)]),
        )
        return bool(r)

    def _lease_release(self, name: str, owner: str, token: int) -> bool:
        return bool(
            self._dedup_write(
                "lease_release", "LEASE_RELEASE", self.keys.lease(name), [owner, token, self.dedup_ttl]
            )
        )

    def _lease_info(self, name: str) -> LeaseInfo | None:
        r = self._call("lease_info", lambda: self._script("LEASE_INFO", [self.keys.lease(name)], []))
        if r is None:
            return None
        owner, token, left_us = r
        return LeaseInfo(owner.decode(), int(token), int(left_us) / 1_000_000)
