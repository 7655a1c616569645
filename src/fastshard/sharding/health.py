"""HealthMonitor: per-shard throughput, backlog/lag, latency and error rate -> a state.

States and what the manager does with them:

* ``healthy``  – full capacity;
* ``degraded`` – counts as ``degraded_capacity`` x its capacity (so the manager splits or
  moves load away sooner);
* ``failed``   – capacity 0: the manager drains it into a neighbour and retires it.

A shard becomes degraded when one measurement crosses its ``degraded`` threshold and failed
when one crosses its ``failed`` threshold, or when it has a backlog but processed nothing for
``stall_intervals`` intervals in a row. It returns to healthy only after ``recover_intervals``
clean intervals (hysteresis, so a flapping shard does not flap the plan too).

Metrics are exported in the Prometheus text format through prometheus-client, on a registry
of the monitor's own (``prometheus_text()``; mount ``registry`` in your exporter).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from fastshard.backends.base import Backend
from fastshard.errors import InvalidValueError, UnknownNodeError, check_finite, check_int

HealthState = Literal["healthy", "degraded", "failed"]
_STATE_CODE = {"healthy": 0, "degraded": 1, "failed": 2}


@dataclass(frozen=True)
class HealthThresholds:
    """Where ``degraded`` and ``failed`` begin (lag and latency in seconds)."""

    degraded_lag: float = 30.0
    failed_lag: float = 600.0
    degraded_latency: float = 1.0
    failed_latency: float = 30.0
    degraded_error_rate: float = 0.05
    failed_error_rate: float = 0.5
    stall_intervals: int = 3
    recover_intervals: int = 2
    degraded_capacity: float = 0.5

    def __post_init__(self) -> None:
        for lo, hi in (("degraded_lag", "failed_lag"), ("degraded_latency", "failed_latency"),
                       ("degraded_error_rate", "failed_error_rate")):
            a, b = check_finite(lo, getattr(self, lo)), check_finite(hi, getattr(self, hi))
            if not 0 < a < b:
                raise InvalidValueError(f"thresholds must satisfy 0 < {lo} < {hi}, got {a} and {b}")
        if self.failed_error_rate > 1:
            raise InvalidValueError(f"failed_error_rate must be in (0, 1], got {self.failed_error_rate}")
        check_int("stall_intervals", self.stall_intervals, 1, 10_000)
        check_int("recover_intervals", self.recover_intervals, 1, 10_000)
        c = check_finite("degraded_capacity", self.degraded_capacity)
        if not 0 < c < 1:
            raise InvalidValueError(f"degraded_capacity must be in (0, 1), got {c}")


@dataclass
class ShardHealth:
    """The last interval's measurements of one shard and the state they led to."""

    shard: str
    state: HealthState = "healthy"
    throughput: float = 0.0  # messages per second
    backlog: int = 0
    lag_seconds: float = 0.0  # backlog / throughput: how long the backlog takes to drain
    latency_seconds: float = 0.0
    error_rate: float = 0.0
    stalled_for: int = 0
    clean_for: int = 0
    forced: bool = False
    reasons: list[str] = field(default_factory=list)


