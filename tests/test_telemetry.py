"""Telemetry: record validation, binning, lateness, out-of-order arrival, queue ingestion, agent."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard.backends import get as get_backend
from fastshard.errors import InvalidTypeError, InvalidValueError
from fastshard.forecast import Forecaster
from fastshard.telemetry import (
    QueueIngestor,
    RecordError,
    RegionalLoadAgent,
    RegionRecord,
    ServiceRecord,
    TelemetryAggregator,
    encode_record,
    publish_records,
    record_from_dict,
)


def svc(service, ts, **counts):
    return ServiceRecord(service, ts, counts=counts)


# ---------------------------------------------------------------------------- records
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"service": "a", "timestamp": 1, "colour": "red"}, "unknown_field"),
        ({"service": "a", "timestamp": 1, "counts": {"error": -1}}, "negative_value"),
        ({"service": "a", "timestamp": 1, "counts": {"error": float("nan")}}, "not_finite"),
        ({"service": "a", "timestamp": float("inf")}, "not_finite"),
        ({"service": "a", "timestamp": "yesterday"}, "bad_type"),
        ({"service": "a"}, "missing_field"),
        ({"service": "bad name!", "timestamp": 1}, "bad_name"),
        ({"service": "a", "timestamp": 1, "counts": {"": 1}}, "bad_name"),
        ({"region": "eu", "timestamp": 1, "cpu": 180}, "out_of_range"),
        ({"region": "eu", "timestamp": 1, "latency_ms": -3}, "negative_value"),
        ({"kind": "host", "timestamp": 1}, "bad_type"),
        ({"timestamp": 1}, "missing_field"),
    ],
)
def test_bad_records_name_their_reason_and_field(payload, reason):
    with pytest.raises(RecordError) as info:
        record_from_dict(payload)
    assert info.value.reason == reason
    assert isinstance(info.value, InvalidValueError)


def test_record_json_round_trip():
    r = ServiceRecord("checkout", 12.5, counts={"transactional": 3, "fraud_check": 1},
                      load=0.7, active_users=42, predicted={"transactional": 4})
    back = record_from_dict(json.loads(encode_record(r)))
    assert back == r
    g = RegionRecord("eu-west", 3.0, cpu=55.0, memory=40.0, queue_length=7, latency_ms=12.0)
    assert record_from_dict(json.loads(encode_record(g))) == g


# ---------------------------------------------------------------------------- aggregation
def test_bins_sum_counts_and_average_gauges():
    agg = TelemetryAggregator(step=10, grace=0)
    rep = agg.add([
        svc("a", 1, transactional=2, error=1),
        svc("a", 9.99, transactional=3),
        ServiceRecord("a", 5, load=0.2),
        ServiceRecord("a", 6, load=0.4),
        RegionRecord("eu", 2, cpu=10, memory=50),
        RegionRecord("eu", 8, cpu=30),
        svc("a", 10, transactional=7),
    ], now=10)
    assert rep.accepted == 7 and rep.n_rejected == 0
    out = agg.close_steps(20)
    assert [s for s, _ in out] == [0.0, 10.0]
    keys = agg.series_keys
    v0 = dict(zip(keys, out[0][1], strict=True))
    assert v0[("a", "transactional")] == 5 and v0[("a", "error")] == 1
    assert v0[("service", "a", "load")] == pytest.approx(0.3)
    assert v0[("region", "eu", "cpu")] == 20 and v0[("region", "eu", "memory")] == 50
    v1 = dict(zip(keys, out[1][1], strict=True))
    # a reported in step 1 without "error": zero errors, not unknown; gauges unknown
    assert v1[("a", "transactional")] == 7 and v1[("a", "error")] == 0
    assert math.isnan(v1[("service", "a", "load")]) and math.isnan(v1[("region", "eu", "cpu")])


def test_silent_service_is_missing_and_empty_steps_are_emitted():
    agg = TelemetryAggregator(step=1, grace=0)
    agg.add([svc("a", 0.5, x=1), svc("b", 0.5, x=2), svc("a", 3.5, x=4)], now=4)
    out = agg.close_steps(4)
    assert [s for s, _ in out] == [0.0, 1.0, 2.0, 3.0]
    ia, ib = agg.index_of(("a", "x")), agg.index_of(("b", "x"))
    assert out[0][1][ia] == 1 and out[0][1][ib] == 2
    assert np.isnan(out[1][1]).all() and np.isnan(out[2][1]).all()
    assert out[3][1][ia] == 4 and np.isnan(out[3][1][ib])


def test_late_records_within_grace_count_and_later_ones_are_reported():
    agg = TelemetryAggregator(step=10, grace=5)
    agg.add([svc("a", 1, x=1)], now=1)
    assert agg.close_steps(14) == []  # step [0, 10) is still inside its grace window
    agg.add([svc("a", 9, x=2)], now=14)  # late but within grace: counted
    out = agg.close_steps(15)
    assert len(out) == 1 and out[0][1][0] == 3
    rep = agg.add([svc("a", 2, x=100), svc("a", 12, x=1)], now=16)
    assert rep.too_late == 1 and rep.accepted == 1
    assert agg.totals.too_late == 1 and agg.totals.accepted == 3


def test_future_timestamps_are_rejected_and_good_records_kept():
    agg = TelemetryAggregator(step=60, grace=0, max_future=30)
    rep = agg.add([
        svc("a", 100, x=1),
        svc("a", 1000, x=1),
        {"service": "a", "timestamp": 50, "counts": {"x": -2}},
        {"service": "a", "timestamp": 50, "cunts": {"x": 2}},
        svc("a", 110, x=2),
    ], now=120)
    assert rep.accepted == 2
    assert dict(rep.rejected) == {"future_timestamp": 1, "negative_value": 1, "unknown_field": 1}
    assert [e[0] for e in rep.errors] == [1, 2, 3]
    assert "cunts" in rep.errors[2][2]
    (start, v), = agg.close_steps(121)
    assert start == 60 and v[0] == 3


def test_new_series_appear_without_moving_old_ones():
    agg = TelemetryAggregator(step=1, grace=0)
    agg.add([svc("a", 0, x=1)], now=0)
    (_, v0), = agg.close_steps(1)
    agg.add([svc("b", 1, y=5), svc("a", 1, x=2)], now=1)
    (_, v1), = agg.close_steps(2)
    assert agg.series_keys[:1] == [("a", "x")] and len(v0) == 1 and len(v1) == 2
    assert v1[0] == 2 and v1[1] == 5


def test_reported_predictions_flow_to_the_forecaster():
    agg = TelemetryAggregator(step=1, grace=0)
    f = Forecaster(0, (4,))
    for t in range(40):
        agg.add([ServiceRecord("a", t + 0.5, counts={"x": 10 + t % 4},
                               predicted={"x": 10 + (t + 1) % 4})], now=t + 0.5)
        for _, values, reported in agg.close_steps(t + 1, with_reported=True):
            if len(values) > f.n_series:
                f.add_series(len(values) - f.n_series)
            f.update(values, reported=reported)
    assert f.predict(1)[0, 0] == pytest.approx(10 + 40 % 4, abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"]),
                  st.floats(0, 49.99), st.integers(0, 20)),
        min_size=1, max_size=60,
    ),
    seed=st.integers(0, 2**32 - 1),
    grace=st.sampled_from([0.0, 3.0, 12.0]),
)
def test_out_of_order_arrival_within_grace_equals_in_order(data, seed, grace):
    """Shuffle the records, deliver them with arrival delays and close steps as time passes:
    every record either lands in its step (same totals as in-order ingestion) or is counted
    as too late -- exactly those whose arrival came after their step's grace ran out."""
    rng = np.random.default_rng(seed)
    step = 5.0
    recs = [svc(s, ts, **{m: c}) for s, m, ts, c in data]
    delays = rng.uniform(0, 20, len(recs))
    arrival = sorted(range(len(recs)), key=lambda i: recs[i].timestamp + delays[i])
    agg = TelemetryAggregator(step=step, grace=grace, max_future=1e9)
    closed: dict[float, np.ndarray] = {}
    late_expected = 0
    horizon_closed = -math.inf  # end of the last closed step
    on_time = []
    for i in arrival:
        now = recs[i].timestamp + delays[i]
        for start, v in agg.close_steps(now):
            closed[start] = v
            horizon_closed = start + step
        late = recs[i].timestamp < horizon_closed
        late_expected += late
        rep = agg.add([recs[i]], now=now)
        assert (rep.too_late, rep.accepted) == ((1, 0) if late else (0, 1))
        if not late:
            on_time.append(recs[i])
    for start, v in agg.close_steps(100.0):  # after every arrival (<= 70) and grace (<= 12)
        closed[start] = v
    assert agg.totals.too_late == late_expected
    assert agg.totals.accepted + agg.totals.too_late == len(recs)
    # the closed vectors hold exactly the sums of the on-time records, whatever their order
    want: dict[tuple[float, tuple], float] = {}
    for r in on_time:
        (m, c), = r.counts.items()
        k = (math.floor(r.timestamp / step) * step, (r.service, m))
        want[k] = want.get(k, 0.0) + c
    keys = agg.series_keys
    got = {}
    for start, v in closed.items():
        for j, key in enumerate(keys[: len(v)]):
            if not np.isnan(v[j]) and v[j] != 0:
                got[(start, key)] = v[j]
    assert got == {k: w for k, w in want.items() if w != 0}
    # every step between the first and the last closed one was emitted, in order
    starts = sorted(closed)
    assert starts == [starts[0] + step * j for j in range(len(starts))]


