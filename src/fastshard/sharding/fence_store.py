"""Drain fences shared by many processes, kept in a backend's versioned key-value store.

:mod:`fastshard.sharding.fence` keeps the fence marks inside one router; this module keeps
them next to the shard map so that producers and consumers in different processes fence
each other. Keys, for the shard map called ``M`` (every write goes through the public
:class:`~fastshard.backends.Backend` key-value API, so any backend with ``kv`` works):

``fence/M/<E>``
    the ranges epoch ``E`` moved (``[start, end, old_shard, new_shard]``), written by the
    manager *before* it publishes epoch ``E`` (:class:`FencedMapStore`), so whoever sees
    ``E`` can read them. One record per epoch: a router that jumps several epochs installs
    one fence per step, in order, because a range moved X -> A -> B must drain X before A.
``fence/M/producer/<P>``
    producer ``P`` is registered since epoch ``S`` (it never routed under an older epoch);
    its liveness is the lease ``fsprod.M.P``.
``fence/M/marks/<P>``
    P's *switches*: ``[from, to, {queue: last sequence number}]`` written while P's
    producers are paused, before P routes anything under ``to``; plus P's void sequence
    numbers (publishes that failed and will never be acked).
``fence/M/settled/<queue>``
    per producer: sequence numbers acknowledged on that queue (``low`` and the numbers
    above it), the highest number seen, and after a barrier the dead producer's final mark.

A fence "range R moved from A to B at epoch E" releases, for every registered producer P
with ``S < E``, once A is settled up to P's mark for E. A producer whose lease expired
before it switched to E cannot publish any more; the first consumer that notices publishes
a *barrier* message on A; A's consumer, on reading it, records the highest sequence number
of P it has seen as P's final mark. See docs/sharding.md, "Fences across processes".
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastshard.backends.base import (
    KV,
    LEASES,
    Backend,
    Message,
    UnsupportedOperationError,
    validate_name,
)
from fastshard.errors import (
    BackendError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    UnknownQueueError,
    check_finite,
)
from fastshard.sharding.fence import SEQ_HEADER

PRODUCER_HEADER = "fs-prod"
BARRIER_HEADER = "fs-barrier"
#: switches kept per producer; a consumer further behind than this many of P's epoch
#: switches is told so (StaleEpoch-like BackendError) instead of guessing a mark
MAX_SWITCHES = 512


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


class FenceStore:
    """The key-value layout above, for the shard map ``map_name`` on ``backend``."""

    def __init__(self, backend: Backend, map_name: str, *, lease_ttl: float = 10.0) -> None:
        if not isinstance(backend, Backend):
            raise InvalidTypeError(f"backend must be a fastshard Backend, got {type(backend).__name__}")
        missing = {KV, LEASES} - set(backend.capabilities)
        if missing:
            raise UnsupportedOperationError(
                f"backend {backend.name!r} offers {sorted(backend.capabilities)}; shared fences need "
                "'kv' and 'leases' (use e.g. Redis or PostgreSQL for metadata)")
        ttl = check_finite("lease_ttl", lease_ttl)
        if not 0.1 <= ttl <= 3600:
            raise InvalidValueError(f"lease_ttl must be in [0.1, 3600] seconds, got {lease_ttl}")
        self.backend = backend
        self.map_name = validate_name("map_name", map_name)
        self.lease_ttl = ttl
        self.prefix = f"fence/{map_name}/"

    # ------------------------------------------------------------------ small helpers
    def _get_json(self, key: str) -> tuple[Any, int]:
        entry = self.backend.kv_get(key)
        if entry is None:
            return None, 0
        try:
            return json.loads(entry.value), entry.version
        except ValueError as exc:
            raise BackendError(f"fence key {key!r} (version {entry.version}) is not JSON: {exc}") from exc

    def lease_name(self, producer: str) -> str:
        return validate_name("lease", f"fsprod.{self.map_name}.{producer}")

    # ------------------------------------------------------------------ per-epoch records
    def write_record(self, epoch: int, moves: Sequence[tuple[int, int, str, str]], stored_epoch: int) -> None:
        """Record what ``epoch`` moves; an existing record is replaced only while the stored
        map is still older than ``epoch`` (it was left by a manager that lost or crashed)."""
        key = f"{self.prefix}{epoch}"
        payload = _dumps({"epoch": epoch, "moves": [list(m) for m in moves]})
        current, version = self._get_json(key)
        if current is not None and current.get("moves") == json.loads(payload)["moves"]:
            return
        if version and stored_epoch >= epoch:
            raise BackendError(f"fence record {key!r} belongs to a published epoch; not replacing it")
        if self.backend.kv_cas(key, payload, version) is None:
            raise BackendError(f"fence record {key!r} changed while it was written; retry the apply")

    def read_record(self, epoch: int) -> list[tuple[int, int, str, str]] | None:
        data, _ = self._get_json(f"{self.prefix}{epoch}")
        if data is None:
            return None
        return [(int(a), int(b), str(o), str(n)) for a, b, o, n in data["moves"]]

    # ------------------------------------------------------------------ what is still open
    def write_open(self, from_epoch: int, retired: Sequence[str]) -> None:
        """Written by the manager's router: every fence of an epoch below ``from_epoch`` is
        released, and the ``retired`` queues are retired but not deleted yet. A router that
        starts later reads it (:meth:`read_open`) to install the fences still open and to
        drain the retired queues it never saw being retired."""
        self.backend.kv_set(f"{self.prefix}open", _dumps({"from": int(from_epoch), "retired": sorted(retired)}))

    def read_open(self) -> tuple[int | None, list[str]]:
        """``(from_epoch, retired queues)``; ``(None, [])`` when no manager wrote it yet."""
        data, _ = self._get_json(f"{self.prefix}open")
        if data is None:
            return None, []
        return int(data["from"]), [str(q) for q in data["retired"]]

    # ------------------------------------------------------------------ producers
    def register(self, producer: str, since_epoch: int) -> int:
        """Take P's lease and record since when it routes; returns the lease token."""
        token = self.backend.lease_acquire(self.lease_name(producer), producer, self.lease_ttl)
        if token is None:
            raise LeaseLostError(f"producer id {producer!r} is held by a live producer of map "
                                 f"{self.map_name!r}; give every producer process its own id")
        self.backend.kv_set(f"{self.prefix}producer/{producer}", _dumps({"since": since_epoch}))
        return token

    def renew(self, producer: str, token: int) -> bool:
        return self.backend.lease_renew(self.lease_name(producer), producer, token, self.lease_ttl)

    def unregister(self, producer: str, token: int) -> None:
        """A clean shutdown: drop the registration (its marks stay for fences still open)."""
        self.backend.kv_delete(f"{self.prefix}producer/{producer}")
        self.backend.lease_release(self.lease_name(producer), producer, token)

    def producers(self) -> dict[str, int]:
        """Registered producers and the first epoch each routed under."""
        out: dict[str, int] = {}
        base = f"{self.prefix}producer/"
        for key in self.backend.kv_keys(base):
            data, _ = self._get_json(key)
            if data is not None:
                out[key[len(base):]] = int(data["since"])
        return out

    def alive(self, producer: str) -> bool:
        return self.backend.lease_info(self.lease_name(producer)) is not None

    def write_marks(self, producer: str, marks: dict[str, Any]) -> None:
        # only P writes its own marks key, so a plain write is enough
        self.backend.kv_set(f"{self.prefix}marks/{producer}", _dumps(marks))

    def read_marks(self, producer: str) -> dict[str, Any]:
        data, _ = self._get_json(f"{self.prefix}marks/{producer}")
        return data or {"switches": [], "void": {}}

    # ------------------------------------------------------------------ settlement
    def settle(self, queue: str, acked: dict[str, list[int]], seen: dict[str, int],
               final: dict[str, int] | None = None) -> None:
        """Merge acknowledged numbers (and seen maxima, final marks) into ``queue``'s record."""
        key = f"{self.prefix}settled/{queue}"
        for _ in range(100):
            data, version = self._get_json(key)
            data = data or {}
            for p in set(acked) | set(seen) | set(final or {}):
                rec = data.setdefault(p, {"low": 0, "above": [], "seen": 0})
                low, above = rec["low"], set(rec["above"])
                above.update(s for s in acked.get(p, ()) if s > low)
                while low + 1 in above:
                    low += 1
                    above.discard(low)
                rec["low"], rec["above"] = low, sorted(above)
                rec["seen"] = max(rec["seen"], seen.get(p, 0), low)
                if final and p in final:
                    rec["final"] = max(rec.get("final", 0), final[p], rec["seen"])
            if self.backend.kv_cas(key, _dumps(data), version) is not None:
                return
            time.sleep(0.001)
        raise BackendError(f"settlement record {key!r} kept changing; 100 compare-and-set attempts lost")

    def read_settled(self, queue: str) -> dict[str, Any]:
        data, _ = self._get_json(f"{self.prefix}settled/{queue}")
        return data or {}


