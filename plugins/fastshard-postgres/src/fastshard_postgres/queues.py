"""The queue half of the PostgreSQL backend: tables ``queues``, ``messages``, ``groups``, ``pending``.

Publishers of a queue serialize on its row in ``queues`` and take dense sequence numbers
from it, so a reader never sees seq n+1 committed before seq n. Consumers of one group
take turns on the group's row in ``groups`` (one short transaction each), which keeps the
group's deliveries in publish order; different groups never wait for each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from fastshard.backends.base import Message
from fastshard.errors import InvalidValueError
from fastshard_postgres.listen import QueueWaker
from fastshard_postgres.schema import queue_wakeup_channel

T = TypeVar("T")
Conn = psycopg.Connection


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
