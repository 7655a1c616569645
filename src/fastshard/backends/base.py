"""The backend contract: what every engine (memory, Redis, Kafka, RabbitMQ, ...) provides.

A backend offers three families of operations, all used by the core:

* **queues** – shards of a message stream: publish (confirmed), consume through a consumer
  group, ack, redelivery of what was not acked within the visibility timeout, backlog;
* **key-value with versions** – metadata (shard maps, item→shard, session→node) with
  compare-and-set on a version number and change notification on a channel;
* **atomic counters and leases** – fetch-add counters (ID blocks) and leases with a fencing
  token (host-id ownership, failover).

Public methods here validate their arguments once, for every backend, and then call the
``_``-prefixed abstract method that a backend implements. A backend therefore never sees
an invalid name, a negative TTL or an oversized message, and every backend rejects them
with the same error.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastshard.errors import (
    FastshardError,
    InvalidTypeError,
    InvalidValueError,
    MessageTooLargeError,
    check_finite,
    check_int,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$")
MAX_KEY_BYTES = 64 * 1024
_MAX_EPOCH = 2**63 - 1
# queue names that passed validate_name (exact str only), so publish re-checks them by a set
# lookup; bounded so a stream of one-off names cannot grow it without limit
_valid_queue_names: set[str] = set()
_VALID_NAME_CACHE = 65536

#: the operation families a backend may offer (see ``Backend.capabilities``)
QUEUES, KV, COUNTERS, LEASES = "queues", "kv", "counters", "leases"
ALL_CAPABILITIES = frozenset({QUEUES, KV, COUNTERS, LEASES})

#: the ``_``-prefixed methods a backend implements for each family it offers
FAMILY_METHODS: dict[str, tuple[str, ...]] = {
    QUEUES: ("_create_queue", "_delete_queue", "_list_queues", "_publish_batch", "_consume",
             "_ack", "_backlog"),
    KV: ("_kv_get", "_kv_set", "_kv_cas", "_kv_delete", "_kv_keys", "_notify", "_subscribe"),
    COUNTERS: ("_counter_add",),
    LEASES: ("_lease_acquire", "_lease_renew", "_lease_release", "_lease_info"),
}


class UnsupportedOperationError(FastshardError, NotImplementedError):
    """The backend does not offer this family of operations (e.g. key-value on RabbitMQ).

    Combine backends instead: queues on Kafka, metadata and counters on Redis.
    """
MAX_KV_KEY_CHARS = 512


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message.

    ``id`` is assigned by the backend and is unique within its queue (a stream id, an
    offset, a sequence number); ``ack`` takes it back. ``epoch`` is the shard-map epoch the
    producer routed the message under (0 when it was not routed through a shard map).
    """

    queue: str
    id: str
    key: bytes
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    epoch: int = 0
    delivery_count: int = 1

    @property
    def redelivered(self) -> bool:
        return self.delivery_count > 1


