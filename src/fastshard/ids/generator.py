"""IdGenerator: the compiled block cursor plus the Python machinery that keeps it fed.

The hot path (``next_id`` / ``next_ids``) lives in :mod:`fastshard._idgen` and never waits:
it claims IDs from the current block with an atomic fetch-add. This module supplies blocks:

* **double buffering** – a background thread leases the next block (a *spare*) once the
  current one is ``prefetch_at`` used, and leases the first block of the next time shard a
  little before the shard starts, sized by the usage forecast (see :mod:`.sizing`);
* **overflow** – when the current block and the spares are used up, the caller requests a
  block at once; if none can be had (the host's range of this shard is full and the clock
  has not moved on, or the coordinator is unreachable) it waits at most ``max_wait`` seconds
  and then raises :class:`IdExhaustedError`. The counter never wraps;
* **persistence** – each block's end is fsynced to ``state_path`` before its first ID is
  issued, so a restarted process starts above everything it may have issued;
* **clock** – the time shard is the highest one the clock has ever shown (per process and,
  through the persisted mark, across restarts): a backwards step keeps issuing in that
  shard; when its range is full, blocks may run ahead into later shards by at most
  ``max_lead_shards``, after which issuance pauses until the clock catches up (bounded by
  ``max_wait``);
* **leases and fencing** – the host id is a lease renewed every ``lease_ttl / 3``. If it
  cannot be renewed for ``0.8 * lease_ttl`` (coordinator unreachable) the generator stops
  issuing until a renewal succeeds; if the lease was taken over (renewal refused, or the
  coordinator reports a newer fencing token) it stops for good with :class:`LeaseLostError`;
* **fork safety** – in a forked child the inherited block and spares are dropped; with a
  shared coordinator the child leases fresh blocks, with the process-private embedded one it
  refuses to issue (a copy of the parent's coordinator would hand out the same blocks).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastshard._idgen import IdCore
from fastshard.errors import (
    BackendUnavailableError,
    IdExhaustedError,
    InvalidTypeError,
    InvalidValueError,
    LeaseLostError,
    check_finite,
    check_int,
)
from fastshard.ids.coordinator import Coordinator, Grant
from fastshard.ids.layout import DEFAULT_LAYOUT, IdLayout
from fastshard.ids.persistence import HighWaterFile
from fastshard.ids.sizing import BlockSizer, ShardUsageForecaster, UsageForecaster, daily_season

log = logging.getLogger("fastshard.ids")

_live: weakref.WeakSet[IdGenerator] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for gen in list(_live):
        gen._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _default_owner() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())[:120]
    return f"{host or 'host'}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class IdGenerator(IdCore):
    """Unique, k-sortable 64-bit IDs ``[time shard][host id][counter]``.

    >>> gen = IdGenerator(7)
    >>> a, b = gen.next_id(), gen.next_id()
    >>> a < b
    True

    ``host_id=None`` leases the first free host id. ``coordinator`` defaults to an embedded
    in-memory one (private to this process); pass ``Coordinator(backends.get("redis", ...))``
    to coordinate hosts. ``clock`` returns Unix seconds (inject one in tests).
    ``usage_forecaster`` forecasts this host's IDs per time shard for block sizing (default: a
    :class:`~fastshard.ids.UsageForecaster` over :mod:`fastshard.forecast`, with a daily
    season when a day is at most 144 shards); the background worker feeds it each finished
    shard's usage.
    """

    def __init__(
        self,
        host_id: int | None = None,
        *,
        layout: IdLayout | None = None,
        coordinator: Coordinator | None = None,
        owner: str | None = None,
        state_path: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
        lease_ttl: float = 10.0,
        takeover_wait: float = 0.0,
        max_wait: float = 2.0,
        max_lead_shards: int = 1,
        prefetch_at: float = 0.25,
        min_block: int = 1024,
        max_block: int | None = None,
        usage_forecaster: ShardUsageForecaster | None = None,
        background: bool = True,
    ) -> None:
        # ---- validate everything before leasing anything
        if coordinator is not None and not isinstance(coordinator, Coordinator):
            raise InvalidTypeError(f"coordinator must be a Coordinator, got {type(coordinator).__name__}")
        if layout is None:
            layout = coordinator.layout if coordinator is not None else DEFAULT_LAYOUT
        if not isinstance(layout, IdLayout):
            raise InvalidTypeError(f"layout must be an IdLayout, got {type(layout).__name__}")
        if coordinator is not None and coordinator.layout != layout:
            raise InvalidValueError("layout must equal the coordinator's layout")
        if host_id is not None:
            layout.check_host(host_id)
        if not callable(clock):
            raise InvalidTypeError(f"clock must be a callable returning Unix seconds, got {clock!r}")
        self.lease_ttl = _in_range("lease_ttl", lease_ttl, 0.05, 86_400.0)
        self.max_wait = _in_range("max_wait", max_wait, 0.0, 3_600.0)
        takeover_wait = _in_range("takeover_wait", takeover_wait, 0.0, 86_400.0)
        self.max_lead_shards = check_int("max_lead_shards", max_lead_shards, 0, 1_000_000)
        self.prefetch_at = _in_range("prefetch_at", prefetch_at, 0.0, 1.0)
        self.layout = layout
        if usage_forecaster is None:
            usage_forecaster = UsageForecaster(daily_season(layout.shard_seconds))
        self.sizer = BlockSizer(layout.counter_capacity, min_block, max_block, usage_forecaster)
        self._clock = clock
        layout.shard_of(clock())  # a clock outside the layout's range is a configuration error
        self.owner = owner if owner is not None else _default_owner()
        self.coordinator = coordinator if coordinator is not None else Coordinator(layout=layout)
        self._state = HighWaterFile(state_path, layout) if state_path is not None else None
        self.state_path = Path(state_path) if state_path is not None else None

        # ---- Python-side state (guarded by _lock; allocations serialised by _fetch_lock)
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._clock_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._background = bool(background)
        self._spares: deque[Grant] = deque()
        self._current: Grant | None = None
        self._current_since = 0.0
        self._used: dict[int, int] = {}
        # finished shards' usage, waiting for the worker to feed the forecaster (a Numba
        # model whose first call may take seconds: never on a thread waiting for IDs)
        self._finished: deque[tuple[int, int]] = deque()
        self._closed = False
        self._fenced: str | None = None
        self._forked_unshared = False
        self._poll = min(0.05, max(0.001, layout.shard_seconds / 20))
        self._reported_shard = -1
        self._next_report = 0.0
        self.worker_error: BaseException | None = None
        self.blocks_leased = 0
        self.ids_leased = 0
        self.ids_wasted = 0

        # ---- lease the host id, then start from above everything possibly issued before
        t0 = time.monotonic()
        if host_id is None:
            host_id, token = self.coordinator.acquire_any_host(self.owner, self.lease_ttl)
        else:
            token = self.coordinator.acquire_host(host_id, self.owner, self.lease_ttl, takeover_wait)
        self.host_id: int = host_id
        self.token: int = token
        self._lease_ok_until = t0 + 0.8 * self.lease_ttl
        self._renew_due = t0 + self.lease_ttl / 3
        self._floor = self._state.get(host_id) if self._state is not None else 0
        self._clock_hwm = self._floor >> layout.counter_bits
        self._now_shard()
        _live.add(self)
        try:
            self._refill(0)  # the first block, so the first next_id() does not wait
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public
    @property
    def time_shard(self) -> int:
        """The time shard IDs are currently issued in (the clock's, never going back)."""
        return self._now_shard()

    @property
    def fenced(self) -> bool:
        return self._fenced is not None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            cur = self._current
            point, upper = self.sizer.forecaster.forecast()
            return {
                "host_id": self.host_id, "token": self.token, "time_shard": self._clock_hwm,
                "block": None if cur is None else (cur.start, cur.end, cur.shard),
                "remaining": self.remaining(), "spares": len(self._spares),
                "blocks_leased": self.blocks_leased, "ids_leased": self.ids_leased,
                "ids_wasted": self.ids_wasted, "forecast_next": point, "forecast_upper": upper,
                "fenced": self._fenced, "high_water": self._floor,
            }

    def close(self) -> None:
        """Stop issuing, stop the background thread and release the host-id lease."""
        if self._closed:
            return
        self._closed = True
        self.invalidate()
        self._stop.set()
        self._wake.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread() and not self._forked_unshared:
            worker.join(timeout=5.0)
        if self._fenced is None and not self._forked_unshared:
            try:
                self.coordinator.release_host(self.host_id, self.owner, self.token)
            except Exception as exc:  # the lease expires by itself; closing must not fail
                log.warning("could not release host_id %s: %s", self.host_id, exc)
        _live.discard(self)

    def __enter__(self) -> IdGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the slow path
    def _refill(self, n: int) -> None:
        """Called by the compiled core when its block is exhausted or invalidated."""
        self._ensure_worker()
        deadline = time.monotonic() + self.max_wait
        delay = 0.001
        while True:
            reason, cause = "", None
            try:
                if time.monotonic() >= self._lease_ok_until:
                    self._renew_lease()
                with self._lock:
                    self._check_usable()
                    if self.remaining() > 0:
                        return  # another thread installed a block meanwhile
                    now = self._now_shard()
                    while self._spares and self._spares[0].shard < now:
                        self.ids_wasted += self._spares.popleft().size  # its shard is over
                    if self._spares:
                        self._install(self._spares.popleft())
                        self._wake.set()  # the worker leases the next spare
                        return
                    size = self._refill_size(now)
                if self._fetch(size) is not None:
                    continue
                reason = (f"host_id {self.host_id} used its whole counter range up to "
                          f"{self.max_lead_shards} time shard(s) ahead of the clock")
            except BackendUnavailableError as exc:
                reason, cause = f"the coordinator is unreachable ({exc})", exc
            left = deadline - time.monotonic()
            if left <= 0:
                raise IdExhaustedError(f"no ID could be issued within max_wait={self.max_wait} s: {reason}") from cause
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    def _check_usable(self) -> None:
        if self._fenced is not None:
            raise LeaseLostError(self._fenced)
        if self._closed:
            raise IdExhaustedError("this IdGenerator is closed")
        if self._forked_unshared:
            raise LeaseLostError(
                "this IdGenerator was created before os.fork() with the process-private "
                "embedded coordinator, which the child cannot share with its parent; create a "
                "new IdGenerator with another host id in the child, or use a server backend"
            )

    def _fetch(self, size: int, for_shard: int | None = None) -> Grant | None:
        """Lease one block (at ``for_shard`` or the current shard) and make it durable."""
        with self._fetch_lock:
            with self._lock:
                self._check_usable()
            now = self._now_shard()
            target = now if for_shard is None else max(for_shard, now)
            min_position = max(self._floor, target << self.layout.counter_bits)
            try:
                grant = self.coordinator.allocate(
                    self.host_id, self.token, min_position, size, self._clock_hwm + self.max_lead_shards
                )
            except LeaseLostError as exc:
                self._fence(str(exc))
                raise
            if grant is None:
                return None
            if self._state is not None:
                self._state.raise_to(self.host_id, grant.end)  # durable before the first use
            with self._lock:
                self._floor = max(self._floor, grant.end)
                self._spares.append(grant)
                self.blocks_leased += 1
                self.ids_leased += grant.size
            return grant

    def _install(self, grant: Grant) -> None:
        """Make ``grant`` the current block (``_lock`` held)."""
        self._retire_current()
        if self._current is not None and grant.shard > self._current.shard:
            for shard in sorted(s for s in self._used if s < grant.shard):
                self._finished.append((shard, self._used.pop(shard)))
            if self._background:
                self._wake.set()
            else:
                self._observe_finished()  # no worker: the caller chose to pay it inline
        start_id = self.layout.id_of_position(grant.start, self.host_id)
        self.install(start_id, start_id + grant.size)
        self._current = grant
        self._current_since = time.monotonic()

    def _observe_finished(self) -> None:
        while self._finished:
            self.sizer.observe_shard(*self._finished.popleft())

    def _retire_current(self) -> None:
        cur = self._current
        if cur is None:
            return
        start_id = self.layout.id_of_position(cur.start, self.host_id)
        cursor = self.snapshot()[0]
        used = min(max(cursor - start_id, 0), cur.size)
        self._used[cur.shard] = self._used.get(cur.shard, 0) + used
        self.ids_wasted += cur.size - used

    def _used_in(self, shard: int) -> int:
        used = self._used.get(shard, 0)
        cur = self._current
        if cur is not None and cur.shard == shard:
            used += cur.size - min(self.remaining(), cur.size)
        return used

    def _refill_size(self, now: int) -> int:
        cur = self._current
        seconds = self.layout.shard_seconds
        elapsed = (self._clock() - self.layout.shard_start(now)) / seconds
        return self.sizer.in_shard_block(
            self._used_in(now), elapsed, cur.size if cur else 0,
            time.monotonic() - self._current_since if cur else seconds, seconds,
        )

    def _now_shard(self) -> int:
        """The highest time shard the clock has shown (a backwards step does not lower it)."""
        try:
            shard = self.layout.shard_of(self._clock())
        except (InvalidValueError, InvalidTypeError):
            shard = -1  # a clock outside the layout's range is treated like a backwards step
        with self._clock_lock:
            if shard > self._clock_hwm:
                self._clock_hwm = shard
            return self._clock_hwm

    # ------------------------------------------------------------------ lease
    def _renew_lease(self) -> None:
        started = time.monotonic()
        if not self.coordinator.renew_host(self.host_id, self.owner, self.token, self.lease_ttl):
            self._fence(f"the lease on host_id {self.host_id} was lost (expired and taken over, "
                        f"or token {self.token} is stale); this generator must stop issuing")
            raise LeaseLostError(self._fenced or "lease lost")
        self._lease_ok_until = started + 0.8 * self.lease_ttl
        self._renew_due = started + self.lease_ttl / 3

    def _fence(self, reason: str) -> None:
        with self._lock:
            if self._fenced is None:
                self._fenced = reason
            self.invalidate()
            for sp in self._spares:
                self.ids_wasted += sp.size
            self._spares.clear()
        self._stop.set()

    # ------------------------------------------------------------------ background worker
    def _ensure_worker(self) -> None:
        if not self._background or self._closed or self._stop.is_set():
            return
        w = self._worker
        if w is None or not w.is_alive():
            with self._lock:
                if self._worker is None or not self._worker.is_alive():
                    self._worker = threading.Thread(
                        target=_worker_main, args=(weakref.ref(self), self._wake, self._stop),
                        name=f"fastshard-ids-{self.host_id}", daemon=True,
                    )
                    self._worker.start()

    def _tick(self) -> None:
        """One round of the background worker."""
        self._observe_finished()
        mono = time.monotonic()
        if mono >= self._renew_due:
            try:
                self._renew_lease()
            except BackendUnavailableError as exc:
                self.worker_error = exc
        if time.monotonic() >= self._lease_ok_until:
            self.invalidate()  # cannot prove we hold the host id: stop issuing until renewed
            return
        now = self._now_shard()
        with self._lock:
            cur = self._current
            if cur is not None and cur.shard < now:
                self.invalidate()  # shard over: the next call installs a block of the new one
            have_spare = any(sp.shard >= now for sp in self._spares)
            have_next = any(sp.shard > now for sp in self._spares) or (cur is not None and cur.shard > now)
            used_fraction = 1.0 - self.remaining() / cur.size if cur is not None else 0.0
            active = cur is not None and (self._used_in(now) > 0 or self._used_in(now - 1) > 0)
            size = self._refill_size(now)
        if not have_spare and cur is not None and used_fraction >= self.prefetch_at:
            self._fetch(size)
        to_boundary = self.layout.shard_start(now + 1) - self._clock()
        if active and not have_next and to_boundary <= 0.1 * self.layout.shard_seconds + 2 * self._poll:
            self._fetch(self.sizer.next_shard_block(), for_shard=now + 1)
        if now > self._reported_shard or mono >= self._next_report:
            self._report(now)

    def _report(self, now: int) -> None:
        point, upper = self.sizer.forecaster.forecast()
        with self._lock:
            used_last = self._used_in(now - 1) if now > 0 else 0
        self.coordinator.report(self.host_id, self.token, position=self._floor, shard=now,
                                used=used_last, predicted_next=upper)
        self._reported_shard = now
        self._next_report = time.monotonic() + self.lease_ttl / 3

    def _after_fork(self) -> None:
        """In a forked child: never use the parent's block or spares."""
        self.invalidate()
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._clock_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker = None
        self._spares = deque()
        self._current = None
        if self._state is not None:
            self._state = HighWaterFile(self._state.path, self.layout)
        if self.coordinator.process_local:
            self._forked_unshared = True


def _worker_main(ref: weakref.ref[IdGenerator], wake: threading.Event, stop: threading.Event) -> None:
    backoff = 0.0
    while not stop.is_set():
        gen = ref()
        if gen is None:
            return
        poll = gen._poll
        del gen  # do not keep the generator alive while sleeping
        wake.wait(max(poll, backoff))
        wake.clear()
        gen = ref()
        if gen is None or stop.is_set():
            return
        try:
            gen._tick()
            backoff = 0.0
        except LeaseLostError as exc:
            gen._fence(str(exc))  # e.g. a newer owner's report; the next refill raises
            return
        except BackendUnavailableError as exc:
            gen.worker_error = exc
            backoff = min(max(backoff * 2, 0.01), 0.5)
        except Exception as exc:  # keep the worker alive; the refill path surfaces real failures
            gen.worker_error = exc
            log.exception("fastshard.ids background worker error")
            backoff = min(max(backoff * 2, 0.01), 0.5)
        del gen


def _in_range(name: str, value: Any, lo: float, hi: float) -> float:
    v = check_finite(name, value)
    if not lo <= v <= hi:
        raise InvalidValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return v