class FencedMapStore:
    """A ``ShardMapStore`` whose ``publish`` first records the new epoch's fences.

    Give it to ``ShardManager(store=...)``: the manager publishes a candidate map one epoch
    ahead of the stored one; this writes ``fence/M/<E>`` from ``candidate.diff(E - 1)`` and
    only then compare-and-sets the map, so a reader that sees epoch E finds its record.
    """

    def __init__(self, map_store: Any, fence_store: FenceStore) -> None:
        if map_store.name != fence_store.map_name:
            raise InvalidValueError(
                f"fence_store must be for map {map_store.name!r}, got {fence_store.map_name!r}")
        self.inner = map_store
        self.fences = fence_store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def publish(self, new_map: Any, expected_epoch: int) -> bool:
        if new_map.epoch != expected_epoch + 1:
            raise InvalidValueError(
                f"new_map.epoch must be expected_epoch + 1 ({expected_epoch + 1}) so each epoch's "
                f"fences are recorded, got {new_map.epoch}")
        stored = self.inner.epoch()
        if stored != expected_epoch:
            return False
        moves = [(c.start, c.end, c.old_shard, c.new_shard) for c in new_map.diff(expected_epoch)
                 if c.old_shard is not None and c.new_shard is not None and c.old_shard != c.new_shard]
        self.fences.write_record(new_map.epoch, moves, stored)
        if not self.inner.publish(new_map, expected_epoch):
            return False
        # another manager may have replaced our record between our write and our win
        self.fences.write_record(new_map.epoch, moves, expected_epoch)
        return True


