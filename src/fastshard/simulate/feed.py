"""Telemetry for the simulator: services report their message counts as
:class:`~fastshard.telemetry.ServiceRecord` s, a :class:`~fastshard.telemetry.TelemetryAggregator`
bins them per step, and each closed step's vector is what the forecaster learns from.

Each service reports twice per step (at a quarter and at three quarters of it), so the
aggregator really sums partial reports; a step is closed once its grace period has passed.
"""

from __future__ import annotations

import numpy as np

from fastshard.errors import InvalidValueError
from fastshard.telemetry import ServiceRecord, TelemetryAggregator

STEP_SECONDS = 3600.0
MESSAGE_TYPE = "transactional"


class TelemetryFeed:
    def __init__(self, services: list[str]) -> None:
        self.services = list(services)
        self.aggregator = TelemetryAggregator(step=STEP_SECONDS, grace=60.0, max_future=2 * STEP_SECONDS)
        self.rejected = 0

    def push(self, t: int, volumes: np.ndarray) -> np.ndarray:
        """Report step ``t``'s per-service volumes; returns the aggregated vector of step
        ``t`` in ``services`` order (what a forecaster gets once the step has closed)."""
        start = t * STEP_SECONDS
        records = []
        for s, v in zip(self.services, volumes, strict=True):
            first = float(np.floor(v / 2))
            records.append(ServiceRecord(s, start + STEP_SECONDS / 4, counts={MESSAGE_TYPE: first}))
            records.append(ServiceRecord(s, start + 3 * STEP_SECONDS / 4, counts={MESSAGE_TYPE: float(v) - first}))
        report = self.aggregator.add(records, now=start + STEP_SECONDS)
        self.rejected += report.n_rejected
        closed = self.aggregator.close_steps(start + STEP_SECONDS + self.aggregator.grace + 1.0)
        if len(closed) != 1:
            raise InvalidValueError(f"telemetry step {t} closed {len(closed)} steps, expected 1")
        vector = closed[0][1]
        idx = [self.aggregator.index_of((s, MESSAGE_TYPE)) for s in self.services]
        return np.nan_to_num(vector[idx], nan=0.0)


class KeyShares:
    """Each key's share of its service's volume, learned from per-key counts.

    Decayed sums of a key's counts and of its service's volume (count-weighted: a quiet night
    step of a few, mostly noisy, messages weighs little against a busy hour), reset for a
    key whose count departs from its estimate by more than ``reset_z`` Poisson standard
    deviations: a popularity shift (a hot set handed to other keys) is followed at once
    instead of being averaged in over many steps.
    """

    def __init__(self, key_service: np.ndarray, decay: float = 0.7, reset_z: float = 4.0) -> None:
        if not 0.0 <= decay < 1.0:
            raise InvalidValueError(f"decay must be in [0, 1), got {decay}")
        if reset_z <= 0:
            raise InvalidValueError(f"reset_z must be > 0, got {reset_z}")
        self.key_service = np.asarray(key_service)
        self.decay, self.reset_z = decay, reset_z
        self._counts: np.ndarray | None = None
        self._volume: np.ndarray | None = None
        self.resets = 0

    def update(self, counts: np.ndarray, service_volume: np.ndarray) -> np.ndarray:
        """One step of per-key counts; returns every key's estimated share."""
        vol = np.asarray(service_volume, dtype=np.float64)[self.key_service]
        c = np.asarray(counts, dtype=np.float64)
        if self._counts is None or self._volume is None:
            self._counts, self._volume = c.copy(), vol.copy()
        else:
            expect = self._counts / np.maximum(self._volume, 1e-12) * vol
            shifted = np.abs(c - expect) > self.reset_z * np.sqrt(expect + 1.0)
            self.resets += int(shifted.sum())
            self._counts = np.where(shifted, c, self.decay * self._counts + c)
            self._volume = np.where(shifted, vol, self.decay * self._volume + vol)
        return self._counts / np.maximum(self._volume, 1e-12)
