"""A regional load agent: samples the local host with psutil and reports a RegionRecord.

CPU and memory come from psutil; queue length and processing latency are the service's own,
so the agent takes them from callables (e.g. ``lambda: backend.backlog(q, group)``) and from
latencies the service reports to :meth:`RegionalLoadAgent.observe_latency`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import psutil

from fastshard.backends.base import Backend, validate_name
from fastshard.errors import InvalidTypeError, InvalidValueError, check_finite, check_int
from fastshard.telemetry.ingest import publish_records
from fastshard.telemetry.records import RegionRecord


class RegionalLoadAgent:
    """Samples CPU, memory, queue length and latency for region ``region``.

    ``sample()`` returns one :class:`RegionRecord`. CPU is the utilisation since the previous
    sample (psutil's non-blocking mode; the first call primes it at construction).
    ``latency_window`` latencies observed since the last sample are averaged (the window
    is bounded so a burst cannot grow memory).
    """

    def __init__(
        self,
        region: str,
        *,
        queue_length: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.time,
        latency_window: int = 10_000,
    ) -> None:
        self.region = validate_name("region", region)
        if queue_length is not None and not callable(queue_length):
            raise InvalidTypeError("queue_length must be a callable returning a number")
        if not callable(clock):
            raise InvalidTypeError("clock must be a callable returning seconds")
        self._queue_length = queue_length
        self._clock = clock
        self._latencies: deque[float] = deque(maxlen=check_int("latency_window", latency_window, 1))
        self._lock = threading.Lock()
        psutil.cpu_percent(interval=None)  # prime: the next call measures from here

    def observe_latency(self, ms: float) -> None:
        """Record one processing latency in milliseconds (>= 0)."""
        v = check_finite("ms", ms)
        if v < 0:
            raise InvalidValueError(f"ms must be >= 0, got {ms}")
        with self._lock:
            self._latencies.append(v)

    def sample(self) -> RegionRecord:
        cpu = float(psutil.cpu_percent(interval=None))
        mem = float(psutil.virtual_memory().percent)
        ql = None if self._queue_length is None else float(self._queue_length())
        with self._lock:
            lat = sum(self._latencies) / len(self._latencies) if self._latencies else None
            self._latencies.clear()
        return RegionRecord(
            region=self.region,
            timestamp=float(self._clock()),
            cpu=min(max(cpu, 0.0), 100.0),
            memory=min(max(mem, 0.0), 100.0),
            queue_length=ql,
            latency_ms=lat,
        )

    def run(
        self,
        backend: Backend,
        queue: str,
        interval: float,
        stop: threading.Event,
    ) -> int:
        """Publish a sample every ``interval`` seconds until ``stop`` is set; returns how many.

        Meant for a thread: ``threading.Thread(target=agent.run, args=(b, q, 5.0, ev))``.
        A failed publish raises (after the backend's retries) and ends the loop.
        """
        iv = check_finite("interval", interval)
        if iv <= 0:
            raise InvalidValueError(f"interval must be > 0 seconds, got {interval}")
        validate_name("queue", queue)
        sent = 0
        while not stop.is_set():
            publish_records(backend, queue, [self.sample()])
            sent += 1
            stop.wait(iv)
        return sent
