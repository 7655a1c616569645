"""HealthMonitor: thresholds -> healthy / degraded / failed with hysteresis; Prometheus export."""

from __future__ import annotations

import pytest

from fastshard.backends.memory import MemoryBackend
from fastshard.errors import InvalidValueError, UnknownNodeError
from fastshard.sharding import HealthMonitor, HealthThresholds


def test_healthy_shard_and_its_metrics():
    h = HealthMonitor()
    assert h.record("q1", processed=500, backlog=100, interval=10.0, latency_seconds=0.02) == "healthy"
    snap = h.snapshot()["q1"]
    assert snap.throughput == 50.0 and snap.lag_seconds == 2.0 and snap.error_rate == 0.0
    assert h.capacity_factor("q1") == 1.0
    assert h.capacity_factor("never-seen") == 1.0


@pytest.mark.parametrize(
    ("kwargs", "state"),
    [
        ({"processed": 100, "errors": 10}, "degraded"),  # 10% errors
        ({"processed": 100, "errors": 60}, "failed"),  # 60% errors
        ({"processed": 100, "latency_seconds": 2.0}, "degraded"),
        ({"processed": 100, "latency_seconds": 60.0}, "failed"),
        ({"processed": 10, "backlog": 1000}, "degraded"),  # lag 100 s
        ({"processed": 1, "backlog": 1000}, "failed"),  # lag 1000 s
    ],
)
def test_thresholds(kwargs, state):
    h = HealthMonitor()
    args = {"backlog": 0, "interval": 1.0, **kwargs}
    assert h.record("q", **args) == state
    assert h.capacity_factor("q") == {"degraded": 0.5, "failed": 0.0}[state]
    assert h.snapshot()["q"].reasons


def test_a_stalled_shard_fails_after_stall_intervals():
    h = HealthMonitor(HealthThresholds(stall_intervals=3))
    states = [h.record("q", processed=0, backlog=5, interval=1.0) for _ in range(3)]
    assert states == ["degraded", "degraded", "failed"]


def test_recovery_needs_clean_intervals():
    h = HealthMonitor(HealthThresholds(recover_intervals=2))
    h.record("q", processed=100, errors=10, backlog=0, interval=1.0)
    assert h.record("q", processed=100, backlog=0, interval=1.0) == "degraded"
    assert h.record("q", processed=100, backlog=0, interval=1.0) == "healthy"


def test_mark_failed_and_clear():
    h = HealthMonitor()
    h.mark_failed("q")
    assert h.state("q") == "failed" and h.capacity_factor("q") == 0.0
    assert h.record("q", processed=10, backlog=0, interval=1.0) == "failed"
    h.clear("q")
    h.record("q", processed=10, backlog=0, interval=1.0)
    assert h.record("q", processed=10, backlog=0, interval=1.0) == "healthy"
    with pytest.raises(UnknownNodeError):
        h.clear("other")


def test_prometheus_export_and_forget():
    h = HealthMonitor()
    h.record("fs.default.s0", processed=30, errors=3, backlog=7, interval=1.0, latency_seconds=0.5)
    text = h.prometheus_text().decode()
    assert 'fastshard_shard_backlog{shard="fs.default.s0"} 7.0' in text
    assert 'fastshard_shard_state{shard="fs.default.s0"} 1.0' in text
    assert 'fastshard_shard_processed_total{shard="fs.default.s0"} 30.0' in text
    h.forget("fs.default.s0")
    assert "fs.default.s0" not in h.prometheus_text().decode()
    assert h.counts() == {"healthy": 0, "degraded": 0, "failed": 0}


def test_backlog_is_read_from_the_backend():
    b = MemoryBackend()
    b.create_queue("q")
    for i in range(4):
        b.publish("q", "k", str(i))
    h = HealthMonitor()
    states = h.sample_backend(b, ["q"], "g", processed={"q": 2}, interval=1.0)
    assert states == {"q": "healthy"} and h.snapshot()["q"].backlog == 4


def test_bad_measurements_are_rejected():
    h = HealthMonitor()
    with pytest.raises(InvalidValueError, match=r"errors must be in \[0, 5\]"):
        h.record("q", processed=5, errors=6, backlog=0, interval=1.0)
    with pytest.raises(InvalidValueError, match="interval must be > 0"):
        h.record("q", processed=5, backlog=0, interval=0.0)
    with pytest.raises(InvalidValueError, match="backlog must be in"):
        h.record("q", processed=5, backlog=-1, interval=1.0)
    with pytest.raises(InvalidValueError, match="degraded_lag < failed_lag"):
        HealthThresholds(degraded_lag=10, failed_lag=5)
    assert h.snapshot() == {}  # nothing recorded by a rejected call
