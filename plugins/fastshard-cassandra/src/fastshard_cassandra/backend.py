"""The Cassandra backend: versioned key-value, counters and leases with lightweight transactions.

Every write that must not race is a lightweight transaction (``IF ...``, Paxos) read back at
SERIAL consistency, so exactly one of several concurrent writers wins. Counters are plain
``bigint`` columns updated by compare-and-set, *not* Cassandra counter columns: a counter
column increment that times out cannot be retried safely (it may apply twice), which would
hand out an ID block twice. Leases store their expiry time and a fencing token; the token
lives in its own row that never expires, so it only ever grows.

Queues are not offered (a Cassandra table is a poor queue: tombstones on every ack).

Statements are prepared, so the token-aware load-balancing policy can send each one to a
replica that owns its partition.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

from fastshard.backends.base import (
    COUNTERS,
    KV,
    LEASES,
    Backend,
    LeaseInfo,
    Subscription,
    Versioned,
)
from fastshard.backends.retry import call_with_retry
from fastshard.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidValueError,
    check_finite,
    check_int,
)
from fastshard_cassandra.schema import SCHEMA, validate_keyspace
from fastshard_cassandra.subscription import PollingSubscription

T = TypeVar("T")
_TRANSIENT = (NoHostAvailable, OperationTimedOut, ReadTimeout, WriteTimeout, Unavailable)
_CAS_ROUNDS = 64  # compare-and-set attempts under contention before giving up


def _now_ms() -> int:
    return int(time.time() * 1000)


class CassandraBackend(Backend):
    """Metadata, counters and leases in Cassandra (or ScyllaDB, which speaks the same CQL LWT).

    Options: ``hosts`` (list or comma-separated str), ``port``, ``keyspace``,
    ``replication`` (the keyspace's replication map, used when creating it),
    ``local_dc`` (for DC-aware token-aware routing), ``username``/``password``,
    ``timeout`` (seconds per request), ``retries``, ``poll_interval`` (subscriptions).
    The keyspace and tables are created if missing.
    """

    name = "cassandra"
    capabilities = frozenset({KV, COUNTERS, LEASES})

    def __init__(
        self,
        hosts: str | Iterable[str] = "127.0.0.1",
        *,
        port: int = 9042,
        keyspace: str = "fastshard",
        replication: dict[str, Any] | None = None,
        local_dc: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        poll_interval: float = 0.1,
    ) -> None:
        host_list = [h.strip() for h in hosts.split(",")] if isinstance(hosts, str) else list(hosts)
        if not host_list or not all(isinstance(h, str) and h for h in host_list):
            raise InvalidValueError(f"hosts must name at least one Cassandra host, got {hosts!r}")
        self.hosts = host_list
        self.port = check_int("port", port, 1, 65_535)
        self.keyspace = validate_keyspace(keyspace)
        self.replication = replication or {"class": "SimpleStrategy", "replication_factor": 1}
        if not isinstance(self.replication, dict) or "class" not in self.replication:
            raise InvalidValueError(f"replication must be a dict with a 'class', got {replication!r}")
        t = check_finite("timeout", timeout)
        if not 0.05 <= t <= 3600:
            raise InvalidValueError(f"timeout must be in [0.05, 3600] seconds, got {timeout}")
        self.timeout = t
        self.retries = check_int("retries", retries, 1, 100)
        pi = check_finite("poll_interval", poll_interval)
        if not 0.005 <= pi <= 60:
            raise InvalidValueError(f"poll_interval must be in [0.005, 60] seconds, got {poll_interval}")
        self.poll_interval = pi
        self._local_dc = local_dc
        self._auth = (username, password) if username is not None else None
        self._lock = threading.Lock()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._stmts: dict[str, Any] = {}

    # ------------------------------------------------------------------ connection
    def _connect(self) -> Session:
        with self._lock:
            if self._session is not None:
                return self._session
            profile = ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self._local_dc)),
                consistency_level=ConsistencyLevel.LOCAL_QUORUM,
                serial_consistency_level=ConsistencyLevel.SERIAL,
                request_timeout=self.timeout,
            )
            kwargs: dict[str, Any] = {}
            if self._auth is not None:
                from cassandra.auth import PlainTextAuthProvider

                kwargs["auth_provider"] = PlainTextAuthProvider(*self._auth)
            cluster = Cluster(self.hosts, port=self.port, connect_timeout=self.timeout,
                              execution_profiles={EXEC_PROFILE_DEFAULT: profile}, **kwargs)
            try:
                session = cluster.connect()
                repl = ", ".join(f"'{k}': {v!r}" for k, v in self.replication.items())
                session.execute(
                    f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = {{{repl}}}"
                )
                session.set_keyspace(self.keyspace)
                for ddl in SCHEMA:
                    session.execute(ddl)
                self._stmts = {name: session.prepare(cql) for name, cql in _STATEMENTS.items()}
            except BaseException:
                cluster.shutdown()
                raise
            self._cluster, self._session = cluster, session
            return session

    def _run(self, fn: Callable[[Session], T], what: str) -> T:
        """``fn(session)`` with retries on transient errors; only for idempotent work."""
        def attempt() -> T:
            return fn(self._connect())

        return call_with_retry(attempt, what=f"{what} (cassandra {','.join(self.hosts)})",
                               retry_on=_TRANSIENT, attempts=self.retries)

    def _exec(self, name: str, params: tuple, *, serial: bool = False) -> Any:
        def go(s: Session) -> Any:
            stmt = self._stmts[name].bind(params)
            if serial:  # a linearizable read: sees every committed LWT
                stmt.consistency_level = ConsistencyLevel.SERIAL
            return s.execute(stmt)

        return self._run(go, name)

    def _lwt(self, name: str, params: tuple, check: Callable[[], bool]) -> bool:
        """Run a conditional write; returns whether it applied.

        A timed-out LWT may or may not have applied. Repeating it blindly could apply it
        twice (a counter bumped twice), so instead ``check()`` reads at SERIAL whether our
        write is now in place.
        """
        def go(s: Session) -> bool:
            try:
                return bool(s.execute(self._stmts[name].bind(params)).was_applied)
            except WriteTimeout:
                return check()

        return self._run(go, name)

    def ping(self) -> None:
        self._run(lambda s: s.execute("SELECT release_version FROM system.local"), "ping")

    def close(self) -> None:
        with self._lock:
            cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            cluster.shutdown()

    # ------------------------------------------------------------------ key-value
    def _kv_get(self, key: str) -> Versioned | None:
        row = self._exec("kv_get", (key,), serial=True).one()
        return None if row is None else Versioned(bytes(row.value or b""), int(row.version))

    def _kv_cas(self, key: str, value: bytes, expected_version: int) -> int | None:
        new = expected_version + 1

        def ours() -> bool:
            # After a timeout: our write is in place iff version and value are ours. (Two
            # writers racing with byte-identical values would both see "theirs": harmless,
            # the stored state is the same either way.)
            cur = self._kv_get(key)
            return cur is not None and cur.version == new and cur.value == value

        if expected_version == 0:
            ok = self._lwt("kv_insert", (key, value, new), ours)
        else:
            ok = self._lwt("kv_update", (value, new, key, expected_version), ours)
        return new if ok else None

    def _kv_set(self, key: str, value: bytes) -> int:
        for _ in range(_CAS_ROUNDS):
            cur = self._kv_get(key)
            done = self._kv_cas(key, value, cur.version if cur else 0)
            if done is not None:
                return done
        raise BackendError(f"kv_set of {key!r} lost {_CAS_ROUNDS} compare-and-set rounds in a row")

    def _kv_delete(self, key: str) -> bool:
        # a timed-out delete is reported as done if the key is gone (deleted by us or another)
        return self._lwt("kv_delete", (key,), lambda: self._kv_get(key) is None)

    def _kv_keys(self, prefix: str) -> Iterable[str]:
        # A full scan, paged by the driver: metadata tables are small. Keep big key sets in
        # a backend with ordered keys (Redis, PostgreSQL).
        rows = self._exec("kv_keys", ())
        return [r.key for r in rows if r.key.startswith(prefix)]

    def _notify(self, channel: str, payload: bytes) -> None:
        # rows expire after a minute: subscribers poll far more often than that
        self._exec("notify", (channel, payload))

    def _subscribe(self, channel: str) -> Subscription:
        since = self._exec("now", ()).one()[0]
        return PollingSubscription(
            lambda after: [(r.at, bytes(r.payload)) for r in self._exec("poll", (channel, after))],
            since, self.poll_interval,
        )

    # ------------------------------------------------------------------ counters
    def _counter_add(self, name: str, delta: int) -> int:
        for _ in range(_CAS_ROUNDS):
            row = self._exec("counter_get", (name,), serial=True).one()
            if row is None:
                if delta == 0:
                    return 0
                applied = self._lwt("counter_insert", (name, delta), self._unknown(name))
            else:
                cur = int(row.value)
                new = cur + delta
                if not -(2**63) <= new < 2**63:
                    raise InvalidValueError(f"delta would take counter {name!r} outside int64, got {delta}")
                if delta == 0:
                    return cur
                applied = self._lwt("counter_update", (new, name, cur), self._unknown(name))
            if applied:
                return delta if row is None else int(row.value) + delta
        raise BackendError(f"counter {name!r}: lost {_CAS_ROUNDS} compare-and-set rounds in a row")

    @staticmethod
    def _unknown(name: str) -> Callable[[], bool]:
        """For a timed-out counter CAS: its outcome cannot be told apart from a later writer's,
        and guessing wrong would hand out an ID block twice. Surface it instead: the caller
        treats the block as lost (the counter may have moved; IDs are never reused)."""
        def fail() -> bool:
            raise BackendUnavailableError(
                f"counter {name!r}: the compare-and-set timed out and its outcome is unknown; "
                "the counter may have advanced (never reuse the old value)"
            )
        return fail

    # ------------------------------------------------------------------ leases
    def _next_token(self, name: str) -> int:
        for _ in range(_CAS_ROUNDS):
            row = self._exec("token_get", (name,), serial=True).one()
            # a timed-out bump counts as lost and is redone with a fresh read: at worst a gap
            if row is None:
                if self._lwt("token_insert", (name,), lambda: False):
                    return 1
            elif self._lwt("token_update", (int(row.fence) + 1, name, int(row.fence)), lambda: False):
                return int(row.fence) + 1
        raise BackendError(f"lease {name!r}: lost {_CAS_ROUNDS} token rounds in a row")

    def _lease_acquire(self, name: str, owner: str, ttl: float) -> int | None:
        row = self._exec("lease_get", (name,), serial=True).one()
        now = _now_ms()
        expires = now + int(ttl * 1000)
        keep = math.ceil(ttl) + 60  # row TTL: garbage collection only; expiry is expires_at
        if row is not None and row.expires_at > now:
            if row.owner != owner:
                return None
            ok = self._lwt("lease_extend", (keep, owner, row.fence, expires, name, owner, row.fence),
                           self._extended(name, owner, int(row.fence), expires))
            return int(row.fence) if ok else None
        # a token bump that timed out is simply re-done: a gap in tokens is harmless, they only grow
        token = self._next_token(name)

        def mine() -> bool:
            cur = self._exec("lease_get", (name,), serial=True).one()
            return cur is not None and cur.owner == owner and int(cur.fence) == token

        if row is None:
            ok = self._lwt("lease_insert", (name, owner, token, expires, keep), mine)
        else:
            ok = self._lwt("lease_takeover", (keep, owner, token, expires, name, now), mine)
        return token if ok else None

    def _lease_renew(self, name: str, owner: str, token: int, ttl: float) -> bool:
        row = self._exec("lease_get", (name,), serial=True).one()
        if row is None or row.owner != owner or int(row.fence) != token:
            return False
        expires = _now_ms() + int(ttl * 1000)
        return self._lwt("lease_extend", (math.ceil(ttl) + 60, owner, token, expires, name, owner, token),
                         self._extended(name, owner, token, expires))

    def _extended(self, name: str, owner: str, token: int, expires: int) -> Callable[[], bool]:
        def check() -> bool:
            cur = self._exec("lease_get", (name,), serial=True).one()
            return (cur is not None and cur.owner == owner and int(cur.fence) == token
                    and int(cur.expires_at) == expires)
        return check

    def _lease_release(self, name: str, owner: str, token: int) -> bool:
        def gone() -> bool:  # a timed-out delete applied if the lease is no longer ours
            cur = self._exec("lease_get", (name,), serial=True).one()
            return cur is None or cur.owner != owner or int(cur.fence) != token
        return self._lwt("lease_delete", (name, owner, token), gone)

    def _lease_info(self, name: str) -> LeaseInfo | None:
        row = self._exec("lease_get", (name,), serial=True).one()
        now = _now_ms()
        if row is None or row.expires_at <= now:
            return None
        return LeaseInfo(row.owner, int(row.fence), (row.expires_at - now) / 1000.0)

# expires_at is a bigint of milliseconds since the epoch on the client's clock (see docs)
_STATEMENTS = {
    "kv_get": "SELECT value, version FROM kv WHERE key = ?",
    "kv_insert": "INSERT INTO kv (key, value, version) VALUES (?, ?, ?) IF NOT EXISTS",
    "kv_update": "UPDATE kv SET value = ?, version = ? WHERE key = ? IF version = ?",
    "kv_delete": "DELETE FROM kv WHERE key = ? IF EXISTS",
    "kv_keys": "SELECT key FROM kv",
    "notify": "INSERT INTO notifications (channel, at, payload) VALUES (?, now(), ?) USING TTL 60",
    "now": "SELECT now() FROM system.local",
    "poll": "SELECT at, payload FROM notifications WHERE channel = ? AND at > ?",
    "counter_get": "SELECT value FROM counters WHERE name = ?",
    "counter_insert": "INSERT INTO counters (name, value) VALUES (?, ?) IF NOT EXISTS",
    "counter_update": "UPDATE counters SET value = ? WHERE name = ? IF value = ?",
    "token_get": "SELECT fence FROM lease_tokens WHERE name = ?",
    "token_insert": "INSERT INTO lease_tokens (name, fence) VALUES (?, 1) IF NOT EXISTS",
    "token_update": "UPDATE lease_tokens SET fence = ? WHERE name = ? IF fence = ?",
    "lease_get": "SELECT owner, fence, expires_at FROM leases WHERE name = ?",
    "lease_insert": "INSERT INTO leases (name, owner, fence, expires_at) VALUES (?, ?, ?, ?) "
                    "IF NOT EXISTS USING TTL ?",
    # every column is rewritten so that all of them get the new row TTL
    "lease_extend": "UPDATE leases USING TTL ? SET owner = ?, fence = ?, expires_at = ? "
                    "WHERE name = ? IF owner = ? AND fence = ?",
    "lease_takeover": "UPDATE leases USING TTL ? SET owner = ?, fence = ?, expires_at = ? "
                      "WHERE name = ? IF expires_at < ?",
    "lease_delete": "DELETE FROM leases WHERE name = ? IF owner = ? AND fence = ?",
}
