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
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from fastshard.backends.base import Backend, LeaseInfo, Message, Subscription, Versioned
from fastshard.backends.retry import call_with_retry
from fastshard.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidValueError,
    check_finite,
    check_int,
)
from fastshard_postgres.listen import PostgresSubscription, QueueWaker, encode_payload
from fastshard_postgres.pool import ConnectionPool
from fastshard_postgres.schema import (
    channel_name,
    ddl,
    queue_wakeup_channel,
    validate_schema,
)

T = TypeVar("T")
Conn = psycopg.Connection


class _NoQueue(Exception):
    """Raised inside a transaction (rolling it back) when the queue does not exist."""


def _seconds(field: str, value: Any, hi: float) -> float:
    v = check_finite(field, value)
    if not 0 < v <= hi:
        raise InvalidValueError(f"{field} must be in (0, {hi}] seconds, got {value!r}")
    return v


class PostgresBackend(Backend):
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
        self.connect_timeout = _seconds("connect_timeout", connect_timeout, 3600)
        self.retry_attempts = check_int("retry_attempts", retry_attempts, 1, 100)
        self.retry_base_delay = _seconds("retry_base_delay", retry_base_delay, 60)
        self.retry_max_delay = _seconds("retry_max_delay", retry_max_delay, 600)
        self.visibility_timeout = _seconds("visibility_timeout", visibility_timeout, 86_400)
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
        except psycopg.errors.NumericValueOutOfRange as exc:
            raise InvalidValueError(f"postgres {what}: value out of the 64-bit range ({exc})") from exc
        except psycopg.Error as exc:
            raise BackendError(f"postgres {what} failed: {type(exc).__name__}: {exc}") from exc

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
        request_id = os.urandom(12).hex()
        s = self._s

        def once(conn: Conn) -> str:
            # Claim the id first: if an earlier attempt's COMMIT is still in flight this
            # waits for it, then either sees its result or (it aborted) does the work.
            claimed = conn.execute(
                f"INSERT INTO {s}.requests (id, result) VALUES (%s, '') "
                "ON CONFLICT (id) DO NOTHING RETURNING 1",
                (request_id,),
            ).fetchone()
            if claimed is None:
                row = conn.execute(f"SELECT result FROM {s}.requests WHERE id = %s", (request_id,))
                return row.fetchone()[0]  # type: ignore[index]
            result = body(conn)
            conn.execute(f"UPDATE {s}.requests SET result = %s WHERE id = %s", (result, request_id))
            return result

        result = self._tx(what, once)
        self._maybe_prune()
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

    # ------------------------------------------------------------------ queues
    def _create_queue(self, queue: str) -> None:
        self._tx(
            f"create queue {queue!r}",
            lambda c: c.execute(
                f"INSERT INTO {self._s}.queues (name) VALUES (%s) ON CONFLICT DO NOTHING", (queue,)
            ),
        )

    def _delete_queue(self, queue: str) -> None:
        def delete(c: Conn) -> None:
            for table in ("pending", "groups", "messages"):
                c.execute(f"DELETE FROM {self._s}.{table} WHERE queue = %s", (queue,))
            c.execute(f"DELETE FROM {self._s}.queues WHERE name = %s", (queue,))

        self._tx(f"delete queue {queue!r}", delete)

    def _list_queues(self) -> Iterable[str]:
        rows = self._tx("list queues", lambda c: c.execute(f"SELECT name FROM {self._s}.queues").fetchall())
        return [r[0] for r in rows]

    def _no_queue(self, queue: str) -> InvalidValueError:
        return InvalidValueError(f"queue {queue!r} does not exist; create_queue it first")

    def _publish_batch(
        self, queue: str, batch: list[tuple[bytes, bytes]], headers: dict[str, str], epoch: int
    ) -> list[str]:
        s = self._s
        hdr = Jsonb(headers) if headers else None
        n = len(batch)

        def publish(c: Conn) -> str:
            # Taking the queue row's lock serializes publishers of this queue until COMMIT,
            # so sequence numbers become visible in order and without gaps.
            row = c.execute(
                f"UPDATE {s}.queues SET next_seq = next_seq + %s WHERE name = %s RETURNING next_seq",
                (n, queue),
            ).fetchone()
            if row is None:
                raise _NoQueue
            first = row[0] - n + 1
            with c.cursor().copy(
                f"COPY {s}.messages (queue, seq, key, value, headers, epoch) FROM STDIN"
            ) as copy:
                copy.set_types(["text", "int8", "bytea", "bytea", "jsonb", "int8"])
                for i, (k, v) in enumerate(batch):
                    copy.write_row((queue, first + i, k, v, hdr, epoch))
            c.execute("SELECT pg_notify(%s, %s)", (queue_wakeup_channel(self.schema), queue))
            return str(first)

        try:
            first = int(self._tx_once(f"publish to {queue!r}", publish))
        except _NoQueue:
            raise self._no_queue(queue) from None
        return [str(first + i) for i in range(n)]

    def _consume(
        self, queue: str, group: str, consumer: str, max_messages: int, timeout: float
    ) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            seen = self._waker.generation(queue) if timeout > 0 else 0
            try:
                # At-least-once: if the COMMIT reply is lost the deliveries stay pending and
                # come back after the visibility timeout, so a retry loses nothing.
                got = self._tx(
                    f"consume {queue!r}",
                    lambda c: self._take(c, queue, group, consumer, max_messages),
                )
            except _NoQueue:
                raise self._no_queue(queue) from None
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            # Wake on a publish to this queue, and at least every visibility_timeout / 4 to
            # pick up deliveries that timed out.
            self._waker.wait(queue, seen, min(left, self.visibility_timeout / 4, 1.0))

    def _take(self, c: Conn, queue: str, group: str, consumer: str, limit: int) -> list[Message]:
        s = self._s
        if c.execute(f"SELECT 1 FROM {s}.queues WHERE name = %s", (queue,)).fetchone() is None:
            raise _NoQueue
        # A new group starts at the oldest retained message.
        c.execute(
            f"""INSERT INTO {s}.groups (queue, grp, cursor)
                SELECT %(q)s, %(g)s, COALESCE(
                    (SELECT min(seq) FROM {s}.messages WHERE queue = %(q)s),
                    (SELECT next_seq + 1 FROM {s}.queues WHERE name = %(q)s)) - 1
                ON CONFLICT DO NOTHING""",
            {"q": queue, "g": group},
        )
        # The group's row lock: consumers of one group take turns, keeping publish order.
        cursor = c.execute(
            f"SELECT cursor FROM {s}.groups WHERE queue = %s AND grp = %s FOR UPDATE", (queue, group)
        ).fetchone()[0]  # type: ignore[index]
        vt = self.visibility_timeout
        due = c.execute(
            f"""UPDATE {s}.pending p
                SET redeliver_at = clock_timestamp() + make_interval(secs => %(vt)s),
                    delivery_count = p.delivery_count + 1, consumer = %(c)s
                FROM (SELECT seq FROM {s}.pending
                      WHERE queue = %(q)s AND grp = %(g)s AND redeliver_at <= clock_timestamp()
                      ORDER BY seq LIMIT %(n)s) d, {s}.messages m
                WHERE p.queue = %(q)s AND p.grp = %(g)s AND p.seq = d.seq
                  AND m.queue = %(q)s AND m.seq = d.seq
                RETURNING p.seq, m.key, m.value, m.headers, m.epoch, p.delivery_count""",
            {"vt": vt, "c": consumer, "q": queue, "g": group, "n": limit},
        ).fetchall()
        due.sort(key=lambda r: r[0])
        fresh: list[Any] = []
        if len(due) < limit:
            fresh = c.execute(
                f"""WITH new AS (
                        SELECT seq, key, value, headers, epoch FROM {s}.messages
                        WHERE queue = %(q)s AND seq > %(cur)s ORDER BY seq LIMIT %(n)s),
                    ins AS (
                        INSERT INTO {s}.pending (queue, grp, seq, consumer, redeliver_at, delivery_count)
                        SELECT %(q)s, %(g)s, seq, %(c)s,
                               clock_timestamp() + make_interval(secs => %(vt)s), 1
                        FROM new)
                    SELECT seq, key, value, headers, epoch, 1 FROM new ORDER BY seq""",
                {"q": queue, "g": group, "c": consumer, "cur": cursor, "n": limit - len(due), "vt": vt},
            ).fetchall()
            if fresh:
                c.execute(
                    f"UPDATE {s}.groups SET cursor = %s WHERE queue = %s AND grp = %s",
                    (fresh[-1][0], queue, group),
                )
        return [
            Message(queue, str(seq), bytes(k), bytes(v), h or {}, epoch, count)
            for seq, k, v, h, epoch, count in (*due, *fresh)
        ]

    def _ack(self, queue: str, group: str, ids: list[str]) -> int:
        seqs = []
        for mid in ids:
            if not (mid.isdigit() and len(mid) <= 19):
                raise InvalidValueError(f"ids must be ids returned by consume, got {mid!r}")
            seqs.append(int(mid))
        s = self._s

        def ack(c: Conn) -> int:
            if c.execute(f"SELECT 1 FROM {s}.queues WHERE name = %s", (queue,)).fetchone() is None:
                raise _NoQueue
            # Idempotent; a retry after a lost COMMIT reply reports fewer acked messages.
            n = c.execute(
                f"DELETE FROM {s}.pending WHERE queue = %s AND grp = %s AND seq = ANY(%s)",
                (queue, group, seqs),
            ).rowcount
            # Trim what every group is done with: below each group's oldest pending
            # message, or past its cursor.
            c.execute(
                f"""DELETE FROM {s}.messages WHERE queue = %(q)s AND seq < (
                      SELECT min(COALESCE(
                          (SELECT min(p.seq) FROM {s}.pending p
                           WHERE p.queue = g.queue AND p.grp = g.grp),
                          g.cursor + 1))
                      FROM {s}.groups g WHERE g.queue = %(q)s)""",
                {"q": queue},
            )
            return n

        try:
            return self._tx(f"ack {queue!r}", ack)
        except _NoQueue:
            raise self._no_queue(queue) from None

    def _backlog(self, queue: str, group: str) -> int:
        s = self._s

        def backlog(c: Conn) -> int:
            row = c.execute(
                f"""SELECT q.next_seq, g.cursor,
                           (SELECT count(*) FROM {s}.pending p WHERE p.queue = q.name AND p.grp = %(g)s),
                           (SELECT count(*) FROM {s}.messages m WHERE m.queue = q.name)
                    FROM {s}.queues q
                    LEFT JOIN {s}.groups g ON g.queue = q.name AND g.grp = %(g)s
                    WHERE q.name = %(q)s""",
                {"q": queue, "g": group},
            ).fetchone()
            if row is None:
                raise _NoQueue
            next_seq, cursor, pending, retained = row
            if cursor is None:  # the group has not read yet: everything retained
                return int(retained)
            # sequence numbers are dense, so the unread tail is next_seq - cursor
            return int(next_seq - cursor + pending)

        try:
            return self._tx(f"backlog {queue!r}", backlog)
        except _NoQueue:
            raise self._no_queue(queue) from None

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