def test_aggregator_argument_checks():
    with pytest.raises(InvalidValueError, match="step must be in"):
        TelemetryAggregator(step=0, grace=1)
    with pytest.raises(InvalidValueError, match="grace must be >= 0"):
        TelemetryAggregator(step=1, grace=-1)
    agg = TelemetryAggregator(step=1, grace=0)
    with pytest.raises(InvalidTypeError, match="iterable of records"):
        agg.add(svc("a", 0, x=1))
    rep = agg.add([42], now=0)
    assert dict(rep.rejected) == {"bad_type": 1}
    with pytest.raises(InvalidValueError, match="limit"):
        agg.close_steps(5, limit=0)


def test_close_limit_spreads_a_long_gap_over_calls():
    agg = TelemetryAggregator(step=1, grace=0)
    agg.add([svc("a", 0, x=1)], now=0)
    first = agg.close_steps(1_000, limit=10)
    assert len(first) == 10 and first[0][0] == 0.0
    rest = agg.close_steps(1_000, limit=10_000)
    assert rest[0][0] == 10.0 and rest[-1][0] == 999.0  # [999, 1000) has ended at 1000


# ---------------------------------------------------------------------------- queue ingestion
def test_queue_ingestion_counts_poison_and_acks_everything():
    backend = get_backend("memory")
    backend.create_queue("telemetry")
    agg = TelemetryAggregator(step=10, grace=0)
    ing = QueueIngestor(backend, "telemetry", agg, batch=2)
    publish_records(backend, "telemetry", [svc("a", 1, x=1), svc("a", 2, x=2),
                                           RegionRecord("eu", 3, cpu=50.0)])
    backend.publish("telemetry", "a", b"{not json")
    backend.publish("telemetry", "a", json.dumps({"service": "a", "timestamp": 4,
                                                  "counts": {"x": -1}}))
    backend.publish("telemetry", "a", json.dumps([{"service": "a", "timestamp": 5,
                                                   "counts": {"x": 4}}]))
    rep = ing.drain(now=6)
    assert rep.accepted == 4
    assert dict(rep.rejected) == {"bad_json": 1, "negative_value": 1}
    assert backend.backlog("telemetry", ing.group) == 0
    (_, v), = agg.close_steps(10)
    assert v[agg.index_of(("a", "x"))] == 7 and v[agg.index_of(("region", "eu", "cpu"))] == 50


