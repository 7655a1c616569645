"""The RabbitMQ backend: a fastshard queue is a set of RabbitMQ queues on one direct exchange.

Layout (``P`` is the backend's ``prefix``)
    * exchange ``P + "fastshard"`` (direct, durable); a message for shard ``q`` is published
      there with routing key ``q`` (the shard name fastshard's placement computed), with
      ``mandatory`` set so a message for a shard that does not exist is an error, not lost;
    * ``P + q`` – the shard's own queue, bound with key ``q``. It keeps every message
      published before any consumer group exists, and becomes the queue of the *first* group
      that consumes the shard;
    * ``P + q + "/" + g`` – the queue of every later group ``g``, bound with key ``q`` when
      that group first consumes, so it receives what is published from then on;
    * ``P + q + "/.owner"`` – an empty queue whose ``x-dead-letter-exchange`` argument names
      the first group. RabbitMQ refuses (406) to redeclare a queue with a different
      argument, which makes "the first group wins" atomic across processes.

Messages
    AMQP has no message key: the key travels in the ``fastshard-key`` header, and the epoch
    (with a routed message's ``fs-seq``/``fs-hash``) in the one ``fs`` stamp header of
    :mod:`fastshard.backends.stamp` (pika encodes every header in Python, so one instead of
    three is cheaper; the older ``fastshard-epoch`` form is still read). The message id is a
    per-backend random prefix plus a counter, chosen before sending.

Delivery
    Publishing uses publisher confirms: ``publish`` returns once the broker has the message.
    Consumers use manual acks and a prefetch window. A message not acked within the
    visibility timeout is ``basic.nack``-ed with ``requeue=True``, and RabbitMQ puts it back
    at its original position; a consumer that dies has all its unacked messages requeued by
    the broker. Queues can be declared with ``x-single-active-consumer`` so that a group's
    messages are processed by one consumer at a time, in order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from fastshard.backends.base import (
    MAX_KEY_BYTES,
    QUEUES,
    Backend,
    Message,
)
from fastshard.backends.stamp import (
    HASH_HEADER,
    SEQ_HEADER,
    STAMP_HEADER,
    checked_stamped_batch,
    format_stamp,
    pack_stamp,
)
from fastshard.errors import UnknownQueueError
from fastshard_rabbitmq.link import Link, passive_exists
from fastshard_rabbitmq.management import ManagementAPI
from fastshard_rabbitmq.wire import (
    DEFAULT_URL,
    EPOCH_HEADER,
    KEY_HEADER,
    OWNER_SUFFIX,
    MessageIds,
    check_settings,
    decode_message,
    message_headers,
    owner_arguments,
    owner_marker,
    rabbit_queue_name,
)

__all__ = ["EPOCH_HEADER", "KEY_HEADER", "RabbitMQBackend"]

_MAX_EPOCH = 2**63 - 1  # Backend.publish's bound
_MAX_REMEMBERED_QUEUES = 65_536


@dataclass(slots=True)
class _GroupState:
    """One (shard, group) as consumed by this process."""

    rabbit_queue: str
    generation: int = -1  # the Link generation our basic.consume belongs to
    consumer_tag: str | None = None
    # deliveries received but not handed out yet: (delivery_tag, redelivered, properties, body)
    buffer: deque = field(default_factory=deque)
    # message id -> [redeliver_at (monotonic), delivery_count, delivery_tag, Message]
    pending: dict[str, list[Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # deliveries so far, until acked


class RabbitMQBackend(Backend):
    """Queues on RabbitMQ. Key-value, counters and leases live elsewhere (Redis, PostgreSQL).

    Options: ``url`` (``amqp://user:pass@host:port/vhost``), ``management_url`` (HTTP API,
    used only by ``list_queues`` and ``delete_queue``), ``prefix`` (namespaces every exchange
    and queue name), ``queue_type`` (``"classic"`` or ``"quorum"``), ``single_active_consumer``,
    ``prefetch``, ``visibility_timeout``, ``timeout`` (socket and confirm wait), ``retries``.
    Every process sharing a shard must use the same ``queue_type`` and
    ``single_active_consumer`` (RabbitMQ refuses a redeclare with other arguments).
    """

    name = "rabbitmq"
    capabilities = frozenset({QUEUES})

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        management_url: str | None = None,
        prefix: str = "",
        queue_type: str = "classic",
        single_active_consumer: bool = False,
        prefetch: int = 500,
        visibility_timeout: float = 30.0,
        max_message_bytes: int = 16 * 2**20,
        timeout: float = 10.0,
        retries: int = 5,
    ) -> None:
        cfg = check_settings(
            url, management_url=management_url, prefix=prefix, queue_type=queue_type,
            single_active_consumer=single_active_consumer, prefetch=prefetch,
            visibility_timeout=visibility_timeout, max_message_bytes=max_message_bytes,
            timeout=timeout, retries=retries)
        self.prefetch, self.visibility_timeout = cfg.prefetch, cfg.visibility_timeout
        self.max_message_bytes, self.timeout, self.retries = (
            cfg.max_message_bytes, cfg.timeout, cfg.retries)
        t = cfg.timeout
        self.prefix, self.exchange = prefix, cfg.exchange
        self._queue_args: dict[str, Any] = cfg.queue_args
        params = pika.URLParameters(url)
        params.socket_timeout = t
        params.blocked_connection_timeout = t
        params.stack_timeout = t + 5
        params.connection_attempts = 1
        params.heartbeat = 30
        self._vhost = params.virtual_host
        self._pub = Link(params, confirm=True, prefetch=0, attempts=self.retries, what="publisher")
        self._sub = Link(params, confirm=False, prefetch=self.prefetch, attempts=self.retries,
                         what="consumer")
        # batches go through an AMQP transaction (one commit instead of a confirm per message)
        self._batch = Link(params, confirm=False, transactional=True, prefetch=0, attempts=self.retries,
                           what="batch publisher")
        self._mgmt = ManagementAPI(cfg.management_url, timeout=t)
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str], _GroupState] = {}
        self._exchange_ready = False
        self._known_queues: set[str] = set()
        # queue names that passed Backend.publish's checks, so publish_stamped may skip them
        self._checked_queues: set[str] = set()
        # message ids (wire.MessageIds); prefix and counter also as attributes for
        # publish_stamped's inline fast path, sharing the one counter
        self._ids = MessageIds()
        self._id_prefix, self._id_counter = self._ids.prefix, self._ids.counter

    # ------------------------------------------------------------------ naming
    def rabbit_queue(self, queue: str, group: str | None = None) -> str:
        """The RabbitMQ queue behind a shard (``group=None``) or a later group of it."""
        return rabbit_queue_name(self.prefix, queue, group)

    # ------------------------------------------------------------------ lifecycle
    def ping(self) -> None:
        self._pub.run(lambda ch: None, "connecting")

    def close(self) -> None:
        with self._lock:
            self._groups.clear()
        self._pub.close()
        self._sub.close()
        self._batch.close()

    # ------------------------------------------------------------------ queues
    def _declare_exchange(self, ch: Any) -> None:
        if not self._exchange_ready:
            ch.exchange_declare(self.exchange, exchange_type="direct", durable=True)
            self._exchange_ready = True

    def _declare_bound(self, ch: Any, rabbit_queue: str, routing_key: str) -> None:
        self._declare_exchange(ch)
        ch.queue_declare(rabbit_queue, durable=True, arguments=self._queue_args)
        ch.queue_bind(rabbit_queue, self.exchange, routing_key=routing_key)

    def _create_queue(self, queue: str) -> None:
        self._pub.run(lambda ch: self._declare_bound(ch, self.rabbit_queue(queue), queue),
                      f"creating queue {queue!r}")
        with self._lock:
            self._known_queues.add(queue)

    def _delete_queue(self, queue: str) -> None:
        base = self.rabbit_queue(queue)
        names = [base, base + OWNER_SUFFIX]
        names += [n for n in self._mgmt.queue_names(self._vhost, base + "/") if n not in names]
        with self._lock:
            self._known_queues.discard(queue)
            dropped = [k for k in self._groups if k[0] == queue]
            for k in dropped:
                del self._groups[k]

        def delete_all(ch: Any) -> None:
            for n in names:
                ch.queue_delete(n)

        self._pub.run(delete_all, f"deleting queue {queue!r}")

    def _list_queues(self) -> Iterable[str]:
        plen = len(self.prefix)
        return [n[plen:] for n in self._mgmt.queue_names(self._vhost, self.prefix)
                if "/" not in n[plen:] and n != self.exchange]

    def _new_ids(self, n: int) -> list[str]:
        return self._ids.take(n)

    def _publish_batch(
        self, queue: str, batch: list[tuple[bytes, bytes]], headers: dict[str, str], epoch: int
    ) -> list[str]:
        # Ids are chosen before sending, so a batch re-sent after a dropped connection carries
        # the same ids and consumers can recognise a duplicate (at-least-once on reconnect).
        others, stamp = pack_stamp(headers, epoch)
        ids = self._new_ids(len(batch))
        props = pika.BasicProperties
        messages = [(value, props(message_id=mid, delivery_mode=2, headers=message_headers(others, key, stamp)))
                    for (key, value), mid in zip(batch, ids, strict=True)]
        if len(messages) > 1:
            self._send_transaction(queue, messages)
        else:
            self._send(queue, messages)
        if len(self._checked_queues) < _MAX_REMEMBERED_QUEUES:
            self._checked_queues.add(queue)
        return ids

    def publish_stamped(self, queue: str, key: bytes, value: bytes | str, epoch: int, seq: int,
                        key_hash: int, headers: Mapping[str, str] | None = None) -> str:
        """:meth:`publish` for :class:`fastshard.sharding.Router` (its ``StampedPublisher``
        hook): the epoch, sequence number and key hash go straight into the ``fs`` stamp.

        The router's common case (a queue published to before, bytes key and value within the
        limits, no other headers) is checked here in one expression; anything else is handed
        to :meth:`publish` with the stamp as headers, which validates it all and writes the
        same stamp.
        """
        if (queue not in self._checked_queues or headers or type(key) is not bytes
                or type(value) is not bytes or len(value) > self.max_message_bytes
                or len(key) > MAX_KEY_BYTES or type(epoch) is not int or not 0 <= epoch <= _MAX_EPOCH
                or type(seq) is not int or seq < 0 or type(key_hash) is not int or key_hash < 0):
            stamp = {**(headers or {}), SEQ_HEADER: str(seq), HASH_HEADER: str(key_hash)}
            return self.publish(queue, key, value, headers=stamp, epoch=epoch)
        mid = f"{self._id_prefix}{next(self._id_counter):x}"
        props = pika.BasicProperties(message_id=mid, delivery_mode=2, headers={
            KEY_HEADER: key, STAMP_HEADER: format_stamp(epoch, seq, key_hash)})
        self._send(queue, [(value, props)])
        return mid

    def publish_stamped_batch(self, queue: str, keys: Sequence[bytes], values: Sequence[bytes | str], epoch: int,
                              first_seq: int, key_hashes: Sequence[int],
                              headers: Mapping[str, str] | None = None) -> list[str]:
        """One queue's part of ``Router.publish_many`` (its ``publish_stamped_batch`` hook):
        validated like ``publish_batch``, each message with its own ``fs`` stamp, all sent in
        one transaction (:meth:`_send_transaction`)."""
        items, hdrs, epoch = checked_stamped_batch(self, queue, keys, values, epoch, first_seq,  # type: ignore[arg-type]
                                                   key_hashes, headers)
        others, _ = pack_stamp(hdrs, epoch)  # refuses a caller's header named like the stamp
        if not items:
            return []
        ids = self._new_ids(len(items))
        props = pika.BasicProperties
        self._send_transaction(queue, [
            (value, props(message_id=mid, delivery_mode=2,
                          headers=message_headers(others, key, format_stamp(epoch, first_seq + i, h))))
            for i, ((key, value), mid, h) in enumerate(zip(items, ids, key_hashes, strict=True))])
        return ids

    def _send_transaction(self, queue: str, messages: list[tuple[bytes, Any]]) -> None:
        """Publish ``(body, properties)`` in order inside one AMQP transaction: the broker
        stores all of them at ``tx.commit`` or none (a dropped connection discards an open
        transaction, so the retry sends the whole batch again, same ids). One commit replaces
        a publisher confirm per message. A commit whose reply was lost may have stored the
        batch: the retry then duplicates it under the same message ids, which consumers drop
        (at-least-once, as with confirms)."""
        link = self._batch

        def send(ch: Any) -> None:
            self._declare_exchange(ch)
            link.returned.clear()
            publish, exchange = ch.basic_publish, self.exchange
            for value, props in messages:
                publish(exchange, queue, value, properties=props, mandatory=True)
            ch.tx_commit()
            # basic.return frames arrive before commit-ok; dispatch them now. Every message
            # of the batch has the same routing key, so either all were routed or none was.
            ch.connection.process_data_events(0)
            if link.returned:
                raise UnknownQueueError(
                    f"queue {queue!r} does not exist (nothing is bound to it); create_queue it first")

        link.run(send, f"publishing {len(messages)} messages to {queue!r}")

    def _send(self, queue: str, messages: list[tuple[bytes, Any]]) -> None:
        """Publish ``(body, properties)`` in order, each confirmed; after a reconnect, resume
        with the first message not confirmed yet."""
        sent = 0

        def send(ch: Any) -> None:
            nonlocal sent
            self._declare_exchange(ch)
            publish, exchange = ch.basic_publish, self.exchange
            while sent < len(messages):
                value, props = messages[sent]
                try:
                    publish(exchange, queue, value, properties=props, mandatory=True)
                except UnroutableError:
                    raise UnknownQueueError(
                        f"queue {queue!r} does not exist (nothing is bound to it); create_queue it first"
                    ) from None
                sent += 1

        self._pub.run(send, f"publishing to {queue!r}")

    # ------------------------------------------------------------------ consuming
    def _claim_owner(self, queue: str, group: str) -> bool:
        """Whether ``group`` is (now) the first group of ``queue``, decided by the broker."""
        marker = owner_marker(self.prefix, queue)

        def claim(ch: Any) -> bool:
            if passive_exists(ch, self.rabbit_queue(queue)) is None:
                raise UnknownQueueError(f"queue {queue!r} does not exist; create_queue it first")
            try:
                ch.queue_declare(marker, durable=True, arguments=owner_arguments(group))
                return True
            except ChannelClosedByBroker as exc:
                if exc.reply_code == 406:  # declared by another group first
                    return False
                raise

        # on a throw-away channel: a 404/406 closes it and must not touch our consumers
        return self._sub.run(claim, f"registering group {group!r} on {queue!r}", aside=True)

    def _state(self, queue: str, group: str) -> _GroupState:
        key = (queue, group)
        with self._lock:
            st = self._groups.get(key)
        if st is not None:
            return st
        if self._claim_owner(queue, group):
            st = _GroupState(self.rabbit_queue(queue))
        else:
            st = _GroupState(self.rabbit_queue(queue, group))
            self._sub.run(lambda ch: self._declare_bound(ch, st.rabbit_queue, queue),
                          f"declaring the queue of group {group!r} on {queue!r}")
        with self._lock:
            return self._groups.setdefault(key, st)

    def _ensure_consuming(self, ch: Any, st: _GroupState) -> None:
        if st.generation == self._sub.generation and st.consumer_tag is not None:
            return
        # a new connection: the broker requeued everything the old one held
        st.buffer.clear()
        st.pending.clear()

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            st.buffer.append((method.delivery_tag, method.redelivered, props, body))

        st.consumer_tag = ch.basic_consume(st.rabbit_queue, on_message, auto_ack=False)
        st.generation = self._sub.generation

    def _to_message(self, queue: str, props: Any, body: bytes, mid: str, count: int) -> Message:
        return decode_message(queue, props.headers, body, mid, count)

    def _take(self, ch: Any, st: _GroupState, queue: str, limit: int, wait: float) -> list[Message]:
        self._ensure_consuming(ch, st)
        now = time.monotonic()
        for mid in [m for m, e in st.pending.items() if e[0] <= now]:
            # visibility timeout passed: give it back to the queue (any consumer may take it)
            ch.basic_nack(st.pending.pop(mid)[2], requeue=True)
        ch.connection.process_data_events(time_limit=0)
        if not st.buffer and wait > 0:
            ch.connection.process_data_events(time_limit=wait)
        out: list[Message] = []
        while st.buffer and len(out) < limit:
            tag, redelivered, props, body = st.buffer.popleft()
            mid = props.message_id or f"dt-{st.generation}-{tag}"
            if mid in st.pending:  # a duplicate of a message in flight (re-sent after reconnect)
                ch.basic_ack(tag)
                continue
            prev = st.counts.get(mid)
            count = prev + 1 if prev else (2 if redelivered else 1)
            st.counts[mid] = count
            msg = self._to_message(queue, props, body, mid, count)
            st.pending[mid] = [now + self.visibility_timeout, count, tag, msg]
            out.append(msg)
        return out

    def _consume(
        self, queue: str, group: str, consumer: str, max_messages: int, timeout: float
    ) -> list[Message]:
        st = self._state(queue, group)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            wait = max(0.0, min(remaining, 0.05))

            def take(ch: Any, w: float = wait) -> list[Message]:
                return self._take(ch, st, queue, max_messages, w)

            out = self._sub.run(take, f"consuming {queue!r}")
            if out or time.monotonic() >= deadline:
                return out

    def _ack(self, queue: str, group: str, ids: list[str]) -> int:
        with self._lock:
            st = self._groups.get((queue, group))
        if st is None:
            return 0

        def ack(ch: Any) -> int:
            if st.generation != self._sub.generation:
                return 0  # the connection they came on is gone: the broker redelivers them
            done = 0
            for mid in dict.fromkeys(ids):
                entry = st.pending.pop(mid, None)
                if entry is not None:
                    ch.basic_ack(entry[2])
                    st.counts.pop(mid, None)
                    done += 1
            return done

        # not retried: after a reconnect the delivery tags are void and the messages requeued
        return self._sub.run(ack, f"acking on {queue!r}", retry=False)

    def _backlog(self, queue: str, group: str) -> int:
        st = self._state(queue, group)

        def count(ch: Any) -> int:
            ok = passive_exists(ch, st.rabbit_queue)
            if ok is None:
                raise UnknownQueueError(f"queue {queue!r} does not exist")
            ch.connection.process_data_events(time_limit=0)  # deliveries in flight land in buffer
            mine = len(st.buffer) + len(st.pending) if st.generation == self._sub.generation else 0
            return int(ok.message_count) + mine

        return self._sub.run(count, f"reading the backlog of {queue!r}", aside=True)

