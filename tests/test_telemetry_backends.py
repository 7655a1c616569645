"""Telemetry through real engines: records published to a Redis stream / RabbitMQ queue via the
backend plugins (entry points, ``fastshard.backends.get``) and consumed by QueueIngestor.

Skipped locally when a server is down; fails under CI=true (``require_server``).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from fastshard.backends import backend_classes
from fastshard.backends import get as get_backend
from fastshard.telemetry import (
    QueueIngestor,
    RegionRecord,
    ServiceRecord,
    TelemetryAggregator,
    publish_records,
)
from fastshard.testing.servers import require_server

pytestmark = pytest.mark.integration

ENGINES = {
    "redis": ("Redis", "127.0.0.1", 6379),
    "rabbitmq": ("RabbitMQ", "127.0.0.1", 5672),
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request):
    name = request.param
    if name not in backend_classes():
        pytest.skip(f"the fastshard-{name} plugin is not installed")
    require_server(*ENGINES[name])
    tag = f"fs-tel-{uuid.uuid4().hex[:10]}"
    if name == "redis":
        backend = get_backend("redis", namespace=tag, visibility_timeout=1.0)
    else:
        backend = get_backend("rabbitmq", prefix=tag + ".", visibility_timeout=1.0)
    yield backend
    try:
        backend.delete_queue("telemetry")
        drop = getattr(backend, "drop_namespace", None)
        if drop is not None:
            drop()
    finally:
        backend.close()


def test_records_flow_from_a_real_queue_into_step_vectors(engine):
    engine.create_queue("telemetry")
    agg = TelemetryAggregator(step=10, grace=0)
    ingest = QueueIngestor(engine, "telemetry", agg, batch=3)
    publish_records(engine, "telemetry", [
        ServiceRecord("checkout", 1.0, counts={"transactional": 5, "error": 1}),
        ServiceRecord("checkout", 4.0, counts={"transactional": 2}),
        RegionRecord("eu-west", 2.0, cpu=40.0, latency_ms=8.0),
        ServiceRecord("checkout", 11.0, counts={"transactional": 7}),
    ])
    engine.publish("telemetry", "checkout", b"\xff not json")
    engine.publish("telemetry", "checkout",
                   json.dumps({"service": "checkout", "timestamp": 3.0, "counts": {"x": -1}}))
    accepted = rejected = 0
    deadline = time.monotonic() + 20
    while accepted + rejected < 6 and time.monotonic() < deadline:
        rep = ingest.poll(timeout=0.5, now=12.0)
        accepted += rep.accepted
        rejected += rep.n_rejected
    assert (accepted, rejected) == (4, 2)
    assert dict(agg.totals.rejected) == {"bad_json": 1, "negative_value": 1}
    out = agg.close_steps(20.0)
    assert [s for s, _ in out] == [0.0, 10.0]
    v0, v1 = out[0][1], out[1][1]
    assert v0[agg.index_of(("checkout", "transactional"))] == 7
    assert v0[agg.index_of(("checkout", "error"))] == 1
    assert v0[agg.index_of(("region", "eu-west", "cpu"))] == 40
    assert v1[agg.index_of(("checkout", "transactional"))] == 7
    assert v1[agg.index_of(("checkout", "error"))] == 0
    # everything was acked, poison included: nothing comes back after the visibility timeout
    time.sleep(1.2)
    assert ingest.poll(timeout=0.5, now=30.0).accepted == 0
    assert engine.backlog("telemetry", ingest.group) == 0
