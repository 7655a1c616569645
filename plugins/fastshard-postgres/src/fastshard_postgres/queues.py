"""The queue half of the PostgreSQL backend: tables ``queues``, ``messages``, ``groups``, ``pending``.

Publishers of a queue serialize on its row in ``queues`` and take dense sequence numbers
from it, so a reader never sees seq n+1 committed before seq n. A single message is
published by one autocommit statement (see :meth:`QueueTables._publish_one`). Consumers of one group
take turns on the group's row in ``groups`` (one short transaction each), which keeps the
group's deliveries in publish order; different groups never wait for each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg

from fastshard.backends.base import Message
from fastshard.backends.request_ids import REQUEST_IDS
from fastshard.backends.stamp import checked_stamped_batch
from fastshard.errors import InvalidValueError, UnknownQueueError
from fastshard_postgres.copy_rows import (
    COLUMNS,
    COPY_OPTIONS,
    copy_buffer,
    message_rows,
    stamped_headers_json,
)
from fastshard_postgres.listen import QueueWaker
from fastshard_postgres.prepared import Statement
from fastshard_postgres.schema import queue_wakeup_channel

T = TypeVar("T")
Conn = psycopg.Connection
#: headers as compact JSON text, cast to jsonb by the server (a prebuilt encoder: json.dumps
#: with options builds one per call)
_headers_json = json.JSONEncoder(separators=(",", ":")).encode


def _stamped_prefix(checked: Mapping[str, str], given: Mapping[str, str] | None) -> bytes:
    """The start of each routed row's headers JSON: the caller's headers encoded once, left
    open for the row's ``fs-seq``/``fs-hash`` (formatted per row, as in fastshard_redis.stamped)."""
    return (_headers_json(checked)[:-1] + ",").encode() if given and checked else b"{"
_TEXT, _BYTEA, _INT8 = 25, 17, 20
#: the key and value go in binary (no escaping), everything else as text
_PUBLISH_ONE_FORMATS = (0, 0, 1, 1, 0, 0, 0)


class _NoQueue(Exception):
    """Raised inside a transaction (rolling it back) when the queue does not exist."""