class HealthMonitor:
    """Tracks shards (by queue or shard name) and classifies them each interval."""

    def __init__(self, thresholds: HealthThresholds | None = None, *, namespace: str = "fastshard") -> None:
        self.thresholds = thresholds or HealthThresholds()
        self._lock = threading.Lock()
        self._shards: dict[str, ShardHealth] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        lbl = ["shard"]
        self._g_thr = Gauge(f"{namespace}_shard_throughput", "Messages processed per second", lbl, registry=self.registry)
        self._g_backlog = Gauge(f"{namespace}_shard_backlog", "Messages not yet acked", lbl, registry=self.registry)
        self._g_lag = Gauge(f"{namespace}_shard_lag_seconds", "Seconds to drain the backlog", lbl, registry=self.registry)
        self._g_lat = Gauge(f"{namespace}_shard_latency_seconds", "Processing latency", lbl, registry=self.registry)
        self._g_err = Gauge(f"{namespace}_shard_error_rate", "Failed / processed messages", lbl, registry=self.registry)
        self._g_state = Gauge(f"{namespace}_shard_state", "0 healthy, 1 degraded, 2 failed", lbl, registry=self.registry)
        self._c_proc = Counter(f"{namespace}_shard_processed", "Messages processed", lbl, registry=self.registry)
        self._c_err = Counter(f"{namespace}_shard_errors", "Messages that failed", lbl, registry=self.registry)

    # ------------------------------------------------------------------ input
    def record(
        self,
        shard: str,
        *,
        processed: int,
        backlog: int,
        interval: float,
        errors: int = 0,
        latency_seconds: float = 0.0,
    ) -> HealthState:
        """One interval of measurements for ``shard``; returns its new state."""
        if not isinstance(shard, str) or not shard:
            raise InvalidValueError(f"shard must be a non-empty str, got {shard!r}")
        processed = check_int("processed", processed, 0)
        backlog = check_int("backlog", backlog, 0)
        errors = check_int("errors", errors, 0, processed)
        interval = check_finite("interval", interval)
        if interval <= 0:
            raise InvalidValueError(f"interval must be > 0 seconds, got {interval}")
        latency = check_finite("latency_seconds", latency_seconds)
        if latency < 0:
            raise InvalidValueError(f"latency_seconds must be >= 0, got {latency}")
        t = self.thresholds
        with self._lock:
            h = self._shards.setdefault(shard, ShardHealth(shard))
            h.throughput = processed / interval
            h.backlog = backlog
            h.lag_seconds = backlog / h.throughput if h.throughput > 0 else (float("inf") if backlog else 0.0)
            h.latency_seconds = latency
            h.error_rate = errors / processed if processed else 0.0
            h.stalled_for = h.stalled_for + 1 if (backlog and not processed) else 0
            failed, degraded = [], []
            if h.stalled_for >= t.stall_intervals:
                failed.append(f"no progress for {h.stalled_for} intervals with {backlog} waiting")
            for name, value, lo, hi in (
                ("lag", h.lag_seconds, t.degraded_lag, t.failed_lag),
                ("latency", latency, t.degraded_latency, t.failed_latency),
                ("error rate", h.error_rate, t.degraded_error_rate, t.failed_error_rate),
            ):
                if name == "lag" and h.throughput == 0:
                    if backlog:  # stalled: degraded now, failed by the stall rule if it lasts
                        degraded.append(f"no progress with {backlog} waiting")
                    continue
                if value >= hi:
                    failed.append(f"{name} {value:.3g} >= {hi}")
                elif value >= lo:
                    degraded.append(f"{name} {value:.3g} >= {lo}")
            if h.forced:
                failed.append("marked failed")
            if failed:
                new: HealthState = "failed"
            elif degraded:
                new = "degraded"
            else:
                new = "healthy"
            # hysteresis: leave a bad state only after enough clean intervals
            if new == "healthy" and h.state != "healthy":
                h.clean_for += 1
                if h.clean_for < t.recover_intervals:
                    new = h.state
            else:
                h.clean_for = 0
            h.state = new
            h.reasons = failed or degraded
            self._export(h, processed, errors)
            return new

    def sample_backend(self, backend: Backend, queues: list[str], group: str, *,
                       processed: dict[str, int], interval: float,
                       errors: dict[str, int] | None = None,
                       latency: dict[str, float] | None = None) -> dict[str, HealthState]:
        """Record every queue, reading its backlog from ``backend`` (consumer lag of ``group``)."""
        out = {}
        for q in queues:
            out[q] = self.record(q, processed=processed.get(q, 0), backlog=backend.backlog(q, group),
                                 interval=interval, errors=(errors or {}).get(q, 0),
                                 latency_seconds=(latency or {}).get(q, 0.0))
        return out

    def mark_failed(self, shard: str) -> None:
        """Force ``failed`` (an operator or a liveness probe knows better)."""
        with self._lock:
            h = self._shards.setdefault(shard, ShardHealth(shard))
            h.forced, h.state, h.reasons = True, "failed", ["marked failed"]
            self._g_state.labels(shard).set(2)

    def clear(self, shard: str) -> None:
        """Undo :meth:`mark_failed`; the next clean intervals bring it back to healthy."""
        with self._lock:
            if shard not in self._shards:
                raise UnknownNodeError(f"shard {shard!r} is not monitored")
            self._shards[shard].forced = False

    def forget(self, shard: str) -> None:
        """Stop tracking a retired shard (and drop its metrics)."""
        with self._lock:
            if self._shards.pop(shard, None) is None:
                return
            for g in (self._g_thr, self._g_backlog, self._g_lag, self._g_lat, self._g_err,
                      self._g_state, self._c_proc, self._c_err):
                try:
                    g.remove(shard)
                except KeyError:
                    pass

    # ------------------------------------------------------------------ output
    def state(self, shard: str) -> HealthState:
        with self._lock:
            h = self._shards.get(shard)
            return h.state if h else "healthy"

    def capacity_factor(self, shard: str) -> float:
        """1 for healthy (or unknown), ``degraded_capacity`` for degraded, 0 for failed."""
        s = self.state(shard)
        return 1.0 if s == "healthy" else (self.thresholds.degraded_capacity if s == "degraded" else 0.0)

    def snapshot(self) -> dict[str, ShardHealth]:
        with self._lock:
            return {k: ShardHealth(**vars(v)) for k, v in self._shards.items()}

    def counts(self) -> dict[str, int]:
        out = {"healthy": 0, "degraded": 0, "failed": 0}
        with self._lock:
            for h in self._shards.values():
                out[h.state] += 1
        return out

    def prometheus_text(self) -> bytes:
        """All metrics in the Prometheus exposition format."""
        return generate_latest(self.registry)

    def _export(self, h: ShardHealth, processed: int, errors: int) -> None:
        s = h.shard
        self._g_thr.labels(s).set(h.throughput)
        self._g_backlog.labels(s).set(h.backlog)
        self._g_lag.labels(s).set(h.lag_seconds if h.lag_seconds != float("inf") else -1)
        self._g_lat.labels(s).set(h.latency_seconds)
        self._g_err.labels(s).set(h.error_rate)
        self._g_state.labels(s).set(_STATE_CODE[h.state])
        self._c_proc.labels(s).inc(processed)
        self._c_err.labels(s).inc(errors)
