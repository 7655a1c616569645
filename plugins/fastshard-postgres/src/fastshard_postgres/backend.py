"""PostgresBackend: fastshard's backend contract on PostgreSQL (psycopg 3).

* queues: a messages table with dense per-queue sequence numbers, a cursor per consumer
  group and a pending table of delivered-but-unacked messages (redelivered after the
  visibility timeout); consumers of one group take turns on the group's row lock, which
  keeps each group's delivery in publish order;
* key-value: a version column, CAS by ``UPDATE ... WHERE version = %s`` and
  ``INSERT ... ON CONFLICT DO NOTHING``; notify/subscribe with LISTEN/NOTIFY;
* counters: ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``; leases: the server's
  ``clock_timestamp()``, fencing tokens from a per-lease sequence column.

Retries. Every operation is one transaction, retried on a lost connection
(``retry_attempts`` times with capped backoff). A transaction that did not commit left no
trace. The one ambiguous case, a COMMIT whose reply was lost, is covered for writes that
are not idempotent (publish, kv_set/cas/delete, counter_add, lease_release): each first
claims a row in the ``requests`` table under a request id and stores its result there,
so a retry returns the stored result instead of applying the write twice. Consuming is
at-least-once (a lost delivery stays pending and comes back after the visibility
timeout). ``notify`` is never retried (at-most-once); its failure is surfaced.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import psycopg

from fastshard.backends.base import Backend, LeaseInfo, Subscription, Versioned
from fastshard.backends.request_ids import REQUEST_IDS
from fastshard.backends.retry import call_with_retry
from fastshard.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidValueError,
    check_int,
    check_seconds,
)
from fastshard_postgres.listen import PostgresSubscription, QueueWaker, encode_payload
from fastshard_postgres.pool import ConnectionPool
from fastshard_postgres.queues import QueueTables
from fastshard_postgres.schema import (
    channel_name,
    ddl,
    queue_wakeup_channel,
    validate_schema,
)

T = TypeVar("T")
Conn = psycopg.Connection


class PostgresBackend(QueueTables, Backend):
    """The ``postgres`` backend.

    Options: ``dsn`` (libpq URL or key=value string), ``schema`` (where the tables live;
    isolates deployments and tests), ``max_connections`` (pool size), ``connect_timeout``,
    ``statement_timeout``, retry settings, ``visibility_timeout``, ``max_message_bytes``,
    ``dedup_ttl`` (seconds request results are kept for retries) and ``application_name``.
    Nothing connects until the first call; tables are created then.
    """

    name = "postgres"

    def __init__(
        self,
        *,
        dsn: str = "postgresql://postgres@127.0.0.1:5432/test",
        schema: str = "fastshard",
        max_connections: int = 10,
        connect_timeout: float = 5.0,
        retry_attempts: int = 5,
        retry_base_delay: float = 0.05,
        retry_max_delay: float = 1.0,
        visibility_timeout: float = 30.0,
        max_message_bytes: int = 1 << 20,
        dedup_ttl: int = 300,
        application_name: str = "fastshard",
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise InvalidValueError(f"dsn must be a non-empty libpq connection string, got {dsn!r}")
        self.schema = validate_schema(schema)
        check_int("max_connections", max_connections, 1, 10_000)
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout, 3600)
        self.retry_attempts = check_int("retry_attempts", retry_attempts, 1, 100)
        self.retry_base_delay = check_seconds("retry_base_delay", retry_base_delay, 60)
        self.retry_max_delay = check_seconds("retry_max_delay", retry_max_delay, 600)
        self.visibility_timeout = check_seconds("visibility_timeout", visibility_timeout, 86_400)
        self.max_message_bytes = check_int("max_message_bytes", max_message_bytes, 1, 256 << 20)
        self.dedup_ttl = check_int("dedup_ttl", dedup_ttl, 1, 86_400)
        if not isinstance(application_name, str) or not 1 <= len(application_name) <= 63:
            raise InvalidValueError(
                f"application_name must be a str of 1-63 characters, got {application_name!r}"
            )
        self.dsn = dsn
        self._pool = ConnectionPool(
            dsn,
            max_size=max_connections,
            connect_timeout=self.connect_timeout,
            application_name=application_name,
        )
        self._s = f'"{self.schema}"'
        self._ready = False
        self._ready_lock = threading.Lock()
        self._wake_channel_b = queue_wakeup_channel(self.schema).encode()
        self._publish_one_stmt = self._publish_one_statement()
        self._waker = QueueWaker(self, queue_wakeup_channel(self.schema))
        self._last_prune = 0.0
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one transaction) with retries on lost connections."""
        try:
            return call_with_retry(
                fn,
                what=f"postgres {what}",
                retry_on=(psycopg.OperationalError,),
                attempts=self.retry_attempts,
                base_delay=self.retry_base_delay,
                max_delay=self.retry_max_delay,
                # after a server restart every pooled connection is dead: drop them all
                on_retry=lambda exc: self._pool.discard_idle(),
            )
        except psycopg.Error as exc:
            raise self._error(what, exc) from exc

    @staticmethod
    def _error(what: str, exc: psycopg.Error) -> Exception:
        """fastshard's error for a psycopg error that is not retried."""
        if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
            return InvalidValueError(f"postgres {what}: value out of the 64-bit range ({exc})")
        return BackendError(f"postgres {what} failed: {type(exc).__name__}: {exc}")

    def _tx(self, what: str, body: Callable[[Conn], T]) -> T:
        """``body`` in one transaction on a pooled connection, retried as a whole."""

        def attempt() -> T:
            self._ensure_tables()
            with self._pool.connection() as conn, conn.transaction():
                return body(conn)

        return self._call(what, attempt)

    def _tx_once(self, what: str, body: Callable[[Conn], str]) -> str:
        """Like :meth:`_tx`, for a write that must not apply twice: its result (a str) is
        stored under a fresh request id in the same transaction, and a retry that finds
        the id returns the stored result."""
        request_id = REQUEST_IDS.next()
        result = self._tx(what, lambda conn: self._once(conn, request_id, body))
        self._maybe_prune()
        return result

    def _once(self, conn: Conn, request_id: str, body: Callable[[Conn], str]) -> str:
        """Inside a transaction: ``body``'s result, stored under ``request_id``, or the result
        an earlier attempt with this id stored."""
        s = self._s
        # Claim the id first: if an earlier attempt's COMMIT is still in flight this
        # waits for it, then either sees its result or (it aborted) does the work.
        claimed = conn.execute(
            f"INSERT INTO {s}.requests (id, result) VALUES (%s, '') "
            "ON CONFLICT (id) DO NOTHING RETURNING 1",
            (request_id,),
        ).fetchone()
        if claimed is None:
            row = conn.execute(f"SELECT result FROM {s}.requests WHERE id = %s", (request_id,))
            return row.fetchone()[0]  # type: ignore[no-any-return, index]
        result = body(conn)
        conn.execute(f"UPDATE {s}.requests SET result = %s WHERE id = %s", (result, request_id))
        return result

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        s = self._s
        self._tx(
            "prune request log",
            lambda c: (
                c.execute(
                    f"DELETE FROM {s}.requests WHERE created_at < now() - make_interval(secs => %s)",
                    (self.dedup_ttl,),
                ),
                c.execute(
                    f"DELETE FROM {s}.notifications WHERE created_at < now() - make_interval(secs => %s)",
                    (max(600, self.dedup_ttl),),
                ),
            ),
        )

    def _ensure_tables(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            with self._pool.connection() as conn, conn.transaction():
                # Several processes may start at once; CREATE ... IF NOT EXISTS alone races.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"fastshard:{self.schema}",))
                for stmt in ddl(self.schema):
                    conn.execute(stmt)
            self._ready = True

    def ping(self) -> None:
        self._call("ping", lambda: self._ping())

    def _ping(self) -> None:
        with self._pool.connection() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._waker.stop()
            self._pool.close()

    def drop_schema(self) -> None:
        """Drop the schema and everything in it (tests, decommissioning)."""

        def drop() -> None:
            with self._pool.connection() as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {self._s} CASCADE")

        self._call("drop schema", drop)
        self._ready = False

    # ------------------------------------------------------------------ key-value
    def _kv_get(self, key: str) -> Versioned | None:
        row = self._tx(
            "kv_get",
            lambda c: c.execute(f"SELECT value, version FROM {self._s}.kv WHERE key = %s", (key,)).fetchone(),
        )
        return None if row is None else Versioned(bytes(row[0]), int(row[1]))

    def _kv_set(self, key: str, value: bytes) -> int:
        def kv_set(c: Conn) -> str:
            row = c.execute(
                f"""INSERT INTO {self._s}.kv AS t (key, value, version) VALUES (%s, %s, 1)
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = t.version + 1
                    RETURNING version""",
                (key, value),
            ).fetchone()
            return str(row[0])  # type: ignore[index]

        return int(self._tx_once("kv_set", kv_set))

    def _kv_cas(self, key: str, value: bytes, expected_version: int) -> int | None:
        def cas(c: Conn) -> str:
            if expected_version == 0:
                row = c.execute(
                    f"""INSERT INTO {self._s}.kv (key, value, version) VALUES (%s, %s, 1)
                        ON CONFLICT (key) DO NOTHING RETURNING version""",
                    (key, value),
                ).fetchone()
            else:
                row = c.execute(
                    f"""UPDATE {self._s}.kv SET value = %s, version = version + 1
                        WHERE key = %s AND version = %s RETURNING version""",
                    (value, key, expected_version),
                ).fetchone()
            return "" if row is None else str(row[0])

        r = self._tx_once("kv_cas", cas)
        return int(r) if r else None

    def _kv_delete(self, key: str) -> bool:
        def delete(c: Conn) -> str:
            n = c.execute(f"DELETE FROM {self._s}.kv WHERE key = %s", (key,)).rowcount
            return str(n)

        return self._tx_once("kv_delete", delete) == "1"

    def _kv_keys(self, prefix: str) -> Iterable[str]:
        rows = self._tx(
            "kv_keys",
            lambda c: c.execute(
                f"SELECT key FROM {self._s}.kv WHERE starts_with(key, %s)", (prefix,)
            ).fetchall(),
        )
        return [r[0] for r in rows]

    def _notify(self, channel: str, payload: bytes) -> None:
        s = self._s

        def store(c: Conn) -> Callable[[bytes], int]:
            return lambda p: c.execute(
                f"INSERT INTO {s}.notifications (payload) VALUES (%s) RETURNING id", (p,)
            ).fetchone()[0]  # type: ignore[index]

        # Never retried: a NOTIFY whose COMMIT reply was lost may have been delivered, and
        # a second one would break at-most-once. The caller sees the error instead.
        try:
            self._ensure_tables()
            with self._pool.connection() as conn, conn.transaction():
                text = encode_payload(payload, store(conn))
                conn.execute("SELECT pg_notify(%s, %s)", (channel_name(self.schema, channel), text))
        except psycopg.OperationalError as exc:
            raise BackendUnavailableError(
                f"postgres notify on {channel!r} failed ({type(exc).__name__}: {exc}); "
                "subscribers may or may not have received it"
            ) from exc
        except psycopg.Error as exc:
            raise BackendError(f"postgres notify on {channel!r} failed: {exc}") from exc

    def _decode_payload(self, text: str) -> bytes:
        if text.startswith("b"):
            return base64.b64decode(text[1:])
        row = self._tx(
            "read notification",
            lambda c: c.execute(
                f"SELECT payload FROM {self._s}.notifications WHERE id = %s", (int(text[1:]),)
            ).fetchone(),
        )
        if row is None:
            raise BackendError(f"notification {text[1:]} expired before it was read")
        return bytes(row[0])

    def _subscribe(self, channel: str) -> Subscription:
        return PostgresSubscription(self, channel_name(self.schema, channel))

    # ------------------------------------------------------------------ counters and leases
    def _counter_add(self, name: str, delta: int) -> int:
        if delta == 0:
            row = self._tx(
                "counter_get",
                lambda c: c.execute(
                    f"SELECT value FROM {self._s}.counters WHERE name = %s", (name,)
                ).fetchone(),
            )
            return 0 if row is None else int(row[0])

        def add(c: Conn) -> str:
            row = c.execute(
                f"""INSERT INTO {self._s}.counters AS t (name, value) VALUES (%s, %s)
                    ON CONFLICT (name) DO UPDATE SET value = t.value + excluded.value
                    RETURNING value""",
                (name, delta),
            ).fetchone()
            return str(row[0])  # type: ignore[index]

        return int(self._tx_once("counter_add", add))

    def _lease_acquire(self, name: str, owner: str, ttl: float) -> int | None:
        # Idempotent: a retry by the same owner finds it holding and keeps the token.
        row = self._tx(
            "lease_acquire",
            lambda c: c.execute(
                f"""INSERT INTO {self._s}.leases AS l (name, owner, token, seq, expires_at)
                    VALUES (%(n)s, %(o)s, 1, 1, clock_timestamp() + make_interval(secs => %(t)s))
                    ON CONFLICT (name) DO UPDATE SET
                      token = CASE WHEN l.owner = %(o)s AND l.expires_at > clock_timestamp()
                                   THEN l.token ELSE l.seq + 1 END,
                      seq = CASE WHEN l.owner = %(o)s AND l.expires_at > clock_timestamp()
                                 THEN l.seq ELSE l.seq + 1 END,
                      owner = %(o)s,
                      expires_at = excluded.expires_at
                    WHERE l.owner IS NULL OR l.owner = %(o)s OR l.expires_at <= clock_timestamp()
                    RETURNING token""",
                {"n": name, "o": owner, "t": ttl},
            ).fetchone(),
        )
        return None if row is None else int(row[0])

    def _lease_renew(self, name: str, owner: str, token: int, ttl: float) -> bool:
        # Owner and token still matching means nobody took the lease over, even if it lapsed.
        row = self._tx(
            "lease_renew",
            lambda c: c.execute(
                f"""UPDATE {self._s}.leases
                    SET expires_at = clock_timestamp() + make_interval(secs => %s)
                    WHERE name = %s AND owner = %s AND token = %s RETURNING 1""",
                (ttl, name, owner, token),
            ).fetchone(),
        )
        return row is not None

    def _lease_release(self, name: str, owner: str, token: int) -> bool:
        def release(c: Conn) -> str:
            n = c.execute(
                f"""UPDATE {self._s}.leases SET owner = NULL, expires_at = clock_timestamp()
                    WHERE name = %s AND owner = %s AND token = %s""",
                (name, owner, token),
            ).rowcount
            return str(n)

        return self._tx_once("lease_release", release) == "1"

    def _lease_info(self, name: str) -> LeaseInfo | None:
        row = self._tx(
            "lease_info",
            lambda c: c.execute(
                f"""SELECT owner, token, extract(epoch FROM expires_at - clock_timestamp())
                    FROM {self._s}.leases
                    WHERE name = %s AND owner IS NOT NULL AND expires_at > clock_timestamp()""",
                (name,),
            ).fetchone(),
        )
        return None if row is None else LeaseInfo(row[0], int(row[1]), float(row[2]))
