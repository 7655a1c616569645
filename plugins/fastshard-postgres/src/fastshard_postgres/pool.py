"""A small thread-safe pool of autocommit psycopg connections.

Each borrower gets a connection to itself for one operation (usually one transaction).
A connection that broke during the operation is closed rather than returned, so the next
borrower (a retry) gets a fresh one.

Borrowing and returning take no lock while an idle connection is available (``list.pop``
and ``list.append`` are atomic): a single publish is one statement, and the pool's
bookkeeping is a visible share of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

from fastshard.errors import BackendUnavailableError

_IDLE = pq.TransactionStatus.IDLE


class PooledConnection(psycopg.Connection[Any]):
    """A psycopg connection that remembers which named statements it has prepared on the
    server (``prepared``), for the statements run directly through libpq."""

    prepared: set[bytes]


class ConnectionPool:
    def __init__(
        self, dsn: str, *, max_size: int, connect_timeout: float, application_name: str
    ) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._application_name = application_name
        self._cv = threading.Condition()
        self._idle: list[PooledConnection] = []
        self._open = 0  # connections created and not yet closed (idle or borrowed)
        self._waiting = 0
        self._closed = False

    def connect(self) -> PooledConnection:
        """A new connection outside the pool (for LISTEN)."""
        conn = PooledConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(1, round(self._connect_timeout)),
            application_name=self._application_name,
        )
        conn.prepared = set()
        return conn

    @contextmanager
    def connection(self) -> Iterator[PooledConnection]:
        conn = self.borrow()
        try:
            yield conn
        finally:
            self.give_back(conn)

    def borrow(self) -> PooledConnection:
        """A connection for this caller alone; hand it back with :meth:`give_back`."""
        if not self._closed:
            try:
                return self._idle.pop()
            except IndexError:
                pass
        return self._borrow_slow()

    def _borrow_slow(self) -> PooledConnection:
        deadline = time.monotonic() + max(self._connect_timeout, 1.0) * 10
        with self._cv:
            self._waiting += 1
            try:
                while True:
                    if self._closed:
                        raise BackendUnavailableError("the PostgreSQL backend was closed")
                    if self._idle:
                        return self._idle.pop()
                    if self._open < self._max_size:
                        self._open += 1
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BackendUnavailableError(
                            f"all {self._max_size} PostgreSQL connections stayed busy; raise max_connections"
                        )
                    self._cv.wait(left)
            finally:
                self._waiting -= 1
        try:
            return self.connect()
        except BaseException:
            with self._cv:
                self._open -= 1
                self._cv.notify()
            raise

    def give_back(self, conn: PooledConnection) -> None:
        # A connection lost mid-statement reports a transaction status other than IDLE
        # (UNKNOWN), as does one left inside a transaction: neither is reused.
        if not self._closed and conn.pgconn.transaction_status == _IDLE and not conn.broken:
            self._idle.append(conn)
            if self._waiting:  # read without the lock; a waiter re-checks _idle under it
                with self._cv:
                    self._cv.notify()
            if self._closed:  # closed while we were appending: do not leave it open
                self.discard_idle()
            return
        with self._cv:
            self._open -= 1
            self._cv.notify()
        conn.close()

    def discard_idle(self) -> None:
        """Close idle connections (after the server restarted, they are all dead)."""
        with self._cv:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cv.notify_all()
        for c in idle:
            c.close()

    def close(self) -> None:
        with self._cv:
            self._closed = True
        self.discard_idle()
