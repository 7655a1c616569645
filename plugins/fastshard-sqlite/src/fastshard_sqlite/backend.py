"""Key-value, counters and leases in one SQLite file.

Durable across restarts of one host (ID generators keep their high-water marks here when no
server is available) and shared by the processes of that host: every write is one
``BEGIN IMMEDIATE`` transaction, which SQLite serialises across processes. Notification is
in-process only (SQLite has no server to push changes), so ``subscribe`` sees ``notify`` calls
made through backends of the same process; routers in other processes poll the version.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Iterable

from fastshard.backends.base import (
    COUNTERS,
    KV,
    LEASES,
    Backend,
    LeaseInfo,
    Subscription,
    Versioned,
)
from fastshard.errors import BackendError, InvalidTypeError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT, token INTEGER NOT NULL,
                                   expires REAL NOT NULL);
"""

# channel -> inboxes of the subscriptions made in this process
_channels: dict[str, list[queue.SimpleQueue[bytes]]] = {}
_channels_lock = threading.Lock()


class _LocalSubscription(Subscription):
    def __init__(self, channel: str) -> None:
        self._channel = channel
        self._inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        with _channels_lock:
            _channels.setdefault(channel, []).append(self._inbox)

    def get(self, timeout: float | None = None) -> bytes | None:
        try:
            return self._inbox.get(timeout=timeout) if timeout != 0 else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        with _channels_lock:
            inboxes = _channels.get(self._channel, [])
            if self._inbox in inboxes:
                inboxes.remove(self._inbox)


class SqliteBackend(Backend):
    """``SqliteBackend(path="fastshard.db")``; ``":memory:"`` works for tests."""

    name = "sqlite"
    capabilities = frozenset({KV, COUNTERS, LEASES})

    def __init__(self, path: str = "fastshard.db", *, busy_timeout: float = 10.0) -> None:
        if not isinstance(path, str):
            raise InvalidTypeError(f"path must be a str, got {type(path).__name__}")
        # One connection guarded by a lock: sqlite3 connections are not safe to share
        # between threads without one, and SQLite serialises writers anyway.
        self._db = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False,
                                   isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, fn):
        """Run ``fn(cursor)`` in one immediate (write-locked) transaction."""
        with self._lock:
            try:
                cur = self._db.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(cur)
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                raise BackendError(f"sqlite backend: {exc}") from exc

    # ------------------------------------------------------------------ key-value
    def _kv_get(self, key: str) -> Versioned | None:
        row = self._tx(lambda c: c.execute("SELECT value, version FROM kv WHERE key=?", (key,)).fetchone())
        return Versioned(bytes(row[0]), row[1]) if row else None

    def _kv_set(self, key: str, value: bytes) -> int:
        def write(c):
            row = c.execute("SELECT version FROM kv WHERE key=?", (key,)).fetchone()
            version = (row[0] if row else 0) + 1
            c.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, version))
            return version

        return self._tx(write)

    def _kv_cas(self, key: str, value: bytes, expected_version: int) -> int | None:
        def write(c):
            row = c.execute("SELECT version FROM kv WHERE key=?", (key,)).fetchone()
            if (row[0] if row else 0) != expected_version:
                return None
            c.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, expected_version + 1))
            return expected_version + 1

        return self._tx(write)

    def _kv_delete(self, key: str) -> bool:
        return self._tx(lambda c: c.execute("DELETE FROM kv WHERE key=?", (key,)).rowcount > 0)

    def _kv_keys(self, prefix: str) -> Iterable[str]:
        rows = self._tx(lambda c: c.execute("SELECT key FROM kv").fetchall())
        return [r[0] for r in rows if r[0].startswith(prefix)]

    def _notify(self, channel: str, payload: bytes) -> None:
        with _channels_lock:
            inboxes = list(_channels.get(channel, ()))
        for inbox in inboxes:
            inbox.put(payload)

    def _subscribe(self, channel: str) -> Subscription:
        return _LocalSubscription(channel)

    # ------------------------------------------------------------------ counters and leases
    def _counter_add(self, name: str, delta: int) -> int:
        def write(c):
            c.execute("INSERT OR IGNORE INTO counters VALUES (?, 0)", (name,))
            c.execute("UPDATE counters SET value = value + ? WHERE name=?", (delta, name))
            return c.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()[0]

        return self._tx(write)

    def _lease_acquire(self, name: str, owner: str, ttl: float) -> int | None:
        def write(c):
            now = time.time()
            row = c.execute("SELECT owner, token, expires FROM leases WHERE name=?", (name,)).fetchone()
            if row and row[2] > now and row[0] != owner:
                return None
            token = row[1] if row and row[2] > now else (row[1] if row else 0) + 1
            c.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)", (name, owner, token, now + ttl))
            return token

        return self._tx(write)

    def _lease_renew(self, name: str, owner: str, token: int, ttl: float) -> bool:
        def write(c):
            row = c.execute("SELECT owner, token FROM leases WHERE name=?", (name,)).fetchone()
            if not row or row[0] != owner or row[1] != token:
                return False
            c.execute("UPDATE leases SET expires=? WHERE name=?", (time.time() + ttl, name))
            return True

        return self._tx(write)

    def _lease_release(self, name: str, owner: str, token: int) -> bool:
        # Keep the row (owner cleared, expired) so the next holder's token is still larger.
        return self._tx(lambda c: c.execute(
            "UPDATE leases SET owner=NULL, expires=0 WHERE name=? AND owner=? AND token=?",
            (name, owner, token)).rowcount > 0)

    def _lease_info(self, name: str) -> LeaseInfo | None:
        row = self._tx(lambda c: c.execute(
            "SELECT owner, token, expires FROM leases WHERE name=?", (name,)).fetchone())
        now = time.time()
        if not row or row[0] is None or row[2] <= now:
            return None
        return LeaseInfo(row[0], row[1], row[2] - now)