class QueueTables:
    """The ``queues`` family of :class:`~fastshard_postgres.backend.PostgresBackend`."""

    # provided by PostgresBackend
    schema: str
    visibility_timeout: float
    _s: str
    _waker: QueueWaker
    _tx: Callable[..., Any]
    _tx_once: Callable[..., str]
    _once: Callable[..., str]
    _call: Callable[..., Any]
    _error: Callable[[str, psycopg.Error], Exception]
    _ready: bool
    _ensure_tables: Callable[[], None]
    _maybe_prune: Callable[[], None]
    _pool: Any
    _wake_channel_b: bytes
    _publish_one_stmt: Statement

    def _create_queue(self, queue: str) -> None:
        self._tx(
            f"create queue {queue!r}",
            lambda c: c.execute(
                f"INSERT INTO {self._s}.queues (name) VALUES (%s) ON CONFLICT DO NOTHING", (queue,)
            ),
        )

    def _delete_queue(self, queue: str) -> None:
        def delete(c: Conn) -> None:
            # The queue row first (its groups go with it, by the foreign key): publishers and
            # consumers that race this wait for it and then find the queue gone.
            c.execute(f"DELETE FROM {self._s}.queues WHERE name = %s", (queue,))
            for table in ("pending", "messages"):
                c.execute(f"DELETE FROM {self._s}.{table} WHERE queue = %s", (queue,))

        self._tx(f"delete queue {queue!r}", delete)

    def _list_queues(self) -> Iterable[str]:
        rows = self._tx("list queues", lambda c: c.execute(f"SELECT name FROM {self._s}.queues").fetchall())
        return [r[0] for r in rows]

    def _no_queue(self, queue: str) -> UnknownQueueError:
        return UnknownQueueError(f"queue {queue!r} does not exist; create_queue it first")

    def _publish_batch(
        self, queue: str, batch: list[tuple[bytes, bytes]], headers: dict[str, str], epoch: int
    ) -> list[str]:
        if len(batch) == 1:
            return [self._publish_one(queue, batch[0], headers, epoch)]
        hdr = _headers_json(headers).encode() if headers else None
        try:
            first = int(self._tx_once(
                f"publish to {queue!r}", lambda c: self._publish_rows(c, queue, batch, hdr, epoch)
            ))
        except _NoQueue:
            raise self._no_queue(queue) from None
        return [str(first + i) for i in range(len(batch))]

    def publish_stamped_batch(
        self, queue: str, keys: Sequence[bytes], values: Sequence[bytes | str], epoch: int,
        first_seq: int, key_hashes: Sequence[int], headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """One queue's part of ``Router.publish_many`` (its ``StampedBatchPublisher`` hook):
        validated like ``publish_batch``, then one transaction (one COPY) for the whole group,
        each row with its own ``fs-seq``/``fs-hash`` headers; all of it is published or none."""
        items, hdrs, epoch = checked_stamped_batch(self, queue, keys, values, epoch, first_seq,  # type: ignore[arg-type]
                                                   key_hashes, headers)
        row_headers = stamped_headers_json(_stamped_prefix(hdrs, headers), first_seq, key_hashes)
        try:
            first = int(self._tx_once(
                f"publish to {queue!r}", lambda c: self._publish_rows(c, queue, items, row_headers, epoch)
            ))
        except _NoQueue:
            raise self._no_queue(queue) from None
        return [str(first + i) for i in range(len(items))]

    def publish_stamped_groups(
        self, groups: Sequence[tuple[str, Sequence[bytes], Sequence[bytes | str], int, Sequence[int]]],
        epoch: int, headers: Mapping[str, str] | None = None,
    ) -> list[list[str]]:
        """All of ``Router.publish_many`` in one transaction (its optional
        ``publish_stamped_groups`` hook): every group ``(queue, keys, values, first_seq,
        key_hashes)`` validated as by :meth:`publish_stamped_batch`, then one COPY of every
        row; all groups are published or none. Returns the ids per group."""
        checked = []
        for queue, keys, values, first_seq, key_hashes in groups:
            items, hdrs, epoch = checked_stamped_batch(self, queue, keys, values, epoch, first_seq,  # type: ignore[arg-type]
                                                       key_hashes, headers)
            checked.append((queue, items, first_seq, key_hashes))
        if not checked:
            return []
        prefix = _stamped_prefix(hdrs, headers)

        def write(c: Conn) -> str:
            s = self._s
            names = [g[0] for g in checked]
            counts = [len(g[1]) for g in checked]
            # queue rows locked in name order first, so two batches never wait for each other
            # in a cycle; then every group's numbers taken in one statement
            locked = {r[0] for r in c.execute(
                f"SELECT name FROM {s}.queues WHERE name = ANY(%s) ORDER BY name FOR UPDATE", (names,))}
            for queue in names:
                if queue not in locked:
                    raise _NoQueue(queue)
            firsts: dict[str, int] = {
                name: last - n + 1 for name, last, n in c.execute(
                    f"UPDATE {s}.queues q SET next_seq = q.next_seq + g.n FROM unnest(%s::text[], %s::int8[]) "
                    "AS g(name, n) WHERE q.name = g.name RETURNING q.name, q.next_seq, g.n", (names, counts))}
            rows: list[bytes] = []
            for queue, items, first_seq, key_hashes in checked:
                message_rows(queue, firsts[queue], items, stamped_headers_json(prefix, first_seq, key_hashes),
                             epoch, rows)
            with c.cursor().copy(f"COPY {s}.messages {COLUMNS} FROM STDIN {COPY_OPTIONS}") as copy:
                copy.write(copy_buffer(rows))
            c.execute("SELECT pg_notify(%s, q) FROM unnest(%s::text[]) AS q",
                      (queue_wakeup_channel(self.schema), names))
            return ",".join(str(firsts[q]) for q, _, _, _ in checked)

        try:
            firsts = self._tx_once(f"publish to {len(checked)} queues", write).split(",")
        except _NoQueue as exc:
            raise self._no_queue(str(exc.args[0])) from None
        return [[str(int(first) + i) for i in range(len(items))]
                for first, (_, items, _, _) in zip(firsts, checked, strict=True)]

    def _publish_rows(
        self, c: Conn, queue: str, batch: list[tuple[bytes, bytes]], hdr: bytes | list[bytes] | None,
        epoch: int,
    ) -> str:
        """Inside a transaction: append ``batch``; returns the first seq (as a str). ``hdr`` is
        the batch's headers as JSON text, or a list of each row's (a routed batch)."""
        s = self._s
        n = len(batch)
        # Taking the queue row's lock serializes publishers of this queue until COMMIT,
        # so sequence numbers become visible in order and without gaps.
        row = c.execute(
            f"UPDATE {s}.queues SET next_seq = next_seq + %s WHERE name = %s RETURNING next_seq",
            (n, queue),
        ).fetchone()
        if row is None:
            raise _NoQueue
        first = row[0] - n + 1
        rows: list[bytes] = []
        message_rows(queue, first, batch, hdr, epoch, rows)
        with c.cursor().copy(f"COPY {s}.messages {COLUMNS} FROM STDIN {COPY_OPTIONS}") as copy:
            copy.write(copy_buffer(rows))
        c.execute("SELECT pg_notify(%s, %s)", (queue_wakeup_channel(self.schema), queue))
        return str(first)

    def _publish_one_statement(self) -> Statement:
        """The statement behind :meth:`_publish_one` (built once per backend)."""
        s = self._s
        # One statement, committed on its own: bump the queue's sequence (the row lock
        # serializes publishers until this commits, so seqs become visible densely and in
        # order), record the request id, insert the message, and queue the wake-up NOTIFY
        # (delivered at commit). No row when the queue does not exist.
        sql = f"""
            WITH q AS (UPDATE {s}.queues SET next_seq = next_seq + 1 WHERE name = $1
                       RETURNING name, next_seq),
                 r AS (INSERT INTO {s}.requests (id, result) SELECT $2, next_seq::text FROM q),
                 m AS (INSERT INTO {s}.messages (queue, seq, key, value, headers, epoch)
                       SELECT name, next_seq, $3, $4, $5::jsonb, $6 FROM q)
            SELECT next_seq, pg_notify($7, name) FROM q"""
        # queue, request id, key, value, headers (JSON text), epoch, wake-up channel
        return Statement("fastshard_publish_one", sql, [_TEXT, _TEXT, _BYTEA, _BYTEA, _TEXT, _INT8, _TEXT])

    def _publish_one(self, queue: str, item: tuple[bytes, bytes], headers: dict[str, str], epoch: int) -> str:
        """One message in one round trip: a prepared autocommit statement.

        Its request id goes into ``requests`` in the same statement. If the reply is lost
        the retry is the batch path's transaction under the same id: claiming the id waits
        for a first attempt still in flight and then returns its stored seq, and a first
        attempt arriving after the retry claimed the id fails on the primary key and rolls
        back whole, so the message lands once either way.
        """
        request_id = REQUEST_IDS.next()
        key, value = item
        # text parameters are ASCII: validated queue names, hex ids, JSON with \u escapes
        params = (queue.encode(), request_id.encode(), key, value,
                  _headers_json(headers).encode() if headers else None, b"%d" % epoch, self._wake_channel_b)
        # The first attempt runs inline, without the retry machinery: this path runs once
        # per message and every Python layer around the round trip shows in its cost.
        what = f"publish to {queue!r}"
        if self._ready:
            pool = self._pool
            try:
                conn = pool.borrow()
                try:
                    res = self._publish_one_stmt.run(conn, params, _PUBLISH_ONE_FORMATS)
                finally:
                    pool.give_back(conn)
            except psycopg.OperationalError:
                # may or may not have committed: retried below under the same request id,
                # on fresh connections (after a server restart the idle ones are dead too)
                self._pool.discard_idle()
                what += " (retrying a failed first attempt)"
            except psycopg.Error as exc:
                raise self._error(what, exc) from exc
            else:
                if res.ntuples == 0:
                    raise self._no_queue(queue)
                self._maybe_prune()
                return res.get_value(0, 0).decode()  # type: ignore[union-attr]

        def publish(c: Conn) -> str:
            return self._publish_rows(c, queue, [item], _headers_json(headers).encode() if headers else None, epoch)

        # Before the tables exist (the first call creates them), or after a failed first
        # attempt: the batch path's transaction, which claims the request id first.
        try:
            seq = self._tx(what, lambda c: self._once(c, request_id, publish))
        except _NoQueue:
            raise self._no_queue(queue) from None
        self._maybe_prune()
        return seq  # type: ignore[no-any-return]

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
        # A new group starts at the oldest retained message. The foreign key fails the
        # insert if delete_queue removed the queue since the check above.
        try:
            c.execute(
                f"""INSERT INTO {s}.groups (queue, grp, cursor)
                    SELECT %(q)s, %(g)s, COALESCE(
                        (SELECT min(seq) FROM {s}.messages WHERE queue = %(q)s),
                        (SELECT next_seq + 1 FROM {s}.queues WHERE name = %(q)s)) - 1
                    ON CONFLICT DO NOTHING""",
                {"q": queue, "g": group},
            )
        except (psycopg.errors.ForeignKeyViolation, psycopg.errors.NotNullViolation):
            # the queue's row is gone: no key to refer to, and no next_seq for the cursor
            raise _NoQueue from None
        # The group's row lock: consumers of one group take turns, keeping publish order.
        row = c.execute(
            f"SELECT cursor FROM {s}.groups WHERE queue = %s AND grp = %s FOR UPDATE", (queue, group)
        ).fetchone()
        if row is None:  # deleted (with its queue) while we waited for the lock
            raise _NoQueue
        cursor = row[0]
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
