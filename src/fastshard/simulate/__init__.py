"""The simulator behind ``fastshard simulate`` / ``fastshard replay``.

Real traffic series drive per-service volumes, Zipf-distributed keys with a rotating hot set
drive per-key load, and each policy (static, reactive, predictive) runs the full loop
telemetry -> forecasts -> manager -> routing -> health on the in-memory backend, on the same
workload. :func:`simulate` returns a :class:`SimulationResult`; :mod:`.report` renders it.
"""

from fastshard.simulate.engine import PolicyRun, SimConfig, SimulationResult, simulate
from fastshard.simulate.workload import DATASETS, Workload, WorkloadConfig, build_workload

__all__ = [
    "DATASETS",
    "PolicyRun",
    "SimConfig",
    "SimulationResult",
    "Workload",
    "WorkloadConfig",
    "build_workload",
    "simulate",
]
