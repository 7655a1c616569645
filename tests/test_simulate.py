"""The simulator: deterministic workloads from real series, three policies on the same
traffic, the goal metrics, the message-level checks, and the HTML report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastshard.errors import InvalidValueError
from fastshard.simulate import SimConfig, SimulationResult, WorkloadConfig, build_workload, simulate
from fastshard.simulate.report import comparison_table, goal_met, markdown_table, write_report
from fastshard.simulate.workload import Workload, load_csv, load_dataset

SMALL = WorkloadConfig(steps=72, offset=200, keys=2000, hot_set=10, rotate_every=24,
                       hot_key_step=40, hot_key_steps=6)


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    w = build_workload("pedestrian", SMALL)
    return simulate(w, SimConfig(warmup=168, sample_messages=20, fail_step=60), source="pedestrian")


def test_datasets_load_as_per_service_volumes():
    names, vols, season = load_dataset("pedestrian")
    assert len(names) == 4 and vols.shape[1] == 4 and season == 24
    assert vols.shape[0] > 10_000 and (vols >= 0).all()
    names, vols, season = load_dataset("bank_calls")
    assert names == ["bank-calls"] and vols.shape[1] == 1 and season == 28
    assert vols.shape[0] % 28 == 0  # whole days: the season stays in phase
    with pytest.raises(InvalidValueError, match="dataset must be one of"):
        load_dataset("weather")


def test_workload_is_deterministic_and_rotates_its_hot_set():
    a = build_workload("pedestrian", SMALL)
    b = build_workload("pedestrian", SMALL)
    assert np.array_equal(a.sample(5), b.sample(5)) and np.array_equal(a.hashes, b.hashes)
    assert not np.array_equal(a.sample(5), a.sample(6))
    assert not np.array_equal(a.shares(0), a.shares(24))  # rotated
    assert np.array_equal(a.shares(0), a.shares(23))
    # each service's keys share its whole volume
    exp = a.expected(3)
    per_service = np.bincount(a.key_service, weights=exp, minlength=4)
    assert np.allclose(per_service, a.volumes[3])
    a.hot_key_load = 1000.0
    assert a.hot_key_active(40) and not a.hot_key_active(46)
    assert a.expected(40)[a.hot_key] >= 1000.0 and a.expected(39)[a.hot_key] < 1000.0


def test_csv_replay_input_is_validated(tmp_path):
    good = tmp_path / "v.csv"
    good.write_text("time,a,b\n1,10,20\n2,,30\n3,5,40\n")
    names, vols = load_csv(good)
    assert names == ["a", "b"] and vols[1].tolist() == [10.0, 30.0]  # empty carries forward
    for text, msg in [
        ("time,a\n1,x\n2,3\n", "column 'a' must be a number"),
        ("time,a\n1,-1\n2,3\n", "must be >= 0"),
        ("time,a\n1,2,3\n2,3\n", "expected 2 columns"),
        ("time\n1\n", "need a header"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(InvalidValueError, match=msg):
            load_csv(bad)
    with pytest.raises(InvalidValueError, match="existing CSV file"):
        load_csv(tmp_path / "missing.csv")
    with pytest.raises(InvalidValueError, match="steps \\+ offset must be <= 3"):
        Workload(names, vols, WorkloadConfig(steps=8, offset=0))


def test_every_policy_sees_the_same_traffic(result):
    totals = [r.series["total"] for r in result.runs]
    assert [r.policy for r in result.runs] == ["static", "reactive", "predictive"]
    assert totals[0] == totals[1] == totals[2]


def test_static_never_acts_and_dynamic_policies_do(result):
    m = {r.policy: r.metrics for r in result.runs}
    assert sum(m["static"]["actions"].values()) == 0 and m["static"]["shards_max"] == 8
    for p in ("reactive", "predictive"):
        assert sum(m[p]["actions"].values()) > 0
        assert m[p]["actions"]["drain"] == 1  # the injected failure was drained
        assert m[p]["overload_exposure"] < m["static"]["overload_exposure"]


def test_messages_are_never_lost_or_reordered(result):
    for r in result.runs:
        m = r.metrics
        assert m["routed_messages"] == 72 * 20
        assert m["lost_messages"] == 0 and m["order_violations"] == 0 and m["duplicates"] == 0
    assert any(r.metrics["fences_released"] > 0 for r in result.runs)


def test_hot_key_is_isolated_within_one_interval_by_dynamic_policies(result):
    m = {r.policy: r.metrics for r in result.runs}
    assert m["static"]["hot_key_latency"] == -1  # never
    assert m["reactive"]["hot_key_latency"] == 1 and m["predictive"]["hot_key_latency"] == 1


def test_metrics_are_consistent(result):
    for r in result.runs:
        m = r.metrics
        assert m["telemetry_rejected"] == 0  # every service report was binned
        assert 1.0 <= m["imbalance_p50"] <= m["imbalance_p99"]
        assert 0.0 <= m["overload_exposure"] < 1.0
        assert m["keys_moved_max"] <= 1.0
        assert len(r.series["imbalance"]) == 72
        if r.policy != "static":
            assert m["plan_ms_max"] > 0
    fc = result.runs[2].metrics["mitigated_before_start"]
    assert math.isnan(fc) or 0.0 <= fc <= 1.0


def test_result_round_trips_through_dict(result):
    back = SimulationResult.from_dict(result.to_dict())
    assert back.runs[1].metrics == result.runs[1].metrics and back.capacity == result.capacity
    with pytest.raises(InvalidValueError, match="not a fastshard simulation result"):
        SimulationResult.from_dict({"runs": []})


def test_report_writes_html_and_plots(result, tmp_path):
    path = write_report(result, tmp_path / "rep")
    html = path.read_text()
    for png in ("shard_load.png", "predicted.png", "events.png", "overload.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 5000
        assert f'src="{png}"' in html
    assert "predictive" in html and "overload exposure" in html
    assert "| goal | target | static | reactive | predictive |" in markdown_table(result)
    assert comparison_table(result).row_count >= 10
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InvalidValueError, match="must name a directory"):
        write_report(result, f)


def test_goal_checks():
    runs = {"reactive": {"overload_exposure": 0.02}}
    assert goal_met("overload_exposure", {"overload_exposure": 0.009}, runs) is True
    assert goal_met("overload_exposure", {"overload_exposure": 0.011}, runs) is False
    assert goal_met("imbalance_p50", {"imbalance_p50": 1.2}, runs) is False
    assert goal_met("hot_key_latency", {"hot_key_latency": -1}, runs) is False
    assert goal_met("unnecessary_proactive", {"unnecessary_proactive": float("nan")}, runs) is None


def test_bad_simulation_config_is_rejected():
    with pytest.raises(InvalidValueError, match="policies must be a non-empty subset"):
        SimConfig(policies=("psychic",))
    with pytest.raises(InvalidValueError, match="headroom must be in"):
        SimConfig(headroom=0.0)
    with pytest.raises(InvalidValueError, match="zipf must be in"):
        WorkloadConfig(zipf=0)


def test_key_shares_follow_a_popularity_shift_at_once():
    """Shares are learned from decayed counts, but a key whose count departs from its
    estimate by many Poisson deviations (a hot set handed to other keys) is re-learned at
    once instead of being averaged in over many steps."""
    from fastshard.simulate.feed import KeyShares

    rng = np.random.default_rng(0)
    key_service = np.zeros(4, dtype=np.int64)
    shares = KeyShares(key_service)
    before = np.array([0.6, 0.2, 0.1, 0.1])
    for _ in range(20):
        est = shares.update(rng.poisson(before * 10_000).astype(float), np.array([10_000.0]))
    assert np.allclose(est, before, atol=0.01) and shares.resets < 5
    after = np.array([0.1, 0.2, 0.1, 0.6])  # keys 0 and 3 swap popularity
    est = shares.update(rng.poisson(after * 10_000).astype(float), np.array([10_000.0]))
    assert np.allclose(est, after, atol=0.02)
    with pytest.raises(InvalidValueError, match="decay must be in"):
        KeyShares(key_service, decay=1.0)
