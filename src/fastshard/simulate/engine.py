"""The simulator loop: telemetry -> forecasts -> manager -> routing -> health, per policy.

Each step of a run:

1. the step's traffic arrives (Poisson counts per key from :class:`Workload`), is binned
   per slice of the policy's current shard map and per shard, and scored (imbalance,
   overload against health-adjusted capacity, the hot-key check);
2. a sample of real messages is published through the :class:`Router` on an in-memory
   backend and consumed through fenced consumers that lag behind (order and loss checks);
3. each shard's backlog model feeds the :class:`HealthMonitor` (a failure is injected
   once, at ``fail_step``, on the busiest shard);
4. services report their counts as telemetry records; the aggregator closes the step and
   the policy observes its vector (the forecaster learns); the policy plans against the
   map and the manager applies the plan (one epoch); moved keys and load are counted.

All policies see the same counts (the workload is a pure function of seed and step).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastshard.backends.memory import MemoryBackend
from fastshard.errors import InvalidValueError, check_finite, check_int
from fastshard.sharding import (
    POLICIES,
    HealthMonitor,
    HealthThresholds,
    Merge,
    PlannerConfig,
    Reassign,
    Router,
    ShardManager,
    action_kind,
    make_policy,
)
from fastshard.sharding.planner import MapView
from fastshard.shardmap import ShardMap
from fastshard.simulate.feed import KeyShares, TelemetryFeed
from fastshard.simulate.metrics import OrderChecker, summarize
from fastshard.simulate.workload import Workload

EVENT_KINDS = ("split", "isolate", "resize", "merge", "move", "drain")


@dataclass(frozen=True)
class SimConfig:
    shards: int = 8
    nodes: int = 4
    headroom: float = 0.8  # capacity = p90 of total volume / (shards x headroom)
    horizon: int = 2
    q: float = 0.9
    warmup: int = 336  # history steps the forecaster learns from before the run
    sample_messages: int = 40  # real messages routed per step
    consume_per_step: int = 30  # per queue: consumers lag, so fences really hold
    fail_step: int | None = -1  # -1: at 80% of the run; None: no failure
    max_shards: int = 256
    #: dynamic policies keep at least this many shards (consumers, for availability) however
    #: low the load (at most ``shards``)
    min_shards: int = 2
    policies: tuple[str, ...] = POLICIES

    def __post_init__(self) -> None:
        check_int("shards", self.shards, 1, 100_000)
        check_int("nodes", self.nodes, 1, 10_000)
        check_int("horizon", self.horizon, 1, 1000)
        check_int("warmup", self.warmup, 0, 10_000_000)
        check_int("sample_messages", self.sample_messages, 0, 100_000)
        check_int("consume_per_step", self.consume_per_step, 1, 100_000)
        check_int("max_shards", self.max_shards, self.shards, 10_000_000)
        check_int("min_shards", self.min_shards, 1, self.max_shards)
        h = check_finite("headroom", self.headroom)
        if not 0.05 <= h <= 2.0:
            raise InvalidValueError(f"headroom must be in [0.05, 2], got {h}")
        if not 0.5 <= check_finite("q", self.q) < 1:
            raise InvalidValueError(f"q must be in [0.5, 1), got {self.q}")
        bad = [p for p in self.policies if p not in POLICIES]
        if bad or not self.policies:
            raise InvalidValueError(f"policies must be a non-empty subset of {list(POLICIES)}, got {list(self.policies)}")


@dataclass
class PolicyRun:
    policy: str
    metrics: dict[str, Any]
    series: dict[str, list[float]] = field(default_factory=dict)
    events: list[tuple[int, str, str]] = field(default_factory=list)  # (step, kind, detail)


@dataclass
class SimulationResult:
    source: str
    services: list[str]
    workload: dict[str, Any]
    config: dict[str, Any]
    capacity: float
    runs: list[PolicyRun]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimulationResult:
        try:
            runs = [PolicyRun(r["policy"], r["metrics"], r["series"], [tuple(e) for e in r["events"]])
                    for r in d["runs"]]
            return cls(d["source"], d["services"], d["workload"], d["config"], float(d["capacity"]),
                       runs, float(d["seconds"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidValueError(f"not a fastshard simulation result: missing or bad {exc}") from None


def forecast_seasons(workload: Workload, cfg: SimConfig) -> tuple[int, ...]:
    """The daily season, plus the week for hourly series with two weeks of warm-up (people
    move differently on weekends: a daily-only model mistakes Saturday for Friday)."""
    if workload.season == 24 and min(cfg.warmup, len(workload.history)) >= 2 * 168:
        return (24, 168)
    return (workload.season,)


def capacity_for(workload: Workload, cfg: SimConfig) -> float:
    total = workload.volumes.sum(axis=1)
    return float(np.quantile(total, 0.9) / (cfg.shards * cfg.headroom))


def static_episodes(workload: Workload, capacity: float, cfg: SimConfig) -> list[tuple[int, int, int, bool]]:
    """Overload starts under the hash-once map: (step, start, end, forecastable).

    An episode starts at step t when a static shard is over capacity at t but was not at
    t-1. It is *forecastable* when the shard would also be over capacity with the volumes of
    step t and the key popularity of step t - horizon (so the overload comes from traffic
    volume, which forecasts see, not from a hot-set rotation or the injected hot key)."""
    m = ShardMap(cfg.shards, [f"node-{i}" for i in range(cfg.nodes)])
    v = MapView.from_map(m)
    key_shard = v.slice_shard[v.slice_of_hash(workload.hashes)]
    out = []
    prev = np.zeros(cfg.shards, dtype=bool)
    for t in range(workload.steps):
        load = np.bincount(key_shard, weights=workload.sample(t), minlength=cfg.shards)
        over = load > capacity
        cf = np.bincount(key_shard, minlength=cfg.shards,
                         weights=workload.expected(t, max(t - cfg.horizon, 0), with_hot_key=False))
        for s in np.flatnonzero(over & ~prev):
            out.append((t, v.starts[s], v.ends[s], bool(cf[s] > capacity)))
        prev = over
    return out


def run_policy(
    workload: Workload,
    policy_name: str,
    cfg: SimConfig,
    capacity: float,
    episodes: list[tuple[int, int, int, bool]],
    on_step: Callable[[], None] | None = None,
) -> PolicyRun:
    from fastshard.forecast import Forecaster

    nodes = [f"node-{i}" for i in range(cfg.nodes)]
    m = ShardMap(cfg.shards, nodes, name=policy_name)
    backend = MemoryBackend()
    router = Router(m, backend)
    # the simulator's clock ticks in steps: lag and latency thresholds are in steps too
    health = HealthMonitor(HealthThresholds(degraded_lag=0.5, failed_lag=50.0, degraded_latency=0.5,
                                            failed_latency=50.0, stall_intervals=3))
    S = len(workload.services)
    forecaster = Forecaster(S, forecast_seasons(workload, cfg)) if policy_name == "predictive" else None
    policy = make_policy(policy_name, forecaster=forecaster,
                         **({"horizon": cfg.horizon, "q": cfg.q} if forecaster else {}))
    pc = policy.planner_config
    policy.planner_config = PlannerConfig(**{**asdict(pc), "max_shards": cfg.max_shards,
                                             "min_shards": min(cfg.min_shards, cfg.shards)})
    manager = ShardManager(m, capacity, router=router, health=health, config=policy.planner_config)
    # services report counts as telemetry records; closed steps feed the forecaster
    feed = TelemetryFeed(workload.services)
    history = workload.history[-cfg.warmup:] if cfg.warmup else workload.history[:0]
    if forecaster is not None:
        for k, row in enumerate(history):
            policy.observe(feed.push(k, np.round(row)))
    t_base = len(history)
    hashes, key_service = workload.hashes, workload.key_service
    T = workload.steps
    fail_step = int(0.8 * T) if cfg.fail_step == -1 else cfg.fail_step
    key_shares = KeyShares(key_service)
    backlog: dict[str, float] = {}
    order = OrderChecker(router, workload.key_names, cfg.consume_per_step)
    s_: dict[str, list[float]] = {k: [] for k in ("imbalance", "imbalance_floor", "mean_util", "overload", "total", "shards", "util_max", "util_p90",
                          "util_p50", "util_min", "predicted", "predicted_upper", "keys_moved", "drain_moved",
                          "plan_ms", *EVENT_KINDS)}
    events: list[tuple[int, str, str]] = []
    by_step: dict[int, list[tuple[int, int, bool]]] = {}
    for t0, a, b, fc in episodes:
        by_step.setdefault(t0, []).append((a, b, fc))
    mitigated = {"forecastable": 0, "forecastable_mitigated": 0, "all": 0, "all_mitigated": 0}
    pending_checks: list[dict[str, Any]] = []
    proactive = {"actions": 0, "unnecessary": 0}
    relief = [0.0, 0.0]  # moved load against overload, minimum needed
    hot_latency: int | None = None
    hp = workload.hot_key_load
    predicted_next: tuple[float, float] = (np.nan, np.nan)
    for t in range(T):
        counts = workload.sample(t)
        v = MapView.from_map(m)
        sidx = v.slice_of_hash(hashes)
        slice_load = np.bincount(sidx, weights=counts, minlength=v.n_slices)
        n_sh = len(v.shards)
        shard_load = np.bincount(v.slice_shard, weights=slice_load, minlength=n_sh)
        queues = [router.queue_of(s) for s in v.shards]
        if fail_step is not None and t == fail_step:
            victim = queues[int(np.argmax(shard_load))]
            health.mark_failed(victim)
            events.append((t, "failure", victim))
        factor = np.array([health.capacity_factor(q) for q in queues])
        cap_eff = capacity * factor
        over = np.maximum(shard_load - cap_eff, 0.0)
        util = shard_load / capacity
        s_["imbalance"].append(float(shard_load.max() / max(shard_load.mean(), 1e-12)))
        s_["mean_util"].append(float(shard_load.mean() / capacity))
        # no range-based placement can beat one key's load over the mean shard load
        s_["imbalance_floor"].append(max(1.0, float(counts.max() / max(shard_load.mean(), 1e-12))))
        s_["overload"].append(float(over.sum()))
        s_["total"].append(float(counts.sum()))
        s_["shards"].append(n_sh)
        for name, qv in (("util_max", 100), ("util_p90", 90), ("util_p50", 50), ("util_min", 0)):
            s_[name].append(float(np.percentile(util, qv)))
        s_["predicted"].append(predicted_next[0])
        s_["predicted_upper"].append(predicted_next[1])
        # overload episodes of the static map: is the hot range already handled here?
        starts_u64 = v.starts_u64
        for a, b, fc in by_step.get(t, ()):
            lo = int(np.searchsorted(starts_u64, np.uint64(a), side="right")) - 1
            hi = int(np.searchsorted(starts_u64, np.uint64(b - 1), side="right"))
            shards_here = np.unique(v.slice_shard[lo:hi])
            ok = bool((shard_load[shards_here] <= cap_eff[shards_here]).all())
            mitigated["all"] += 1
            mitigated["all_mitigated"] += ok
            if fc:
                mitigated["forecastable"] += 1
                mitigated["forecastable_mitigated"] += ok
        # proactive actions judged in hindsight over the horizon
        still = []
        for chk in pending_checks:
            inside = _in_ranges(hashes, chk["ranges"])
            chk["peak"] = max(chk["peak"], float(counts[inside].sum()))
            if t >= chk["until"]:
                proactive["unnecessary"] += chk["peak"] <= chk["threshold"]
            else:
                still.append(chk)
        pending_checks = still
        # hot key: alone in its shard yet?
        if workload.hot_key_active(t) and hot_latency is None:
            s_hot = v.slice_shard[sidx[workload.hot_key]]
            if sum(v.ends[i] - v.starts[i] for i in np.flatnonzero(v.slice_shard == s_hot)) <= 1:
                hot_latency = t - workload.hot_key_step
        # health: a queue model per shard (what arrives beyond capacity waits)
        for q, load, ce in zip(queues, shard_load, cap_eff, strict=True):
            arriving = load + backlog.get(q, 0.0)
            done = min(arriving, ce)
            backlog[q] = arriving - done
            health.record(q, processed=int(done), backlog=int(backlog[q]), interval=1.0,
                          latency_seconds=backlog[q] / max(ce, 1e-9))
        # real messages through the router and fenced consumers
        order.step(t, counts, cfg.sample_messages)
        # telemetry -> forecasts -> plan
        service_volume = np.bincount(key_service, weights=counts, minlength=S)
        policy.observe(feed.push(t_base + t, service_volume))
        # each key's share of its service (both policies plan with the same estimate)
        share_est = key_shares.update(counts, service_volume)
        vol_now = service_volume[key_service]
        shares = np.bincount(key_service * v.n_slices + sidx, weights=share_est,
                             minlength=S * v.n_slices).reshape(S, v.n_slices)
        top = np.argsort(-counts)[:16]
        plan = policy.decide(manager, slice_load, shares=shares,
                             hot_hashes=[int(hashes[k]) for k in top], hot_measured=counts[top],
                             key_hashes=hashes, key_load=share_est * vol_now)
        if forecaster is not None and getattr(policy, "last_series_upper", None) is not None:
            p1 = np.asarray(forecaster.predict(1))[:, 0]
            _, u1 = forecaster.predict_interval(1, cfg.q)
            predicted_next = (float(np.nansum(p1)), float(np.nansum(u1)))
        s_["plan_ms"].append(plan.planning_seconds * 1000.0)
        before_owner = _owners(v, sidx)
        judged: set[str] = set()
        for act in plan.actions:
            kind = action_kind(act)
            events.append((t, kind, _describe(act)))
            if getattr(act, "proactive", False) and isinstance(act, Reassign) and act.from_shard not in judged:
                # one proactive relief of one shard (however many ranges it moves) is one
                # action; it was necessary if, left alone, the shard's ranges would have
                # carried more than its capacity within the horizon (the overload it avoided)
                judged.add(act.from_shard)
                proactive["actions"] += 1
                s_idx = v.shards.index(act.from_shard)
                own = np.flatnonzero(v.slice_shard == s_idx)
                rng_ = [(v.starts[i], v.ends[i]) for i in own]
                pending_checks.append({"ranges": rng_, "peak": 0.0, "until": t + cfg.horizon,
                                       "threshold": float(cap_eff[s_idx])})
        relief[0] += plan.relief_load
        relief[1] += plan.min_load_needed
        manager.apply(plan)
        for ev in EVENT_KINDS:
            s_[ev].append(plan.count(ev))
        if plan.actions:
            v2 = MapView.from_map(m)
            after_owner = _owners(v2, v2.slice_of_hash(hashes))
            moved = float((before_owner != after_owner).mean())
            # a failure drain must move its keys whatever the budget: counted apart
            drained = plan.count("drain") > 0
            s_["keys_moved"].append(0.0 if drained else moved)
            s_["drain_moved"].append(moved if drained else 0.0)
            # a merged, retired or drained shard's modelled backlog goes where its keys went
            live = set(m.shards)
            for act in plan.actions:
                if isinstance(act, Merge):
                    gone, into = act.retired, act.into
                elif isinstance(act, Reassign) and act.from_shard not in live:
                    gone, into = act.from_shard, act.to_shard
                else:
                    continue
                rest = backlog.pop(router.queue_of(gone), 0.0)
                backlog[router.queue_of(into)] = backlog.get(router.queue_of(into), 0.0) + rest
        else:
            s_["keys_moved"].append(0.0)
            s_["drain_moved"].append(0.0)
        manager.collect_retired()
        if on_step is not None:
            on_step()
    order.finish()
    metrics = summarize(s_, capacity=capacity, mitigated=mitigated, proactive=proactive,
                        relief=relief, hot_latency=hot_latency, hot_active=hp > 0,
                        order=order, fences=router.fences.released)
    metrics["telemetry_rejected"] = feed.rejected
    return PolicyRun(policy_name, metrics, {k: [float(x) for x in vals] for k, vals in s_.items()}, events)


def _owners(v: MapView, sidx: np.ndarray) -> np.ndarray:
    """A per-key owner id that changes when the key's shard or the shard's node changes."""
    shard = v.slice_shard[sidx].astype(np.int64)
    node = v.shard_node[v.slice_shard[sidx]].astype(np.int64)
    names = np.array([hash(s) & 0xFFFFFFFF for s in v.shards], dtype=np.int64)
    return names[shard] * 4096 + node


def _in_ranges(hashes: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    inside = np.zeros(hashes.shape, dtype=bool)
    for a, b in ranges:
        inside |= (hashes >= np.uint64(a)) & ((hashes < np.uint64(b)) if b < 2**64 else True)
    return inside


def _describe(a: Any) -> str:
    if isinstance(a, Reassign):
        return f"{a.from_shard}->{a.to_shard} {a.moved_fraction:.2%} of keys ({a.reason})"
    return getattr(a, "reason", "") or type(a).__name__


def simulate(
    workload: Workload,
    cfg: SimConfig,
    *,
    source: str = "",
    on_step: Callable[[str], None] | None = None,
) -> SimulationResult:
    """Run every policy of ``cfg.policies`` on ``workload``; the same counts for each."""
    t0 = time.perf_counter()
    capacity = capacity_for(workload, cfg)
    workload.hot_key_load = workload.config.hot_key_fraction * capacity
    episodes = static_episodes(workload, capacity, cfg)
    runs = []
    for name in cfg.policies:
        cb = (lambda n=name: on_step(n)) if on_step is not None else None
        runs.append(run_policy(workload, name, cfg, capacity, episodes, cb))
    return SimulationResult(
        source=source,
        services=list(workload.services),
        workload=asdict(workload.config),
        config={**asdict(cfg), "policies": list(cfg.policies)},
        capacity=capacity,
        runs=runs,
        seconds=time.perf_counter() - t0,
    )
