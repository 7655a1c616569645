"""fastshard queues on RabbitMQ for asyncio services, through aio-pika.

:class:`AsyncRabbitMQBackend` is the asyncio twin of
:class:`fastshard_rabbitmq.backend.RabbitMQBackend`: the same options, exchange, queues,
declare arguments, first-group marker, message properties, ``fastshard-key`` header, ``fs``
stamp and message ids (all from :mod:`fastshard_rabbitmq.wire`), so either backend consumes
what the other published, as equal :class:`~fastshard.backends.Message` objects.

Connection
    One aio-pika robust connection (reconnects by itself) with two channels: the publisher
    (publisher confirms; an unroutable ``mandatory`` message raises) and the consumer
    (manual acks, ``prefetch`` window). Declares, deletes, passive checks and first-group
    claims run on a throw-away plain channel: the broker answers a missing queue (404) or a
    refused redeclare (406) by closing the channel, which must not cancel our consumers, and
    a plain channel is never restored by aio-pika, so a reconnect cannot re-create a queue
    that another process deleted. Consumers are registered on the consumer channel without
    aio-pika's restore for the same reason, and re-registered by us after a reconnect.

Delivery
    As the sync backend: ``publish_batch`` sends every message, then awaits all confirms;
    messages whose confirm was lost to a dropped connection are re-sent, in order, with
    their ids (at-least-once). Consumed messages are pending until acked; past the
    visibility timeout they are nacked with requeue; a closed channel or connection makes
    the broker requeue them all.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import (
    AMQPChannelError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)

from fastshard.backends.base import Message
from fastshard.backends.retry import call_with_retry_async
from fastshard.backends.stamp import pack_stamp
from fastshard.errors import BackendError, UnknownQueueError
from fastshard_rabbitmq.aio_checks import ArgumentChecks
from fastshard_rabbitmq.management import ManagementAPI
from fastshard_rabbitmq.wire import (
    DEFAULT_URL,
    OWNER_SUFFIX,
    MessageIds,
    check_settings,
    decode_message,
    message_headers,
    owner_arguments,
    owner_marker,
    rabbit_queue_name,
)

__all__ = ["AsyncRabbitMQBackend"]

T = TypeVar("T")

#: errors after which the call is repeated once aio-pika has reconnected (TimeoutError and
#: aiormq's connection errors are OSErrors; a channel being reopened is a RuntimeError)
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, ChannelInvalidStateError)

#: seconds aio-pika's robust connection waits after each (re)connect before it acts on a
#: dropped connection; must stay well below what ``retries`` attempts wait in all (~0.4 s
#: at the least for the default 5), or a drop soon after a reconnect outlasts the retries
RECONNECT_INTERVAL = 0.1


@dataclass(slots=True)
class _GroupFeed:
    """One (shard, group) as consumed by this backend."""

    rabbit_queue: str
    channel: Any = None  # the aiormq channel our basic.consume is on; a new one voids the rest
    generation: int = 0
    buffer: deque[AbstractIncomingMessage] = field(default_factory=deque)  # not handed out yet
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # message id -> [redeliver_at (monotonic), the delivery to ack or nack]
    pending: dict[str, list[Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # deliveries so far, until acked


def _amqp_message(body: bytes, message_id: str, headers: dict[str, Any]) -> aio_pika.Message:
    """The properties RabbitMQBackend sends (pika): id, persistent, headers, nothing else."""
    message = aio_pika.Message(body, message_id=message_id, headers=headers,
                               delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    message.priority = None  # aio-pika turns None into 0 and would send it; pika sends none
    return message


class AsyncRabbitMQBackend:
    """Queues on RabbitMQ for asyncio: ``await`` every call; ``async with`` connects and closes.

    Options as :class:`~fastshard_rabbitmq.backend.RabbitMQBackend` (``timeout`` bounds each
    broker call and each confirm; ``retries`` the attempts after a connection error). Mixing
    both backends on one broker needs the same ``prefix``, ``queue_type`` and
    ``single_active_consumer``.
    """

    name = "rabbitmq"

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
        self._cfg = cfg = check_settings(
            url, management_url=management_url, prefix=prefix, queue_type=queue_type,
            single_active_consumer=single_active_consumer, prefetch=prefetch,
            visibility_timeout=visibility_timeout, max_message_bytes=max_message_bytes,
            timeout=timeout, retries=retries)
        self.prefix, self.exchange = cfg.prefix, cfg.exchange
        self.max_message_bytes, self.visibility_timeout = cfg.max_message_bytes, cfg.visibility_timeout
        parts = urlparse(url)
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 5672}"  # no credentials
        self._checks = ArgumentChecks(cfg.max_message_bytes)
        self._mgmt = ManagementAPI(cfg.management_url, timeout=cfg.timeout)
        self._ids = MessageIds()
        self._conn: Any = None
        self._pub: Any = None
        self._sub: Any = None
        self._exchange: Any = None
        self._connecting: asyncio.Lock | None = None
        self._groups: dict[tuple[str, str], _GroupFeed] = {}

    def rabbit_queue(self, queue: str, group: str | None = None) -> str:
        """The RabbitMQ queue behind a shard (``group=None``) or a later group of it."""
        return rabbit_queue_name(self.prefix, queue, group)

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Open the connection and channels (every call does so when needed);
        :class:`BackendUnavailableError` after ``retries`` failed attempts."""
        if self._conn is not None and not self._conn.is_closed:
            return
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent first calls open one connection
            if self._conn is not None and not self._conn.is_closed:
                return
            cfg = self._cfg
            # aio-pika sleeps reconnect_interval (default 5 s) after every (re)connect before it
            # reacts to a drop, longer than our retries wait: reconnect at their pace instead
            # (an explicit ?reconnect_interval= in the URL wins)
            reconnect = {} if "reconnect_interval" in parse_qs(urlparse(cfg.url).query) else {
                "reconnect_interval": RECONNECT_INTERVAL}

            async def open_once() -> tuple[Any, Any, Any, Any]:
                conn = await asyncio.wait_for(
                    aio_pika.connect_robust(cfg.url, timeout=cfg.timeout, **reconnect), cfg.timeout)
                try:
                    pub = await conn.channel(publisher_confirms=True, on_return_raises=True)
                    sub = await conn.channel(publisher_confirms=False)
                    await sub.set_qos(prefetch_count=cfg.prefetch)
                    exchange = await pub.declare_exchange(
                        cfg.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
                except BaseException:
                    await conn.close()
                    raise
                return conn, pub, sub, exchange

            self._conn, self._pub, self._sub, self._exchange = await call_with_retry_async(
                open_once, what=f"connecting to RabbitMQ at {self._where} (asyncio)",
                retry_on=CONNECTION_ERRORS, attempts=cfg.retries)

    async def close(self) -> None:
        """Close the connection (the broker requeues every unacked delivery); idempotent."""
        conn, self._conn, self._pub, self._sub, self._exchange = self._conn, None, None, None, None
        self._groups.clear()
        if conn is not None and not conn.is_closed:
            await conn.close()

    async def __aenter__(self) -> AsyncRabbitMQBackend:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, op: Callable[[], Awaitable[T]], what: str, *, retry: bool = True) -> T:
        """``await op()`` after connecting, within ``timeout``; repeated after a connection
        error (``retries`` attempts, ``retry=False``: one). Broker refusals map as in
        :mod:`fastshard_rabbitmq.link`: 404 -> UnknownQueueError, others -> BackendError."""
        async def attempt() -> T:
            await self.connect()
            try:
                return await asyncio.wait_for(op(), self._cfg.timeout)
            except ChannelNotFoundEntity as exc:
                raise UnknownQueueError(f"{what}: {exc}") from exc
            except AMQPChannelError as exc:
                raise BackendError(f"{what}: the broker refused: {exc}") from exc

        return await call_with_retry_async(attempt, what=f"{what} (asyncio)", retry_on=CONNECTION_ERRORS,
                                           attempts=self._cfg.retries if retry else 1)

    async def _aside(self, fn: Callable[[Any], Awaitable[T]], what: str) -> T:
        """``fn(aiormq channel)`` on a throw-away plain channel (see the module docstring)."""
        async def op() -> T:
            ch = aio_pika.Channel(self._conn, publisher_confirms=False)
            await ch.initialize()
            try:
                return await fn(await ch.get_underlay_channel())
            finally:
                if not ch.is_closed:
                    await ch.close()

        return await self._run(op, what)

    # ------------------------------------------------------------------ queues
    async def create_queue(self, queue: str) -> None:
        """Create a shard queue (bound to the exchange); creating one that exists is a no-op."""
        self._checks.create_queue(queue)
        await self._aside(lambda ch: self._declare_bound(ch, self.rabbit_queue(queue), queue),
                          f"creating queue {queue!r}")

    async def _declare_bound(self, ch: Any, rabbit_queue: str, routing_key: str) -> None:
        await ch.exchange_declare(self.exchange, exchange_type="direct", durable=True)
        await ch.queue_declare(rabbit_queue, durable=True, arguments=self._cfg.queue_args)
        await ch.queue_bind(rabbit_queue, self.exchange, routing_key=routing_key)

    async def delete_queue(self, queue: str) -> None:
        """Delete a shard queue, its marker and its group queues; a missing one is a no-op."""
        self._checks.delete_queue(queue)
        base = self.rabbit_queue(queue)
        names = [base, base + OWNER_SUFFIX]
        # the group queues are found by the management HTTP API (blocking: run in a thread)
        found = await asyncio.to_thread(self._mgmt.queue_names, self._cfg.vhost, base + "/")
        names += [n for n in found if n not in names]
        for key in [k for k in self._groups if k[0] == queue]:
            del self._groups[key]

        async def delete_all(ch: Any) -> None:
            for n in names:
                await ch.queue_delete(n)

        await self._aside(delete_all, f"deleting queue {queue!r}")

    async def publish(self, queue: str, key: bytes | str, value: bytes | str, *,
                      headers: Mapping[str, str] | None = None, epoch: int = 0) -> str:
        """Publish one message; returns its id once the broker has confirmed it."""
        return (await self.publish_batch(queue, [(key, value)], headers=headers, epoch=epoch))[0]

    async def publish_batch(self, queue: str, items: Iterable[tuple[bytes | str, bytes | str]], *,
                            headers: Mapping[str, str] | None = None, epoch: int = 0) -> list[str]:
        """Publish messages in order, all validated before any is sent; every message is
        sent before the first confirm is awaited. Returns their ids."""
        checked = self._checks.publish_batch(queue, items, headers=headers, epoch=epoch)
        if not checked:
            return []
        batch, hdrs, epoch = checked[0]
        others, stamp = pack_stamp(hdrs, epoch)
        ids = self._ids.take(len(batch))
        # bytearray: what pamqp encodes as an AMQP byte array, as pika does with bytes
        await self._send(queue, [
            _amqp_message(value, mid, message_headers(others, bytearray(key), stamp))
            for (key, value), mid in zip(batch, ids, strict=True)
        ])
        return ids

    async def _send(self, queue: str, messages: list[aio_pika.Message]) -> None:
        """Publish all, then await all confirms. aiormq writes publishes in the order their
        tasks reach its channel lock (FIFO), which is the order they are created here. After
        a connection error, the messages not confirmed are re-sent in order, same ids."""
        todo = messages

        async def attempt() -> None:
            nonlocal todo
            await self.connect()
            publish, t = self._exchange.publish, self._cfg.timeout
            results = await asyncio.gather(
                *[publish(m, queue, mandatory=True, timeout=t) for m in todo], return_exceptions=True)
            failed, last = [], None
            for m, r in zip(todo, results, strict=True):
                if not isinstance(r, BaseException):
                    continue
                if isinstance(r, PublishError):  # returned: nothing is bound to that key
                    raise UnknownQueueError(
                        f"queue {queue!r} does not exist (nothing is bound to it); create_queue it first"
                    ) from None
                if isinstance(r, DeliveryError):
                    raise BackendError(f"publishing to {queue!r}: the broker refused (nack): {r}") from r
                if not isinstance(r, CONNECTION_ERRORS):
                    raise r
                failed.append(m)
                last = r
            if last is not None:
                todo = failed
                raise last

        await call_with_retry_async(attempt, what=f"publishing to {queue!r} (asyncio)",
                                    retry_on=CONNECTION_ERRORS, attempts=self._cfg.retries)

    # ------------------------------------------------------------------ consuming
    async def _feed(self, queue: str, group: str) -> _GroupFeed:
        feed = self._groups.get((queue, group))
        if feed is not None:
            return feed
        base, marker = self.rabbit_queue(queue), owner_marker(self.prefix, queue)

        async def claim(ch: Any) -> bool:
            """Whether ``group`` is (now) the first group of ``queue``, decided by the broker."""
            try:
                await ch.queue_declare(base, passive=True)
            except ChannelNotFoundEntity:
                raise UnknownQueueError(f"queue {queue!r} does not exist; create_queue it first") from None
            try:
                await ch.queue_declare(marker, durable=True, arguments=owner_arguments(group))
                return True
            except ChannelPreconditionFailed:  # declared by another group first
                return False

        if await self._aside(claim, f"registering group {group!r} on {queue!r}"):
            feed = _GroupFeed(base)
        else:
            feed = _GroupFeed(self.rabbit_queue(queue, group))
            await self._aside(lambda ch: self._declare_bound(ch, feed.rabbit_queue, queue),
                              f"declaring the queue of group {group!r} on {queue!r}")
        return self._groups.setdefault((queue, group), feed)

    async def _ensure_consuming(self, feed: _GroupFeed) -> None:
        channel = await self._sub.get_underlay_channel()
        if feed.channel is channel:
            return
        # a new channel (first call, or aio-pika reconnected): the broker requeued whatever
        # the old one held, so its deliveries and pending messages are void
        feed.buffer.clear()
        feed.pending.clear()

        async def on_delivery(message: AbstractIncomingMessage) -> None:
            feed.buffer.append(message)
            feed.arrived.set()

        # a plain aio_pika.Queue: consuming without registering it for aio-pika's restore
        amqp_queue = aio_pika.Queue(self._sub, feed.rabbit_queue, durable=True, exclusive=False,
                                    auto_delete=False, arguments=None)
        await amqp_queue.consume(on_delivery, no_ack=False)
        feed.channel, feed.generation = channel, feed.generation + 1

    async def _take(self, feed: _GroupFeed, queue: str, limit: int) -> list[Message]:
        await self._ensure_consuming(feed)
        now = time.monotonic()
        for mid in [m for m, entry in feed.pending.items() if entry[0] <= now]:
            # visibility timeout passed: give it back to the queue (any consumer may take it)
            await feed.pending.pop(mid)[1].nack(requeue=True)
        out: list[Message] = []
        while feed.buffer and len(out) < limit:
            delivery = feed.buffer.popleft()
            if delivery.channel is not feed.channel:
                continue  # came on a channel since replaced: the broker requeued it
            mid = delivery.message_id or f"dt-{feed.generation}-{delivery.delivery_tag}"
            if mid in feed.pending:  # a duplicate of a message in flight (re-sent after reconnect)
                await delivery.ack()
                continue
            prev = feed.counts.get(mid)
            count = prev + 1 if prev else (2 if delivery.redelivered else 1)
            feed.counts[mid] = count
            msg = decode_message(queue, delivery.headers, delivery.body, mid, count)
            feed.pending[mid] = [now + self.visibility_timeout, delivery]
            out.append(msg)
        if not feed.buffer:
            feed.arrived.clear()
        return out

    async def consume(self, queue: str, group: str, consumer: str = "c0", *,
                      max_messages: int = 100, timeout: float = 0.0) -> list[Message]:
        """Up to ``max_messages`` messages for ``group``, oldest first, waiting up to
        ``timeout`` seconds for the first; each stays pending until :meth:`ack`."""
        [(limit, wait)] = self._checks.consume(queue, group, consumer, max_messages=max_messages,
                                               timeout=timeout)
        feed = await self._feed(queue, group)
        deadline = time.monotonic() + wait
        while True:
            out = await self._run(lambda: self._take(feed, queue, limit), f"consuming {queue!r}")
            remaining = deadline - time.monotonic()
            if out or remaining <= 0:
                return out
            try:  # woken by a delivery; in slices, so expired pending messages get requeued
                await asyncio.wait_for(feed.arrived.wait(), min(remaining, 0.1))
            except TimeoutError:
                pass

    async def ack(self, queue: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge consumed messages; returns how many were pending and are now done."""
        checked = self._checks.ack(queue, group, ids)
        feed = self._groups.get((queue, group))
        if not checked or feed is None:
            return 0

        async def ack_pending() -> int:
            done = 0
            for mid in dict.fromkeys(checked):
                entry = feed.pending.pop(mid, None)
                if entry is None or entry[1].channel is not feed.channel:
                    continue  # not pending, or its channel is gone: the broker redelivers it
                await entry[1].ack()
                feed.counts.pop(mid, None)
                done += 1
            return done

        # not retried: after a reconnect the delivery tags are void and the messages requeued
        return await self._run(ack_pending, f"acking on {queue!r}", retry=False)

    async def backlog(self, queue: str, group: str) -> int:
        """Ready messages of the group's queue plus those this backend holds unacked."""
        self._checks.backlog(queue, group)
        feed = await self._feed(queue, group)

        async def count(ch: Any) -> int:
            ok = await ch.queue_declare(feed.rabbit_queue, passive=True)
            live = feed.channel is not None and not feed.channel.is_closed
            mine = len(feed.buffer) + len(feed.pending) if live else 0
            return int(ok.message_count) + mine

        return await self._aside(count, f"reading the backlog of {queue!r}")
