"""One AMQP connection and channel, used by one thread at a time, reopened after failures.

pika's ``BlockingConnection`` is not thread-safe, so every use goes through :meth:`Link.run`
under the link's lock. A dropped connection is reopened on the next call; ``generation``
counts reconnects so that consumers registered on an older connection know they are void
(the broker has already requeued whatever they had not acked).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import (
    AMQPConnectionError,
    AMQPHeartbeatTimeout,
    ChannelClosedByBroker,
    ChannelWrongStateError,
    ConnectionWrongStateError,
    StreamLostError,
)

from fastshard.backends.retry import call_with_retry
from fastshard.errors import BackendError, FastshardError, UnknownQueueError

T = TypeVar("T")

#: errors after which the connection is reopened and an idempotent call repeated
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    AMQPConnectionError, AMQPHeartbeatTimeout, StreamLostError, ChannelWrongStateError,
    ConnectionWrongStateError, ConnectionResetError, BrokenPipeError, OSError,
)


class Link:
    def __init__(self, params: pika.ConnectionParameters, *, confirm: bool, prefetch: int,
                 attempts: int, what: str, transactional: bool = False) -> None:
        self._params = params
        self._confirm = confirm
        # a transactional channel (tx.select): publishes take effect at tx.commit, all or
        # none; mandatory messages the broker could not route are collected in `returned`
        self._transactional = transactional
        self.returned: list[bytes] = []
        self._prefetch = prefetch
        self._attempts = attempts
        self._what = what
        self.lock = threading.RLock()
        self.conn: pika.BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.generation = 0

    def _open(self) -> BlockingChannel:
        ch = self.channel
        if ch is not None and ch.is_open:  # pika closes a connection's channels with it
            return ch
        if self.conn is None or not self.conn.is_open:
            self.reset()
            self.conn = pika.BlockingConnection(self._params)
        if self.channel is None or not self.channel.is_open:
            # consumers live on the channel: a new one means the old deliveries are void
            self.generation += 1
            ch = self.conn.channel()
            if self._confirm:
                ch.confirm_delivery()
            if self._transactional:
                ch.tx_select()
                ch.add_on_return_callback(lambda _ch, _method, _props, body: self.returned.append(body))
            if self._prefetch:
                ch.basic_qos(prefetch_count=self._prefetch)
            self.channel = ch
        return self.channel

    def reset(self) -> None:
        """Drop the connection (the broker requeues its unacked deliveries)."""
        conn, self.conn, self.channel = self.conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                pass

    def run(self, fn: Callable[[BlockingChannel], T], what: str, *, retry: bool = True,
            aside: bool = False) -> T:
        """Call ``fn(channel)`` under the lock; reconnect and repeat on connection errors.

        ``retry=False`` for calls whose repetition is unsafe: the first failure surfaces as
        :class:`BackendUnavailableError` (after resetting the link). ``aside=True`` runs ``fn``
        on a temporary channel, for calls the broker may answer by closing the channel
        (a passive declare of a missing queue, a refused redeclare), which would otherwise
        cancel the consumers on the main channel and requeue their deliveries.
        """
        if retry and not aside:
            # The common case (every publish): the channel is open, so call fn straight away
            # without setting up the retry loop. If the connection turns out to be broken,
            # the loop below reconnects and makes its ``attempts`` attempts.
            with self.lock:
                ch = self.channel
                if ch is not None and ch.is_open:
                    try:
                        return fn(ch)
                    except ChannelClosedByBroker as exc:
                        self.channel = None  # the broker closed it; the connection lives on
                        raise _refused(what, exc) from exc
                    except CONNECTION_ERRORS:
                        self.reset()

        def attempt() -> T:
            with self.lock:
                try:
                    main = self._open()
                    if not aside:
                        return fn(main)
                    assert self.conn is not None
                    tmp = self.conn.channel()
                    try:
                        return fn(tmp)
                    finally:
                        if tmp.is_open:
                            tmp.close()
                except ChannelClosedByBroker as exc:
                    if not aside:
                        self.channel = None  # the broker closed it; the connection lives on
                    raise _refused(what, exc) from exc
                except CONNECTION_ERRORS:
                    self.reset()
                    raise

        return call_with_retry(attempt, what=f"{what} ({self._what})", retry_on=CONNECTION_ERRORS,
                               attempts=self._attempts if retry else 1)

    def close(self) -> None:
        with self.lock:
            self.reset()


def _refused(what: str, exc: ChannelClosedByBroker) -> FastshardError:
    if exc.reply_code == 404:  # NOT_FOUND: the queue was never made or is gone
        return UnknownQueueError(f"{what}: {exc.reply_text}")
    return BackendError(f"{what}: the broker refused: {exc.reply_text}")


def passive_exists(ch: BlockingChannel, queue: str) -> Any | None:
    """``queue.declare`` passive: the declare-ok frame, or ``None`` (channel closed) if missing."""
    try:
        return ch.queue_declare(queue, passive=True).method
    except ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
