"""The Kafka backend: a fastshard queue is one partition of a topic.

Queue names
    ``"<topic>"`` is partition 0 of a one-partition topic ``<prefix><topic>``;
    ``"<topic>:<p>"`` is partition ``p`` of ``<prefix><topic>``. A colon may appear in a
    fastshard name but never in a Kafka topic name, so the split is unambiguous.

Consumer groups
    A (queue, group) pair is read by one confluent-kafka ``Consumer`` with ``group.id`` =
    the group, *assigned* the partition (no group rebalancing) with auto-commit off. The
    backend keeps, per pair, the messages delivered and not yet acked (with their redelivery
    deadline) and the acked offsets above the committed one. An ack commits only the
    contiguous acked prefix, so a crash redelivers every unacked message from the committed
    offset; within the process an unacked message is handed out again once the visibility
    timeout has passed. One process should consume a given (queue, group) at a time (Kafka's
    own rule: a partition has one reader per group) — use a fastshard lease to elect it.

Publishing lives in :mod:`fastshard_kafka.producing`, the message format (the ``fs`` stamp
header) and the meaning of delivery errors in :mod:`fastshard_kafka.wire`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from fastshard.backends.base import (
    QUEUES,
    Backend,
    Message,
)
from fastshard.backends.retry import call_with_retry
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
from fastshard_kafka.producing import Producing
from fastshard_kafka.topics import AdminTopicManager, TopicManager
from fastshard_kafka.wire import UNAVAILABLE_CODES, error_class, read_headers

_MAX_TOPIC_CHARS = 249


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


class _Retriable(Exception):
    """A transient client error, retried by :func:`call_with_retry`."""


@dataclass(slots=True)
class _GroupState:
    """What one process knows about one (queue, group): see the module docstring."""

    consumer: Consumer
    committed: int  # next offset to commit == lowest offset not yet acked
    lock: threading.Lock = field(default_factory=threading.Lock)
    # offset -> [redeliver_at (monotonic), delivery_count, message]
    pending: dict[int, list[Any]] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)  # acked offsets >= committed


class KafkaBackend(Producing, Backend):
    """Queues on Kafka partitions. Key-value, counters and leases live elsewhere (Redis, ...).

    Options: ``bootstrap_servers`` (``"host:port,..."``), ``topic_prefix`` (prepended to
    every topic, for namespacing), ``partitions`` (partitions of a topic created by
    ``create_queue("t:p")``; at least ``p + 1``), ``visibility_timeout``, ``timeout``
    (seconds for one broker round trip and for a publish to be confirmed), ``retries``
    (attempts for idempotent metadata/commit calls), ``topic_manager`` (see
    :mod:`fastshard_kafka.topics`), ``config`` (extra librdkafka settings).
    """

    name = "kafka"
    capabilities = frozenset({QUEUES})

    def __init__(
        self,
        bootstrap_servers: str = "127.0.0.1:9092",
        *,
        topic_prefix: str = "",
        partitions: int = 1,
        visibility_timeout: float = 30.0,
        max_message_bytes: int = 900_000,
        timeout: float = 10.0,
        retries: int = 5,
        topic_manager: TopicManager | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers.strip():
            raise InvalidValueError(
                f"bootstrap_servers must be a non-empty 'host:port[,host:port]' str, got {bootstrap_servers!r}"
            )
        if not isinstance(topic_prefix, str) or any(
            not (c.isalnum() or c in "._-") for c in topic_prefix
        ) or len(topic_prefix) > 40:
            raise InvalidValueError(
                f"topic_prefix must be at most 40 characters of letters, digits and '._-', got {topic_prefix!r}"
            )
        self.partitions = check_int("partitions", partitions, 1, 100_000)
        self.visibility_timeout = check_seconds("visibility_timeout", visibility_timeout)
        self.max_message_bytes = check_int("max_message_bytes", max_message_bytes, 1, 100 * 2**20)
        t = check_finite("timeout", timeout)
        if not 0.05 <= t <= 3600:
            raise InvalidValueError(f"timeout must be in [0.05, 3600] seconds, got {timeout}")
        self.timeout = t
        self.retries = check_int("retries", retries, 1, 100)
        if config is not None and not isinstance(config, dict):
            raise InvalidTypeError(f"config must be a dict of librdkafka settings, got {type(config).__name__}")
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        ms = max(1, int(t * 1000))
        self._base_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "socket.timeout.ms": max(10, ms),
            "log_level": 3,
            **(config or {}),
        }
        self._producer = Producer({
            **self._base_config,
            "enable.idempotence": True,  # acks=all, and retries never reorder or duplicate
            "acks": "all",
            "linger.ms": 1,
            "message.timeout.ms": ms,
            "message.max.bytes": self.max_message_bytes + 64 * 1024 + 2 * 65536,
        })
        self._topics = topic_manager or AdminTopicManager(self._base_config, timeout=t)
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str], _GroupState] = {}
        self._partition_counts: dict[str, int] = {}  # topic -> partitions, a cache
        self._targets: dict[str, tuple[str, int]] = {}  # queue -> (topic, partition), checked
        self._meta_consumer: Consumer | None = None  # group-less, for watermark queries
        self._publishing = threading.local()  # publish_routed's per-thread pass (see there)
        self._closed = False

    # ------------------------------------------------------------------ naming
    def topic_partition(self, queue: str) -> tuple[str, int]:
        """The Kafka ``(topic, partition)`` behind a fastshard queue name."""
        topic, sep, part = queue.partition(":")
        if sep:
            if not part.isdigit() or ":" in part or len(part) > 6:
                raise InvalidValueError(
                    f"queue must be '<topic>' or '<topic>:<partition>' with partition in [0, 999999], got {queue!r}"
                )
            p = int(part)
        else:
            p = 0
        if not topic:
            raise InvalidValueError(f"queue must start with a topic name, got {queue!r}")
        full = self.topic_prefix + topic
        if len(full) > _MAX_TOPIC_CHARS:
            raise InvalidValueError(
                f"queue topic (with prefix) must be at most {_MAX_TOPIC_CHARS} characters, got {len(full)}"
            )
        return full, p

    def queue_name(self, topic: str, partition: int) -> str:
        """The fastshard queue name of ``partition`` of ``topic`` (``topic`` without the prefix)."""
        return f"{topic}:{partition}"

    # ------------------------------------------------------------------ retries
    def _call(self, fn: Any, what: str) -> Any:
        def attempt() -> Any:
            try:
                return fn()
            except KafkaException as exc:
                err = _kafka_error(exc)
                if err is not None and (err.retriable() or err.code() in UNAVAILABLE_CODES):
                    raise _Retriable(err.str()) from exc
                raise BackendError(f"{what} failed: {exc}") from exc

        return call_with_retry(attempt, what=what, retry_on=(_Retriable,), attempts=self.retries,
                               base_delay=0.05, max_delay=1.0)

    def _metadata_partitions(self, topic: str | None = None) -> dict[str, int]:
        md = self._call(lambda: self._producer.list_topics(topic, timeout=self.timeout),
                        f"reading metadata from {self.bootstrap_servers}")
        out: dict[str, int] = {}
        for name, tmd in md.topics.items():
            if tmd.error is not None:
                if tmd.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                if tmd.error.code() in UNAVAILABLE_CODES or tmd.error.retriable():
                    raise BackendUnavailableError(f"metadata for topic {name!r}: {tmd.error.str()}")
            if tmd.partitions:
                out[name] = len(tmd.partitions)
        return out

    def _partition_count(self, topic: str, *, refresh: bool = False) -> int:
        """Partitions of ``topic`` (0 when it does not exist). Lists all topics so that asking
        never auto-creates one on a broker with ``auto.create.topics.enable``."""
        with self._lock:
            n = self._partition_counts.get(topic)
        if n is not None and not refresh:
            return n
        counts = self._metadata_partitions()
        with self._lock:
            self._partition_counts = dict(counts)
        return counts.get(topic, 0)

    def _require_partition(self, queue: str) -> tuple[str, int]:
        topic, p = self.topic_partition(queue)
        n = self._partition_count(topic)
        if p >= n:
            n = self._partition_count(topic, refresh=True)
        if p >= n:
            raise UnknownQueueError(
                f"queue {queue!r} does not exist (topic {topic!r} has {n} partitions); create_queue it first"
            )
        return topic, p

    # ------------------------------------------------------------------ lifecycle
    def ping(self) -> None:
        self._metadata_partitions()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states = list(self._groups.values())
            self._groups.clear()
            meta, self._meta_consumer = self._meta_consumer, None
        for st in states:
            with st.lock:
                st.consumer.close()
        if meta is not None:
            meta.close()
        self._producer.flush(min(self.timeout, 5.0))

    # ------------------------------------------------------------------ queues
    def _create_queue(self, queue: str) -> None:
        topic, p = self.topic_partition(queue)
        n = self._partition_count(topic, refresh=True)
        if n == 0:
            self._topics.create_topic(topic, max(self.partitions, p + 1))
        elif p >= n:
            self._topics.add_partitions(topic, p + 1)
        # metadata propagates asynchronously after a create; wait until our client sees it
        deadline = time.monotonic() + self.timeout
        while self._partition_count(topic, refresh=True) <= p:
            if time.monotonic() > deadline:
                raise BackendUnavailableError(
                    f"topic {topic!r} partition {p} did not appear in metadata within {self.timeout}s"
                )
            time.sleep(0.05)

    def _delete_queue(self, queue: str) -> None:
        topic, p = self.topic_partition(queue)
        n = self._partition_count(topic, refresh=True)
        if n == 0:
            return
        if n > 1:
            raise InvalidValueError(
                f"queue {queue!r} is one of {n} partitions of topic {topic!r}; Kafka cannot delete a "
                "single partition — drain it, or delete every queue of the topic by deleting the topic"
            )
        self._topics.delete_topic(topic)
        with self._lock:
            self._partition_counts.pop(topic, None)
            self._targets = {q: t for q, t in self._targets.items() if t[0] != topic}
            dropped = [k for k in self._groups if self.topic_partition(k[0])[0] == topic]
            states = [self._groups.pop(k) for k in dropped]
        for st in states:
            with st.lock:
                st.consumer.close()

    def _list_queues(self) -> Iterable[str]:
        counts = self._metadata_partitions()
        with self._lock:
            self._partition_counts = dict(counts)
        out: list[str] = []
        plen = len(self.topic_prefix)
        for topic, n in counts.items():
            if topic.startswith("__") or not topic.startswith(self.topic_prefix):
                continue
            name = topic[plen:]
            out.extend([name] if n == 1 else [f"{name}:{i}" for i in range(n)])
        return out

    # ------------------------------------------------------------------ consuming
    def _state(self, queue: str, group: str) -> _GroupState:
        key = (queue, group)
        with self._lock:
            st = self._groups.get(key)
        if st is not None:
            return st
        topic, p = self._require_partition(queue)
        consumer = Consumer({
            **self._base_config,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
        })
        try:
            committed = self._committed(consumer, topic, p)
            if committed is None:
                low, _ = self._watermarks(consumer, topic, p)
                committed = low
            consumer.assign([TopicPartition(topic, p, committed)])
        except BaseException:
            consumer.close()
            raise
        st = _GroupState(consumer=consumer, committed=committed)
        with self._lock:
            existing = self._groups.setdefault(key, st)
        if existing is not st:
            consumer.close()
        return existing

    def _committed(self, consumer: Consumer, topic: str, p: int) -> int | None:
        tps = self._call(lambda: consumer.committed([TopicPartition(topic, p)], timeout=self.timeout),
                         f"reading committed offset of {topic}[{p}]")
        off = tps[0].offset
        return off if off >= 0 else None

    def _watermarks(self, consumer: Consumer, topic: str, p: int) -> tuple[int, int]:
        return self._call(
            lambda: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout),
            f"reading watermarks of {topic}[{p}]",
        )

    def _to_message(self, queue: str, m: Any) -> Message:
        headers, epoch = read_headers(m.headers())
        return Message(queue, str(m.offset()), m.key() or b"", m.value() or b"", headers, epoch, 1)

    def _consume(
        self, queue: str, group: str, consumer: str, max_messages: int, timeout: float
    ) -> list[Message]:
        st = self._state(queue, group)
        deadline = time.monotonic() + timeout
        while True:
            with st.lock:
                out = self._take(st, queue, max_messages, deadline)
            now = time.monotonic()
            if out or now >= deadline:
                return out

    def _take(self, st: _GroupState, queue: str, limit: int, deadline: float) -> list[Message]:
        now = time.monotonic()
        out: list[Message] = []
        # 1. redeliveries: unacked past their visibility timeout, oldest first
        for off in sorted(o for o, entry in st.pending.items() if entry[0] <= now)[:limit]:
            entry = st.pending[off]
            entry[0] = now + self.visibility_timeout
            entry[1] += 1
            m: Message = entry[2]
            out.append(Message(m.queue, m.id, m.key, m.value, m.headers, m.epoch, entry[1]))
        if len(out) >= limit:
            return out
        # 2. new messages; block (in short slices, so acks are not held up) only if none yet
        wait = 0.0 if out else max(0.0, min(deadline - now, 0.1))
        if st.pending and not out:
            next_due = min(e[0] for e in st.pending.values())
            wait = max(0.0, min(wait, next_due - now))
        try:
            msgs = st.consumer.consume(limit - len(out), timeout=wait)
        except KafkaException as exc:
            raise BackendError(f"consuming {queue!r} failed: {exc}") from exc
        for km in msgs:
            err = km.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise error_class(err)(f"consuming {queue!r} failed: {err.str()}")
            offset = km.offset()
            if offset is None:
                continue  # only error events lack an offset, and those were handled above
            if offset < st.committed or offset in st.acked or offset in st.pending:
                continue  # already handed out (a re-fetch after a seek): not new
            msg = self._to_message(queue, km)
            st.pending[offset] = [now + self.visibility_timeout, 1, msg]
            out.append(msg)
        return out

    def _ack(self, queue: str, group: str, ids: list[str]) -> int:
        offsets: list[int] = []
        for mid in ids:
            if not mid.isdigit():
                raise InvalidValueError(f"ids must be offsets returned by consume, got {mid!r}")
            offsets.append(int(mid))
        st = self._state(queue, group)
        with st.lock:
            done = [o for o in dict.fromkeys(offsets) if o in st.pending]
            if not done:
                return 0
            acked = st.acked | set(done)
            new_committed = st.committed
            while new_committed in acked:
                acked.discard(new_committed)
                new_committed += 1
            if new_committed != st.committed:
                topic, p = self.topic_partition(queue)
                tp = TopicPartition(topic, p, new_committed)
                # Commit before forgetting anything: if the commit fails the messages stay
                # pending (and are redelivered), nothing is half-applied.
                self._call(lambda: st.consumer.commit(offsets=[tp], asynchronous=False),
                           f"committing offset {new_committed} of {queue!r} for group {group!r}")
            for o in done:
                del st.pending[o]
            st.acked = acked
            st.committed = new_committed
            return len(done)

    def _backlog(self, queue: str, group: str) -> int:
        st = self._state(queue, group)
        topic, p = self.topic_partition(queue)
        _, high = self._watermarks(st.consumer, topic, p)
        with st.lock:
            return max(0, high - st.committed - len(st.acked))

    # ------------------------------------------------------------------ Kafka-specific
    def high_watermark(self, queue: str) -> int:
        """The offset the next message published to ``queue`` will get."""
        topic, p = self._require_partition(queue)
        return int(self._watermarks(self._meta(), topic, p)[1])

    def committed_offset(self, queue: str, group: str) -> int:
        """The group's committed offset on ``queue`` (0 / low watermark if it never committed)."""
        st = self._state(queue, group)
        topic, p = self.topic_partition(queue)
        off = self._committed(st.consumer, topic, p)
        return off if off is not None else self._watermarks(st.consumer, topic, p)[0]

    def _meta(self) -> Consumer:
        with self._lock:
            if self._meta_consumer is None:
                self._meta_consumer = Consumer({**self._base_config, "group.id": "fastshard-meta",
                                                "enable.auto.commit": False})
            return self._meta_consumer