def test_publish_validates_every_record_before_sending():
    backend = get_backend("memory")
    backend.create_queue("t")
    with pytest.raises(InvalidTypeError):
        publish_records(backend, "t", [svc("a", 1, x=1), {"service": "a"}])  # type: ignore[list-item]
    assert backend.backlog("t", "g") == 0


# ---------------------------------------------------------------------------- agent
def test_agent_samples_host_and_service_metrics():
    agent = RegionalLoadAgent("eu-west", queue_length=lambda: 17, clock=lambda: 1234.0)
    agent.observe_latency(10.0)
    agent.observe_latency(30.0)
    r = agent.sample()
    assert r.region == "eu-west" and r.timestamp == 1234.0
    assert 0 <= r.cpu <= 100 and 0 < r.memory <= 100
    assert r.queue_length == 17 and r.latency_ms == 20.0
    assert agent.sample().latency_ms is None  # the window restarts after each sample
    with pytest.raises(InvalidValueError, match="ms must be >= 0"):
        agent.observe_latency(-1)


def test_agent_run_publishes_until_stopped():
    backend = get_backend("memory")
    backend.create_queue("regions")
    agent = RegionalLoadAgent("eu")
    stop = threading.Event()
    result: list[int] = []
    th = threading.Thread(target=lambda: result.append(agent.run(backend, "regions", 0.01, stop)))
    th.start()
    msgs: list = []
    while len(msgs) < 3:
        msgs += backend.consume("regions", "g", max_messages=10, timeout=1.0)
    stop.set()
    th.join(5)
    assert not th.is_alive() and result[0] >= 3
    rec = record_from_dict(json.loads(msgs[0].value))
    assert isinstance(rec, RegionRecord) and rec.region == "eu"
