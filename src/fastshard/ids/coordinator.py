"""The coordinator: host-id leases, block grants with fencing, usage reports (heartbeats).

It is written only against the generic :class:`~fastshard.backends.Backend` API (``kv_get``
/ ``kv_cas`` and ``lease_*``), so it runs on any backend offering ``kv`` and ``leases``: the
embedded memory backend, Redis, PostgreSQL, ... The engine provides the atomicity; nothing
here is a home-made consensus protocol.

Per host id the backend holds:

* a lease ``<ns>.host.<h>`` whose fencing token grows each time the host id changes owner;
* a record ``<ns>/hwm/<h>`` = ``{"position": p, "token": t}``: every position below ``p``
  has been granted, and ``t`` is the highest fencing token that has allocated. A grant is a
  compare-and-set from one record version to the next, so concurrent allocators of one host
  id (threads, forked children) get disjoint blocks; an allocator whose token is below ``t``
  is refused with :class:`LeaseLostError`: once a standby has allocated, a revived old
  owner can never allocate again, even if it still believes it holds the lease;
* a report ``<ns>/report/<h>``: the host's heartbeat (current position, usage of the last
  shard, predicted usage of the next, wall time).

Why ``kv_cas`` rather than ``counter_add`` for grants: a fetch-add cannot check the fencing
token in the same atomic step, nor jump to the start of a new time shard.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from fastshard.backends.base import KV, LEASES, Backend, LeaseInfo
from fastshard.errors import (
    BackendError,
    IdExhaustedError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    check_finite,
    check_int,
    check_positive,
)
from fastshard.ids.layout import DEFAULT_LAYOUT, IdLayout

_NS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
#: compare-and-set attempts before giving up on a grant (only contention makes one fail)
CAS_ATTEMPTS = 64


@dataclass(frozen=True, slots=True)
class Grant:
    """A leased block of positions ``[start, end)`` of one host id, inside one time shard."""

    host_id: int
    start: int
    end: int
    shard: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class HostStatus:
    """What the coordinator knows about one host id."""

    host_id: int
    lease: LeaseInfo | None
    position: int
    token: int
    report: dict[str, Any] | None

    @property
    def failed(self) -> bool:
        """The host id was in use (it allocated) and nobody holds its lease any more."""
        return self.lease is None and self.position > 0


class Coordinator:
    """Leases host ids and grants ID blocks through a backend.

    ``backend`` defaults to a fresh embedded :class:`MemoryBackend`, which is private to
    this process: share one coordinator object between the generators of a process, and use
    a server backend (Redis, PostgreSQL) for several processes or machines.
    """

    def __init__(self, backend: Backend | None = None, *, namespace: str = "ids",
                 layout: IdLayout = DEFAULT_LAYOUT) -> None:
        if backend is None:
            from fastshard.backends.memory import MemoryBackend

            backend = MemoryBackend()
        if not isinstance(backend, Backend):
            raise InvalidTypeError(f"backend must be a fastshard Backend, got {type(backend).__name__}")
        missing = {KV, LEASES} - set(backend.capabilities)
        if missing:
            raise InvalidValueError(
                f"backend must offer 'kv' and 'leases' for ID coordination; "
                f"{backend.name!r} lacks {sorted(missing)}"
            )
        if not isinstance(namespace, str) or not _NS_RE.match(namespace):
            raise InvalidValueError(
                f"namespace must be 1-64 letters, digits, '_' or '-', got {namespace!r}"
            )
        if not isinstance(layout, IdLayout):
            raise InvalidTypeError(f"layout must be an IdLayout, got {type(layout).__name__}")
        self.backend = backend
        self.namespace = namespace
        self.layout = layout

    @property
    def process_local(self) -> bool:
        """True when the backend's state lives in this process only (not shared by a fork)."""
        from fastshard.backends.memory import MemoryBackend

        return isinstance(self.backend, MemoryBackend)

    # ------------------------------------------------------------------ names
    def lease_name(self, host_id: int) -> str:
        return f"{self.namespace}.host.{host_id}"

    def _hwm_key(self, host_id: int) -> str:
        return f"{self.namespace}/hwm/{host_id}"

    def _report_key(self, host_id: int) -> str:
        return f"{self.namespace}/report/{host_id}"

    # ------------------------------------------------------------------ host-id leases
    def acquire_host(self, host_id: int, owner: str, ttl: float, wait: float = 0.0) -> int:
        """Take the lease on ``host_id``; returns its fencing token.

        Waits up to ``wait`` seconds for a current holder's lease to expire (a standby taking
        over a failed host), then raises :class:`LeaseLostError`.
        """
        self.layout.check_host(host_id)
        check_positive("ttl", ttl)
        if check_finite("wait", wait) < 0:
            raise InvalidValueError(f"wait must be >= 0 seconds, got {wait}")
        deadline = time.monotonic() + wait
        while True:
            token = self.backend.lease_acquire(self.lease_name(host_id), owner, ttl)
            if token is not None:
                return token
            left = deadline - time.monotonic()
            if left <= 0:
                held = self.backend.lease_info(self.lease_name(host_id))
                who = f"{held.owner!r} for {held.expires_in:.2f} s more" if held else "another owner"
                raise LeaseLostError(f"host_id {host_id} is leased by {who}")
            info = self.backend.lease_info(self.lease_name(host_id))
            pause = info.expires_in + 0.005 if info is not None else 0.005
            time.sleep(min(max(pause, 0.005), left, 0.25))

    def acquire_any_host(self, owner: str, ttl: float, start: int = 0) -> tuple[int, int]:
        """Lease the first free host id at or after ``start`` (wrapping); ``(host_id, token)``."""
        check_positive("ttl", ttl)
        n = self.layout.max_host + 1
        start = check_int("start", start, 0, self.layout.max_host)
        for i in range(n):
            h = (start + i) % n
            token = self.backend.lease_acquire(self.lease_name(h), owner, ttl)
            if token is not None:
                return h, token
        raise LeaseLostError(f"all {n} host ids of namespace {self.namespace!r} are leased")

    def renew_host(self, host_id: int, owner: str, token: int, ttl: float) -> bool:
        """Extend the lease; ``False`` means it was lost (expired and taken, or stale token)."""
        return self.backend.lease_renew(self.lease_name(host_id), owner, token, ttl)

    def release_host(self, host_id: int, owner: str, token: int) -> bool:
        return self.backend.lease_release(self.lease_name(host_id), owner, token)

    # ------------------------------------------------------------------ grants
    def allocate(self, host_id: int, token: int, min_position: int, size: int,
                 max_shard: int) -> Grant | None:
        """Grant the next block of ``host_id``: at most ``size`` positions, at or above both
        the record and ``min_position``, never crossing a shard boundary.

        Returns ``None`` (granting nothing) if the block would lie in a shard above
        ``max_shard``, i.e. too far ahead of the caller's clock. Raises
        :class:`LeaseLostError` if a newer owner of ``host_id`` has allocated already.
        """
        self.layout.check_host(host_id)
        check_int("token", token, 1)
        check_int("min_position", min_position, 0)
        check_int("size", size, 1, self.layout.counter_capacity)
        cb = self.layout.counter_bits
        key = self._hwm_key(host_id)
        for _ in range(CAS_ATTEMPTS):
            current = self.backend.kv_get(key)
            if current is None:
                position, owner_token, version = 0, 0, 0
            else:
                rec = _decode(key, current.value)
                position, owner_token, version = rec["position"], rec["token"], current.version
            if owner_token > token:
                raise LeaseLostError(
                    f"host_id {host_id} was taken over (fencing token {owner_token} > ours "
                    f"{token}); this generator must stop issuing"
                )
            start = max(position, min_position)
            shard = start >> cb
            if shard > max_shard:
                return None
            if shard > self.layout.max_shard:
                raise IdExhaustedError(
                    f"the layout's time range ends at shard {self.layout.max_shard}; "
                    "no more IDs can be issued with it"
                )
            end = min(start + size, (shard + 1) << cb)
            doc = json.dumps({"position": end, "token": max(owner_token, token)})
            if self.backend.kv_cas(key, doc, version) is not None:
                return Grant(host_id, start, end, shard)
        raise BackendError(
            f"could not allocate a block for host_id {host_id}: {CAS_ATTEMPTS} compare-and-set "
            "attempts lost to concurrent allocators"
        )

    # ------------------------------------------------------------------ reports and health
    def report(self, host_id: int, token: int, *, position: int, shard: int, used: int,
               predicted_next: float) -> None:
        """Heartbeat: the host's current position, last shard's usage, next shard's forecast."""
        self.layout.check_host(host_id)
        doc = json.dumps({
            "token": token, "position": position, "shard": shard, "used": used,
            "predicted_next": round(float(predicted_next), 3), "time": time.time(),
        })
        key = self._report_key(host_id)
        for _ in range(CAS_ATTEMPTS):
            current = self.backend.kv_get(key)
            if current is not None and _decode(key, current.value).get("token", 0) > token:
                raise LeaseLostError(f"host_id {host_id} reports under a newer owner now")
            if self.backend.kv_cas(key, doc, current.version if current else 0) is not None:
                return
        raise BackendError(f"could not write the report of host_id {host_id}: CAS contention")

    def host_status(self, host_id: int) -> HostStatus:
        self.layout.check_host(host_id)
        lease = self.backend.lease_info(self.lease_name(host_id))
        hwm = self.backend.kv_get(self._hwm_key(host_id))
        rec = _decode(self._hwm_key(host_id), hwm.value) if hwm else {"position": 0, "token": 0}
        rep = self.backend.kv_get(self._report_key(host_id))
        return HostStatus(host_id, lease, rec["position"], rec["token"],
                          _decode(self._report_key(host_id), rep.value) if rep else None)

    def failed_hosts(self) -> list[int]:
        """Host ids that have allocated but whose lease is no longer held by anyone."""
        prefix = f"{self.namespace}/hwm/"
        hosts = sorted(int(k[len(prefix):]) for k in self.backend.kv_keys(prefix))
        return [h for h in hosts if self.backend.lease_info(self.lease_name(h)) is None]


def _decode(key: str, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        return doc
    except ValueError as exc:
        raise BackendError(f"coordinator record {key!r} is corrupt: {exc}") from exc
