"""The single-message publish path of the Redis backend: one ``XADD`` per message.

A routed publish sends one message and waits for its id, so its cost is one round trip
plus whatever the client does around it. The batch path (a Lua script that checks and
writes a de-duplication record) costs a script call and two extra keys per message; this
path costs one command::

    XADD <stream> NOMKSTREAM * k <key> v <value> e <epoch> [h <headers>] r <request id>

``NOMKSTREAM`` makes a missing queue a nil reply instead of a new stream. The command is
packed here from a per-stream prefix and exchanged on a connection of this path's own
(redis-py's ``Connection`` with its hiredis parser, created from the client's pool
settings, so TLS, AUTH, db and client name are the same), which skips redis-py's
per-command work: pool checkout, argument encoding, response callbacks.

Retry without duplicates. If the exchange fails with a connection error or timeout the
first attempt may or may not have run, and may even still run later (a timed-out command
can sit in the server's socket buffer while the server is busy). So before retrying:

1. the failed attempt is fenced off: ``CLIENT KILL ID <id> ADDR <addr>`` of its connection
   (id and address were read with ``CLIENT INFO`` when it connected). Once the kill has
   answered, that connection's command has either run or never will;
2. the retry runs :data:`fastshard_redis.scripts.PUBLISH_RETRY`, which looks for the request
   id among entries no older than ``server time - (time since the first send + 1 s)``, and
   among the ids that ACK remembered when it trimmed such entries, and only adds the entry
   if it finds neither. The script is one atomic step, and each failed retry is fenced off
   the same way before the next.

A retry later than ``dedup_ttl`` after the first send could miss a trimmed entry whose
record expired; it is not attempted and the caller gets :class:`BackendUnavailableError`
saying the message may or may not have been published.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from fastshard.backends.request_ids import REQUEST_IDS
from fastshard.errors import BackendError, BackendUnavailableError, UnknownQueueError
from fastshard_redis import scripts

if TYPE_CHECKING:
    from fastshard_redis.backend import RedisBackend

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
#: added to the time since the first send when bounding the retry's search: covers the
#: server clock stepping forward in between (stream ids follow the server's clock)
RETRY_MARGIN_MS = 1000
#: values above this many bytes are sent as their own buffer instead of being copied
_COPY_LIMIT = 16384
_PREFIX_CACHE = 65536


_fork_generation = [0]


def _after_fork_in_child() -> None:
    _fork_generation[0] += 1  # (REQUEST_IDS draws its new prefix itself)


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Link:
    """One connection of this path and what fencing it off needs (its id and address)."""

    __slots__ = ("conn", "ready", "client_id", "addr")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.ready = False
        self.client_id: bytes | None = None
        self.addr: bytes | None = None

    def open(self) -> None:
        conn = self.conn
        conn.disconnect()
        conn.connect()
        conn.send_command("CLIENT", "INFO")
        try:
            info = dict(
                part.split(b"=", 1) for part in conn.read_response().split() if b"=" in part
            )
        except redis.exceptions.ResponseError:
            info = {}  # not permitted by an ACL: such a connection cannot be fenced off
        self.client_id, self.addr = info.get(b"id"), info.get(b"addr")
        self.ready = True

    def command(self, *args: Any) -> Any:
        self.conn.send_packed_command(self.conn.pack_command(*args), check_health=False)
        return self.conn.read_response()


class SinglePublisher:
    """Publishes one message per call with one ``XADD``; thread-safe (one connection per
    concurrent caller, at most ``max_connections``)."""

    def __init__(self, backend: RedisBackend, max_connections: int) -> None:
        pool = backend._client.connection_pool
        self._new_connection = lambda: pool.connection_class(**pool.connection_kwargs)
        self._backend = backend
        self._max = max_connections
        self._idle: list[_Link] = []
        self._created = 0
        self._waiting = 0
        self._cv = threading.Condition()
        self._prefixes: dict[str, tuple[bytes, bytes]] = {}
        self._generation = _fork_generation[0]
        self._closed = False

    # ------------------------------------------------------------------ connections
    def _take(self) -> _Link:
        if self._generation != _fork_generation[0]:
            self._forget_after_fork()
        try:
            return self._idle.pop()  # list.pop is atomic: no lock on the common path
        except IndexError:
            return self._take_slow()

    def _take_slow(self) -> _Link:
        with self._cv:
            self._waiting += 1
            try:
                while True:
                    if self._closed:
                        raise BackendUnavailableError("the Redis backend was closed")
                    if self._idle:
                        return self._idle.pop()
                    if self._created < self._max:
                        self._created += 1
                        return _Link(self._new_connection())
                    self._cv.wait(0.1)
            finally:
                self._waiting -= 1

    def _give(self, link: _Link) -> None:
        self._idle.append(link)
        if self._waiting:  # read without the lock; a waiter re-checks _idle under it
            with self._cv:
                self._cv.notify()
        if self._closed:  # closed while this link was out: do not leave it connected
            self.close()

    def _forget_after_fork(self) -> None:
        # The parent's sockets belong to the parent: drop them without closing.
        with self._cv:
            self._idle, self._created = [], 0
            self._generation = _fork_generation[0]

    def close(self) -> None:
        with self._cv:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cv.notify_all()
        for link in idle:
            link.conn.disconnect()

    # ------------------------------------------------------------------ publishing
    def _prefix(self, stream: str, with_headers: bool) -> bytes:
        cached = self._prefixes.get(stream)
        if cached is None:
            if len(self._prefixes) >= _PREFIX_CACHE:
                self._prefixes.clear()
            s = stream.encode()
            tail = b"$4\r\nXADD\r\n$%d\r\n%s\r\n$10\r\nNOMKSTREAM\r\n$1\r\n*\r\n$1\r\nk\r\n" % (len(s), s)
            # XADD, stream, NOMKSTREAM, *, then k v e r (and h) with their values
            cached = self._prefixes[stream] = (b"*12\r\n" + tail, b"*14\r\n" + tail)
        return cached[with_headers]

    def pack(self, stream: str, key: bytes, value: bytes, e: bytes, headers: bytes, rid: bytes) -> tuple[bytes, ...]:
        """The XADD in RESP, as buffers to send one after the other."""
        h = b"$1\r\nh\r\n$%d\r\n%s\r\n" % (len(headers), headers) if headers else b""
        head = b"%s$%d\r\n%s\r\n$1\r\nv\r\n$%d\r\n" % (
            self._prefix(stream, bool(headers)), len(key), key, len(value))
        tail = b"\r\n$1\r\ne\r\n$%d\r\n%s\r\n%s$1\r\nr\r\n$%d\r\n%s\r\n" % (len(e), e, h, len(rid), rid)
        return (head, value, tail) if len(value) > _COPY_LIMIT else (head + value + tail,)

    def publish(self, queue: str, stream: str, key: bytes, value: bytes, headers: bytes, epoch: int) -> str:
        """Append one entry; ``headers`` is its JSON (``b''`` for none). Returns the entry id."""
        rid = REQUEST_IDS.next_bytes()
        e = b"%d" % epoch
        packed = self.pack(stream, key, value, e, headers, rid)
        started = time.monotonic()
        link = self._take()
        sent = False
        try:
            if not link.ready:
                link.open()
            sent = True
            link.conn.send_packed_command(packed, check_health=False)
            reply = link.conn.read_response()
        except TRANSIENT_ERRORS as exc:
            link.ready = False
            fence = (link.client_id, link.addr, exc) if sent else None
            self._give(link)
            fields = [b"k", key, b"v", value, b"e", e, *((b"h", headers) if headers else ()), b"r", rid]
            return self._retry(queue, stream, rid, fields, started, fence, exc)
        except redis.exceptions.ResponseError as exc:
            self._give(link)
            raise BackendError(f"redis publish to {queue!r} failed: {exc}") from exc
        except BaseException:
            link.ready = False  # e.g. interrupted mid-reply: this connection is out of step
            self._give(link)
            raise
        self._give(link)
        if reply is None:
            raise UnknownQueueError(f"queue {queue!r} does not exist; create_queue it first")
        return reply.decode()

    # ------------------------------------------------------------------ retrying
    def _retry(
        self,
        queue: str,
        stream: str,
        rid: bytes,
        fields: list[bytes],
        started: float,
        fence: tuple[bytes | None, bytes | None, BaseException] | None,
        error: BaseException,
    ) -> str:
        b = self._backend
        what = f"redis publish to {queue!r} on {b.url}"
        window_ms = b.dedup_ttl * 1000
        delay = b.retry_base_delay
        for _attempt in range(2, b.retry_attempts + 1):
            time.sleep(delay * (0.5 + random.random()))
            delay = min(b.retry_max_delay, delay * 2)
            lookback_ms = int((time.monotonic() - started) * 1000) + RETRY_MARGIN_MS
            if lookback_ms > window_ms:
                raise BackendUnavailableError(
                    f"{what}: still failing {lookback_ms / 1000:.1f} s after the first attempt, "
                    f"longer than dedup_ttl ({b.dedup_ttl} s) allows a retry to check; the message "
                    f"may or may not have been published ({type(error).__name__}: {error})"
                ) from error
            link = self._take()
            sent = False
            try:
                if not link.ready:
                    link.open()
                if fence is not None:
                    self._fence(link, what, *fence)
                    fence = None
                sent = True
                reply = link.command(
                    "EVAL", scripts.PUBLISH_RETRY, 2, stream, b.keys.trimmed_requests(stream),
                    rid, lookback_ms, window_ms, *fields,
                )
            except TRANSIENT_ERRORS as exc:
                link.ready = False
                error = exc
                if sent:
                    fence = (link.client_id, link.addr, exc)
                continue
            except redis.exceptions.ResponseError as exc:
                if str(exc).startswith("NOQUEUE"):
                    raise UnknownQueueError(
                        f"queue {queue!r} does not exist; create_queue it first"
                    ) from None
                raise BackendError(f"{what} failed: {exc}") from exc
            except BaseException:
                link.ready = False
                raise
            finally:
                self._give(link)
            return reply.decode()  # type: ignore[no-any-return]
        raise BackendUnavailableError(
            f"{what} failed after {b.retry_attempts} attempts: {type(error).__name__}: {error}"
        ) from error

    @staticmethod
    def _fence(
        link: _Link, what: str, client_id: bytes | None, addr: bytes | None, cause: BaseException
    ) -> None:
        """Make sure the connection of a failed attempt can no longer run it."""
        if client_id is not None and addr is not None:
            try:
                link.command("CLIENT", "KILL", "ID", client_id, "ADDR", addr)
                return  # killed now, or it was gone already (0): either way it is done
            except redis.exceptions.ResponseError as exc:
                denied: BaseException = exc
        else:
            denied = BackendError("CLIENT INFO was not permitted when it connected")
        if isinstance(cause, redis.exceptions.ConnectionError):
            return  # the server closed that connection: nothing of it can still run
        raise BackendError(
            f"{what}: the attempt timed out and may still run on the server; it cannot be "
            f"fenced off without CLIENT KILL and CLIENT INFO ({denied}), so it is not retried "
            "and the message may or may not have been published"
        ) from cause
