"""A small thread-safe pool of autocommit psycopg connections.

Each borrower gets a connection to itself for one operation (usually one transaction).
A connection that broke during the operation is closed rather than returned, so the next
borrower (a retry) gets a fresh one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from fastshard.errors import BackendUnavailableError


class ConnectionPool:
    def __init__(
        self, dsn: str, *, max_size: int, connect_timeout: float, application_name: str
    ) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._application_name = application_name
        self._cv = threading.Condition()
        self._idle: list[psycopg.Connection] = []
        self._open = 0  # connections created and not yet closed (idle or borrowed)
        self._closed = False

    def connect(self) -> psycopg.Connection:
        """A new connection outside the pool (for LISTEN)."""
        return psycopg.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(1, round(self._connect_timeout)),
            application_name=self._application_name,
        )

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = self._borrow()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _borrow(self) -> psycopg.Connection:
        deadline = time.monotonic() + max(self._connect_timeout, 1.0) * 10
        with self._cv:
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
        try:
            return self.connect()
        except BaseException:
            with self._cv:
                self._open -= 1
                self._cv.notify()
            raise

    def _give_back(self, conn: psycopg.Connection) -> None:
        healthy = not conn.closed and not conn.broken and (
            conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._cv:
            if healthy and not self._closed:
                self._idle.append(conn)
                self._cv.notify()
                return
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
