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