@dataclass(frozen=True, slots=True)
class Versioned:
    """A key-value entry: its bytes and its version (1 for the first write, +1 per write)."""

    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who holds a lease, under which fencing token, and for how many more seconds."""

    owner: str
    token: int
    expires_in: float


class Subscription(abc.ABC):
    """Notifications published on one channel after the subscription was made."""

    @abc.abstractmethod
    def get(self, timeout: float | None = None) -> bytes | None:
        """The next payload, or ``None`` if none arrived within ``timeout`` seconds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving; idempotent."""

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def validate_name(field_name: str, name: Any) -> str:
    """Queue, group, consumer, counter and lease names: 1-200 chars of ``[A-Za-z0-9._:-]``."""
    if not isinstance(name, str):
        raise InvalidTypeError(f"{field_name} must be a str, got {type(name).__name__}")
    if not _NAME_RE.match(name):
        raise InvalidValueError(
            f"{field_name} must be 1-200 characters of letters, digits and '._:-', "
            f"starting with a letter or digit; got {name!r}"
        )
    return name


def validate_kv_key(key: Any) -> str:
    if not isinstance(key, str):
        raise InvalidTypeError(f"key must be a str, got {type(key).__name__}")
    if not 1 <= len(key) <= MAX_KV_KEY_CHARS or "\x00" in key:
        raise InvalidValueError(
            f"key must be 1-{MAX_KV_KEY_CHARS} characters without NUL; got {key[:80]!r}"
        )
    return key


def _as_bytes(field_name: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise InvalidTypeError(f"{field_name} must be bytes or str, got {type(value).__name__}")


def _validate_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    if type(headers) is dict:
        # one pass over exact types; a copy, so the caller may reuse or change its dict
        for k, v in headers.items():
            if type(k) is not str or type(v) is not str:
                break
        else:
            return headers.copy()
    if not isinstance(headers, Mapping):
        raise InvalidTypeError(f"headers must be a mapping of str to str, got {type(headers).__name__}")
    out: dict[str, str] = {}
    for k, v in headers.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidTypeError(f"headers must map str to str; got {k!r}: {v!r}")
        out[k] = v
    return out


class Backend:
    """Base class of every backend. Subclasses set ``name`` and implement the ``_`` methods.

    Implementations must be safe to call from several threads. A failed call to the server is
    retried (see :func:`fastshard.backends.retry.call_with_retry`) and, if it still fails,
    raises :class:`fastshard.errors.BackendUnavailableError` or
    :class:`fastshard.errors.BackendError`; it never returns a made-up result.
    """

    #: the name it is registered under, e.g. ``"memory"``, ``"redis"``
    name: str = ""
    #: which operation families it implements: a subset of :data:`ALL_CAPABILITIES`.
    #: A message broker without a key-value store (Kafka, RabbitMQ) offers only ``queues``.
    capabilities: frozenset[str] = ALL_CAPABILITIES
    #: largest message value accepted by :meth:`publish`
    max_message_bytes: int = 1024 * 1024
    #: seconds after which a consumed but unacked message is delivered again
    visibility_timeout: float = 30.0

    # ---------------------------------------------------------------- lifecycle
    def ping(self) -> None:
        """Raise :class:`BackendUnavailableError` if the server cannot be reached."""
        return None  # an in-process backend is always reachable; server backends override

    def close(self) -> None:
        """Release connections; idempotent."""
        return None  # nothing to release in-process; server backends override

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.capabilities) - ALL_CAPABILITIES
        if unknown:
            raise TypeError(f"{cls.__name__}.capabilities has unknown families {sorted(unknown)}")
        missing = [
            m for family in sorted(cls.capabilities) for m in FAMILY_METHODS[family]
            if getattr(cls, m) is getattr(Backend, m)
        ]
        if missing:
            raise TypeError(
                f"{cls.__name__} declares capabilities {sorted(cls.capabilities)} "
                f"but does not implement {missing}"
            )

    def _not_implemented(self) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"backend {self.name!r} offers {sorted(self.capabilities)}; this call is not among them"
        )

    def _require(self, family: str) -> None:
        if family not in self.capabilities:
            raise UnsupportedOperationError(
                f"backend {self.name!r} offers {sorted(self.capabilities)}, not {family!r}"
            )

    # ---------------------------------------------------------------- queues
    def create_queue(self, queue: str) -> None:
        """Create a queue (shard); creating one that exists is a no-op."""
        self._require(QUEUES)
        self._create_queue(validate_name("queue", queue))

    def delete_queue(self, queue: str) -> None:
        """Delete a queue and its messages; deleting a missing one is a no-op."""
        self._require(QUEUES)
        self._delete_queue(validate_name("queue", queue))

    def list_queues(self) -> list[str]:
        self._require(QUEUES)
        return sorted(self._list_queues())

    def publish(
        self,
        queue: str,
        key: bytes | str,
        value: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
        epoch: int = 0,
    ) -> str:
        """Append one message; returns its id once the server has confirmed it."""
        return self.publish_batch(queue, [(key, value)], headers=headers, epoch=epoch)[0]

    def publish_batch(
        self,
        queue: str,
        items: Iterable[tuple[bytes | str, bytes | str]],
        *,
        headers: Mapping[str, str] | None = None,
        epoch: int = 0,
    ) -> list[str]:
        """Append messages in order; all are validated before any is sent."""
        if QUEUES not in self.capabilities:
            self._require(QUEUES)
        # The publish path runs once per message for routed single publishes, so the common
        # case (a name seen before, str headers, an int epoch, (bytes, bytes) pairs under the
        # limits) is checked with exact-type tests in one pass; anything else takes the full
        # checks below, which raise the same errors as always.
        if type(queue) is not str or queue not in _valid_queue_names:
            validate_name("queue", queue)
            if type(queue) is str and len(_valid_queue_names) < _VALID_NAME_CACHE:
                _valid_queue_names.add(queue)
        hdrs = _validate_headers(headers)
        if type(epoch) is not int or not 0 <= epoch <= _MAX_EPOCH:
            epoch = check_int("epoch", epoch, 0, _MAX_EPOCH)
        max_value = self.max_message_bytes
        batch: list[tuple[bytes, bytes]] = []
        append = batch.append
        for item in items:
            if type(item) is tuple and len(item) == 2:
                k, v = item
                if (type(k) is bytes and type(v) is bytes
                        and len(k) <= MAX_KEY_BYTES and len(v) <= max_value):
                    append((k, v))
                    continue
            append(self._checked_item(len(batch), item, max_value))
        if not batch:
            return []
        return self._publish_batch(queue, batch, hdrs, epoch)

    def _checked_item(self, i: int, item: Any, max_value: int) -> tuple[bytes, bytes]:
        """``items[i]`` as a (key bytes, value bytes) pair, or the error naming what is wrong."""
        try:
            k, v = item
        except (TypeError, ValueError):
            raise InvalidTypeError(f"items[{i}] must be a (key, value) pair") from None
        kb, vb = _as_bytes("key", k), _as_bytes("value", v)
        if len(kb) > MAX_KEY_BYTES:
            raise InvalidValueError(f"key must be at most {MAX_KEY_BYTES} bytes, got {len(kb)}")
        if len(vb) > max_value:
            raise MessageTooLargeError(
                f"value must be at most {max_value} bytes for backend "
                f"{self.name!r}, got {len(vb)}"
            )
        return kb, vb

    def consume(
        self,
        queue: str,
        group: str,
        consumer: str = "c0",
        *,
        max_messages: int = 100,
        timeout: float = 0.0,
    ) -> list[Message]:
        """Up to ``max_messages`` messages for ``group``, oldest first, waiting up to ``timeout``.

        Messages whose earlier delivery was not acked within :attr:`visibility_timeout` come
        first, with ``delivery_count`` raised. Within a queue, a group sees messages in
        publish order. A group sees every message published after its first ``consume``
        call; whether it also sees older ones depends on the engine's retention.
        """
        self._require(QUEUES)
        validate_name("queue", queue)
        validate_name("group", group)
        validate_name("consumer", consumer)
        check_int("max_messages", max_messages, 1, 100_000)
        t = check_finite("timeout", timeout)
        if t < 0:
            raise InvalidValueError(f"timeout must be >= 0 seconds, got {timeout}")
        return self._consume(queue, group, consumer, max_messages, t)

    def ack(self, queue: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge delivered messages; returns how many were pending and are now done."""
        self._require(QUEUES)
        validate_name("queue", queue)
        validate_name("group", group)
        if isinstance(ids, str):
            raise InvalidTypeError("ids must be a sequence of message ids, not a single str")
        ids = list(ids)
        if not all(isinstance(i, str) for i in ids):
            raise InvalidTypeError("ids must be message ids (str) as returned by consume")
        return self._ack(queue, group, ids) if ids else 0

    def backlog(self, queue: str, group: str) -> int:
        """Messages published to ``queue`` that ``group`` has not acked yet (consumer lag)."""
        self._require(QUEUES)
        return self._backlog(validate_name("queue", queue), validate_name("group", group))

    # ---------------------------------------------------------------- key-value
    def kv_get(self, key: str) -> Versioned | None:
        self._require(KV)
        return self._kv_get(validate_kv_key(key))

    def kv_set(self, key: str, value: bytes | str) -> int:
        """Write unconditionally; returns the new version."""
        self._require(KV)
        return self._kv_set(validate_kv_key(key), _as_bytes("value", value))

    def kv_cas(self, key: str, value: bytes | str, expected_version: int) -> int | None:
        """Write only if the current version is ``expected_version`` (0: key must not exist).

        Returns the new version, or ``None`` if another writer got there first. Exactly one
        of several concurrent writers with the same ``expected_version`` succeeds.
        """
        self._require(KV)
        check_int("expected_version", expected_version, 0, 2**63 - 1)
        return self._kv_cas(validate_kv_key(key), _as_bytes("value", value), expected_version)

    def kv_delete(self, key: str) -> bool:
        self._require(KV)
        return self._kv_delete(validate_kv_key(key))

    def kv_keys(self, prefix: str = "") -> list[str]:
        self._require(KV)
        if not isinstance(prefix, str):
            raise InvalidTypeError(f"prefix must be a str, got {type(prefix).__name__}")
        return sorted(self._kv_keys(prefix))

    def notify(self, channel: str, payload: bytes | str) -> None:
        """Send ``payload`` to every current subscriber of ``channel`` (at most once each)."""
        self._require(KV)
        self._notify(validate_name("channel", channel), _as_bytes("payload", payload))

    def subscribe(self, channel: str) -> Subscription:
        self._require(KV)
        return self._subscribe(validate_name("channel", channel))

    # ---------------------------------------------------------------- counters and leases
    def counter_add(self, name: str, delta: int) -> int:
        """Atomically add ``delta`` (may be 0 or negative) and return the new value (starts at 0)."""
        self._require(COUNTERS)
        check_int("delta", delta, -(2**63), 2**63 - 1)
        return self._counter_add(validate_name("counter", name), delta)

    def counter_get(self, name: str) -> int:
        self._require(COUNTERS)
        return self._counter_add(validate_name("counter", name), 0)

    def lease_acquire(self, name: str, owner: str, ttl: float) -> int | None:
        """Take or renew a lease for ``ttl`` seconds.

        Returns the fencing token: unchanged when ``owner`` already holds it, strictly larger
        each time the lease passes to a new owner (so a revived old holder is recognisable
        by its smaller token). ``None`` when another owner holds an unexpired lease.
        """
        self._require(LEASES)
        return self._lease_acquire(
            validate_name("lease", name), validate_name("owner", owner), _check_ttl(ttl)
        )

    def lease_renew(self, name: str, owner: str, token: int, ttl: float) -> bool:
        """Extend a held lease; ``False`` if it expired and was taken, or the token is stale."""
        self._require(LEASES)
        check_int("token", token, 1)
        return self._lease_renew(
            validate_name("lease", name), validate_name("owner", owner), token, _check_ttl(ttl)
        )

    def lease_release(self, name: str, owner: str, token: int) -> bool:
        self._require(LEASES)
        check_int("token", token, 1)
        return self._lease_release(validate_name("lease", name), validate_name("owner", owner), token)

    def lease_info(self, name: str) -> LeaseInfo | None:
        """The current unexpired holder, or ``None``."""
        self._require(LEASES)
        return self._lease_info(validate_name("lease", name))

    # ---------------------------------------------------------------- to implement
    # A backend implements the methods of every family it lists in ``capabilities`` (checked
    # when the class is created); the others keep these bodies, which are never reached
    # because the public methods check ``capabilities`` first.
    def _create_queue(self, queue: str) -> None:
        raise self._not_implemented()

    def _delete_queue(self, queue: str) -> None:
        raise self._not_implemented()

    def _list_queues(self) -> Iterable[str]:
        raise self._not_implemented()

    def _publish_batch(
        self, queue: str, batch: list[tuple[bytes, bytes]], headers: dict[str, str], epoch: int
    ) -> list[str]:
        raise self._not_implemented()

    def _consume(
        self, queue: str, group: str, consumer: str, max_messages: int, timeout: float
    ) -> list[Message]:
        raise self._not_implemented()

    def _ack(self, queue: str, group: str, ids: list[str]) -> int:
        raise self._not_implemented()

    def _backlog(self, queue: str, group: str) -> int:
        raise self._not_implemented()

    def _kv_get(self, key: str) -> Versioned | None:
        raise self._not_implemented()

    def _kv_set(self, key: str, value: bytes) -> int:
        raise self._not_implemented()

    def _kv_cas(self, key: str, value: bytes, expected_version: int) -> int | None:
        raise self._not_implemented()

    def _kv_delete(self, key: str) -> bool:
        raise self._not_implemented()

    def _kv_keys(self, prefix: str) -> Iterable[str]:
        raise self._not_implemented()

    def _notify(self, channel: str, payload: bytes) -> None:
        raise self._not_implemented()

    def _subscribe(self, channel: str) -> Subscription:
        raise self._not_implemented()

    def _counter_add(self, name: str, delta: int) -> int:
        raise self._not_implemented()

    def _lease_acquire(self, name: str, owner: str, ttl: float) -> int | None:
        raise self._not_implemented()

    def _lease_renew(self, name: str, owner: str, token: int, ttl: float) -> bool:
        raise self._not_implemented()

    def _lease_release(self, name: str, owner: str, token: int) -> bool:
        raise self._not_implemented()

    def _lease_info(self, name: str) -> LeaseInfo | None:
        raise self._not_implemented()


def _check_ttl(ttl: Any) -> float:
    t = check_finite("ttl", ttl)
    if not 0.001 <= t <= 86_400 * 365:
        raise InvalidValueError(f"ttl must be in [0.001, 31536000] seconds, got {ttl}")
    return t
