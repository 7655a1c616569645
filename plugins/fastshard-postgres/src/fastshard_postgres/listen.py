"""LISTEN/NOTIFY: subscriptions, and the wake-up of consumers waiting for new messages."""

from __future__ import annotations

import base64
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from fastshard.backends.base import Subscription
from fastshard.errors import InvalidValueError, check_finite

if TYPE_CHECKING:
    from fastshard_postgres.backend import PostgresBackend

#: NOTIFY payloads are limited to 8000 bytes; base64 of up to this many bytes fits inline
INLINE_PAYLOAD_BYTES = 5600


def encode_payload(payload: bytes, store: Callable[[bytes], int]) -> str:
    """``b<base64>`` inline, or ``r<id>`` of a row in the notifications table."""
    if len(payload) <= INLINE_PAYLOAD_BYTES:
        return "b" + base64.b64encode(payload).decode()
    return f"r{store(payload)}"


class PostgresSubscription(Subscription):
    """One LISTENing connection of its own; LISTEN has completed when it is returned."""

    def __init__(self, backend: PostgresBackend, channel: str) -> None:
        self._backend = backend
        self._channel = channel
        self._conn: psycopg.Connection | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._inbox: deque[str] = deque()
        backend._call(f"subscribe {channel!r}", self._listen)

    def _listen(self) -> None:
        conn = self._backend._pool.connect()
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _next(self, wait: float) -> str | None:
        if self._conn is None or self._conn.closed:
            # Reconnected: what was notified while we were away is lost (at-most-once).
            self._listen()
        assert self._conn is not None
        if not self._inbox:
            try:
                # Drain the generator: one network read may carry several notifications,
                # and leaving the loop early would drop the rest.
                self._inbox.extend(
                    n.payload for n in self._conn.notifies(timeout=wait, stop_after=1)
                )
            except psycopg.OperationalError:
                self._conn.close()
                raise
        return self._inbox.popleft() if self._inbox else None

    def get(self, timeout: float | None = None) -> bytes | None:
        if timeout is not None:
            timeout = check_finite("timeout", timeout)
            if timeout < 0:
                raise InvalidValueError(f"timeout must be >= 0 seconds or None, got {timeout}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._closed:
                wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
                payload = self._backend._call(
                    f"receive on {self._channel!r}", partial(self._next, wait)
                )
                if payload is not None:
                    return self._backend._decode_payload(payload)
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            if self._conn is not None:
                self._conn.close()


class QueueWaker:
    """Wakes consumers blocked in ``consume`` when a publish to their queue commits.

    One background thread per backend LISTENs on the schema's queue channel. It is only a
    hint: waiting consumers also wake up on their own at least every second, so a lost
    connection here delays delivery a little and never loses it.
    """

    def __init__(self, backend: PostgresBackend, channel: str) -> None:
        self._backend = backend
        self._channel = channel
        self._cv = threading.Condition()
        self._generation: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def generation(self, queue: str) -> int:
        with self._cv:
            self._ensure_started()
            return self._generation.get(queue, 0)

    def wait(self, queue: str, seen: int, timeout: float) -> None:
        """Return when ``queue`` had a publish after generation ``seen``, or at ``timeout``."""
        with self._cv:
            self._cv.wait_for(lambda: self._generation.get(queue, 0) != seen, timeout)

    def _ensure_started(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(
                target=self._run, name=f"fastshard-pg-waker-{self._channel}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                with self._backend._pool.connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    delay = 0.05
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            with self._cv:
                                self._generation[n.payload] = self._generation.get(n.payload, 0) + 1
                                self._cv.notify_all()
            except psycopg.Error:
                # Server gone: consumers keep polling on their own; try again with backoff.
                self._stop.wait(delay)
                delay = min(2.0, delay * 2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