@dataclass(frozen=True, slots=True)
class SharedFence:
    """Messages of ``[start, end)`` on ``new_queue`` stamped with epoch >= ``epoch`` wait
    until ``old_queue`` is settled up to every producer's mark for ``mark_epoch``."""

    start: int
    end: int
    old_queue: str
    new_queue: str
    mark_epoch: int
    epoch: int

    def covers(self, queue: str, h: int, epoch: int) -> bool:
        return queue == self.new_queue and self.start <= h < self.end and epoch >= self.epoch


class SharedFenceRegistry:
    """What a :class:`~fastshard.sharding.Router` uses instead of a ``FenceRegistry`` when its
    fences are shared through a :class:`FenceStore` (``Router(..., fence_store=...)``).

    Producer side: per-queue sequence numbers of this producer, its lease (renewed on the
    publish path every third of the TTL; a producer whose lease lapsed re-registers under a
    new incarnation id), its marks at every epoch switch. Consumer side: fences installed
    from the per-epoch records, released by :meth:`refresh` from the shared settlement.
    """

    def __init__(self, store: FenceStore, producer_id: str | None = None, *,
                 refresh_interval: float = 0.01) -> None:
        self.store = store
        base = producer_id or f"p{uuid.uuid4().hex[:12]}"
        validate_name("producer_id", base)
        self._base_id = base
        self._incarnation = 0
        self.producer_id = base
        self.refresh_interval = refresh_interval
        self._lock = threading.RLock()
        self._last_seq: dict[str, int] = {}
        self._void: dict[str, list[int]] = {}
        self._switches: list[list[Any]] = []
        self._token: int | None = None
        self._renew_at = 0.0
        self._deadline = 0.0
        self._fences: list[SharedFence] = []
        self._seen: dict[str, dict[str, int]] = {}  # queue -> producer -> highest seq seen
        self._barriers_sent: set[tuple[str, str]] = set()
        self._next_refresh = 0.0
        self.released = 0

    # ------------------------------------------------------------------ producer side
    def before_publish(self, epoch: int) -> None:
        """Register on first use and keep the lease fresh (called under the shared gate)."""
        now = time.monotonic()
        if self._token is not None and now < self._renew_at:
            return
        with self._lock:
            now = time.monotonic()
            if self._token is not None and now < self._renew_at:
                return
            ttl = self.store.lease_ttl
            if self._token is not None and now < self._deadline and self.store.renew(self.producer_id, self._token):
                self._renew_at, self._deadline = now + ttl / 3, now + ttl * 0.8
                return
            if self._token is not None:
                # the lease lapsed: consumers may have written our final marks already, so
                # come back as a new producer with fresh sequence numbers
                self._incarnation += 1
                self.producer_id = f"{self._base_id}.{self._incarnation}"
                self._last_seq.clear()
                self._void.clear()
                self._switches.clear()
            self._token = self.store.register(self.producer_id, epoch)
            self._renew_at, self._deadline = now + ttl / 3, now + ttl * 0.8

    def next_seq(self, queue: str) -> int:
        with self._lock:
            seq = self._last_seq.get(queue, 0) + 1
            self._last_seq[queue] = seq
            return seq

    def next_seqs(self, queue: str, n: int) -> int:
        """Reserve ``n`` consecutive sequence numbers of ``queue`` (a routed batch); returns
        the first."""
        with self._lock:
            first = self._last_seq.get(queue, 0) + 1
            self._last_seq[queue] = first + n - 1
            return first

    def last_seq(self, queue: str) -> int:
        with self._lock:
            return self._last_seq.get(queue, 0)

    def publish_failed(self, queue: str, seq: int, count: int = 1) -> None:
        """``seq`` (and the ``count - 1`` numbers after it) will never be acked: record them
        as void (shared at once if possible; one write for the whole run of numbers)."""
        with self._lock:
            self._void.setdefault(queue, []).extend(range(seq, seq + count))
            try:
                self._write_marks()
            except BackendError:
                pass  # written again with the next switch; the publish error is raised anyway

    def _write_marks(self) -> None:
        self.store.write_marks(self.producer_id, {"switches": self._switches[-MAX_SWITCHES:],
                                                  "void": self._void})

    def switch(self, before: int, after: int, steps: Sequence[tuple[int, list[tuple[int, int, str, str]]]]) -> None:
        """The router moved from epoch ``before`` to ``after`` (producers paused): write our
        marks if we are a producer, then install one fence per moved range per epoch."""
        with self._lock:
            if self._token is not None:
                self._switches.append([before, after, dict(self._last_seq)])
                self._write_marks()
            for epoch, moves in steps:
                self._install(epoch, moves)

    def adopt(self, steps: Sequence[tuple[int, list[tuple[int, int, str, str]]]]) -> None:
        """Install the fences of epochs this router did not switch through (it started after
        them); no marks are written: it published nothing under those epochs."""
        with self._lock:
            for epoch, moves in steps:
                self._install(epoch, moves)

    def _install(self, epoch: int, moves: list[tuple[int, int, str, str]]) -> None:
        before = list(self._fences)
        for start, end, old_q, new_q in moves:
            self._fences.append(SharedFence(start, end, old_q, new_q, epoch, epoch))
            # still arriving on old_q from an earlier owner: wait for that one too
            for g in before:
                if g.new_queue == old_q and g.start < end and start < g.end:
                    self._fences.append(SharedFence(max(start, g.start), min(end, g.end), g.old_queue,
                                                    new_q, g.mark_epoch, epoch))

    # ------------------------------------------------------------------ consumer side
    def holds(self, queue: str, h: int, epoch: int) -> bool:
        return any(f.covers(queue, h, epoch) for f in self._fences)

    def pending_for(self, queue: str) -> bool:
        return any(f.new_queue == queue for f in self._fences)

    def active(self) -> list[SharedFence]:
        with self._lock:
            return list(self._fences)

    def waiting_on(self, queue: str) -> bool:
        self.refresh(force=True)
        with self._lock:
            return any(f.old_queue == queue for f in self._fences)

    def forget(self, queue: str) -> None:
        with self._lock:
            self._last_seq.pop(queue, None)
            self._seen.pop(queue, None)

    def seen(self, queue: str, msg: Message) -> None:
        p, s = msg.headers.get(PRODUCER_HEADER), msg.headers.get(SEQ_HEADER)
        if p is not None and s is not None:
            d = self._seen.setdefault(queue, {})
            d[p] = max(d.get(p, 0), int(s))

    def acked(self, queue: str, messages: Sequence[Message]) -> None:
        """Record settlement in the store; called *before* the backend ack, so a crash in
        between only causes a redelivery, never a fence released ahead of its messages."""
        by_p: dict[str, list[int]] = {}
        for m in messages:
            p, s = m.headers.get(PRODUCER_HEADER), m.headers.get(SEQ_HEADER)
            if p is not None and s is not None:
                by_p.setdefault(p, []).append(int(s))
        if by_p:
            self.store.settle(queue, by_p, {p: self._seen.get(queue, {}).get(p, 0) for p in by_p})
            self._next_refresh = 0.0  # we just settled something: look again on the next poll

    def barrier_seen(self, queue: str, msg: Message) -> None:
        """A barrier for a dead producer reached ``queue``'s consumer: everything that producer
        sent here is in front of it, so the highest number seen is its final mark."""
        p = msg.headers[BARRIER_HEADER]
        seen = self._seen.get(queue, {}).get(p, 0)
        self.store.settle(queue, {}, {p: seen}, {p: seen})
        self._next_refresh = 0.0

    def refresh(self, force: bool = False) -> None:
        """Release every fence whose old queue is settled for every producer (rate-limited)."""
        now = time.monotonic()
        if not self._fences or (not force and now < self._next_refresh):
            return
        self._next_refresh = now + self.refresh_interval
        with self._lock:
            fences = list(self._fences)
        producers = self.store.producers()
        marks = {p: self.store.read_marks(p) for p in producers}
        settled: dict[str, dict[str, Any]] = {}
        done = set()
        for f in fences:
            if f.old_queue not in settled:
                settled[f.old_queue] = self.store.read_settled(f.old_queue)
            if all(self._producer_done(p, since, marks[p], settled[f.old_queue], f)
                   for p, since in producers.items()):
                done.add(f)
        if done:
            with self._lock:
                self._fences = [f for f in self._fences if f not in done]
                self.released += len(done)

    def _producer_done(self, p: str, since: int, marks: dict[str, Any], settled: dict[str, Any],
                       f: SharedFence) -> bool:
        e = f.mark_epoch
        if since >= e:
            return True  # p never routed under an epoch older than e
        mark = None
        switches = marks.get("switches", [])
        for frm, to, last in switches:
            if frm < e <= to:
                mark = int(last.get(f.old_queue, 0))
                break
        if mark is None and switches and switches[0][0] >= e:
            return True  # p's oldest switch starts at or after e
        rec = settled.get(p, {})
        if mark is None:
            if self.store.alive(p):
                return False  # p has not switched to e yet; it will write its mark first
            if "final" not in rec:
                return not self._send_barrier(p, f.old_queue)
            mark = int(rec["final"])
        if mark <= 0:
            return True
        low = int(rec.get("low", 0))
        if low >= mark:
            return True
        done = set(rec.get("above", ())) | set(marks.get("void", {}).get(f.old_queue, ()))
        while low + 1 in done:
            low += 1
        return low >= mark

    def _send_barrier(self, p: str, queue: str) -> bool:
        """Publish a barrier for dead producer ``p`` on ``queue`` (once); False when the queue
        is gone: the manager deletes a retired queue only once it is drained and no fence
        waits on it, so a fence whose old queue was deleted is released."""
        if (p, queue) in self._barriers_sent:
            return True
        try:
            self.store.backend.publish(queue, b"", b"", headers={BARRIER_HEADER: p})
        except UnknownQueueError:
            return False
        self._barriers_sent.add((p, queue))
        return True
