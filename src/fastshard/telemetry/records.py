"""Typed telemetry records and their validation.

Two producers send telemetry:

* client services: a :class:`ServiceRecord` per report -- message counts per message type
  (``transactional``, ``informational``, ``error`` or any user-defined type), load, user
  activity, and optionally the service's own prediction of its next step's counts;
* regional load agents: a :class:`RegionRecord` -- CPU, memory, queue length, latency.

Every check raises :class:`RecordError`, which carries a short machine-readable ``reason``
(``unknown_field``, ``negative_value``, ``not_finite``, ...) that the aggregator counts, and
a message naming the field and the accepted range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fastshard.errors import InvalidValueError

#: the message types every service knows; any other name matching MESSAGE_TYPE_RE is allowed
STANDARD_MESSAGE_TYPES = ("transactional", "informational", "error")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$")
MESSAGE_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
MAX_TYPES_PER_RECORD = 256

# reasons a record is rejected (the keys of IngestReport.rejected)
UNKNOWN_FIELD = "unknown_field"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_NAME = "bad_name"
NEGATIVE_VALUE = "negative_value"
OUT_OF_RANGE = "out_of_range"
NOT_FINITE = "not_finite"
FUTURE_TIMESTAMP = "future_timestamp"
BAD_JSON = "bad_json"


class RecordError(InvalidValueError):
    """A telemetry record failed validation; ``reason`` says why in one word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _number(fieldname: str, value: Any, lo: float = 0.0, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy as np

            if not isinstance(value, (np.integer, np.floating)):
                raise TypeError
        except TypeError:
            raise RecordError(
                BAD_TYPE, f"{fieldname} must be a number, got {type(value).__name__}"
            ) from None
    v = float(value)
    if not math.isfinite(v):
        raise RecordError(NOT_FINITE, f"{fieldname} must be finite, got {value!r}")
    if v < lo:
        reason = NEGATIVE_VALUE if lo == 0.0 else OUT_OF_RANGE
        raise RecordError(reason, f"{fieldname} must be in [{lo:g}, {hi:g}], got {value!r}")
    if v > hi:
        raise RecordError(OUT_OF_RANGE, f"{fieldname} must be in [{lo:g}, {hi:g}], got {value!r}")
    return v


def _optional(fieldname: str, value: Any, lo: float = 0.0, hi: float = math.inf) -> float | None:
    return None if value is None else _number(fieldname, value, lo, hi)


def _name(fieldname: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RecordError(BAD_TYPE, f"{fieldname} must be a str, got {type(value).__name__}")
    if not NAME_RE.match(value):
        raise RecordError(
            BAD_NAME,
            f"{fieldname} must be 1-200 characters of letters, digits and '._:-'; got {value!r}",
        )
    return value


def _counts(fieldname: str, value: Any) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise RecordError(
            BAD_TYPE, f"{fieldname} must map message type to count, got {type(value).__name__}"
        )
    if len(value) > MAX_TYPES_PER_RECORD:
        raise RecordError(
            OUT_OF_RANGE,
            f"{fieldname} must have at most {MAX_TYPES_PER_RECORD} message types, got {len(value)}",
        )
    out: dict[str, float] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not MESSAGE_TYPE_RE.match(k):
            raise RecordError(
                BAD_NAME,
                f"{fieldname} keys must be message types of 1-64 letters, digits and '_.-'; "
                f"got {k!r}",
            )
        out[k] = _number(f"{fieldname}[{k!r}]", v)
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One report from a client service.

    ``timestamp`` is in seconds (Unix time or any clock shared with the aggregator).
    ``counts`` maps message type to the number of messages since the last report (>= 0).
    ``load`` (>= 0, the service's own load measure) and ``active_users`` (>= 0) are gauges.
    ``predicted`` is the service's own forecast of its counts in the *next* step, per
    message type, when it makes one.
    """

    service: str
    timestamp: float
    counts: Mapping[str, float] = field(default_factory=dict)
    load: float | None = None
    active_users: float | None = None
    predicted: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "service", _name("service", self.service))
        set_(self, "timestamp", _number("timestamp", self.timestamp))
        set_(self, "counts", _counts("counts", self.counts))
        set_(self, "load", _optional("load", self.load))
        set_(self, "active_users", _optional("active_users", self.active_users))
        if self.predicted is not None:
            set_(self, "predicted", _counts("predicted", self.predicted))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": "service",
            "service": self.service,
            "timestamp": self.timestamp,
            "counts": dict(self.counts),
        }
        if self.load is not None:
            d["load"] = self.load
        if self.active_users is not None:
            d["active_users"] = self.active_users
        if self.predicted is not None:
            d["predicted"] = dict(self.predicted)
        return d


#: region gauges and their accepted ranges
REGION_METRICS: dict[str, tuple[float, float]] = {
    "cpu": (0.0, 100.0),  # percent of all cores
    "memory": (0.0, 100.0),  # percent of physical memory in use
    "queue_length": (0.0, math.inf),  # messages waiting
    "latency_ms": (0.0, math.inf),  # processing latency
}


@dataclass(frozen=True, slots=True)
class RegionRecord:
    """One sample from a regional load agent; a metric it did not measure is ``None``."""

    region: str
    timestamp: float
    cpu: float | None = None
    memory: float | None = None
    queue_length: float | None = None
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "region", _name("region", self.region))
        set_(self, "timestamp", _number("timestamp", self.timestamp))
        for metric, (lo, hi) in REGION_METRICS.items():
            set_(self, metric, _optional(metric, getattr(self, metric), lo, hi))

    def metrics(self) -> dict[str, float]:
        """The metrics that were measured."""
        out = {}
        for m in REGION_METRICS:
            v = getattr(self, m)
            if v is not None:
                out[m] = v
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "region", "region": self.region, "timestamp": self.timestamp,
                **self.metrics()}


Record = ServiceRecord | RegionRecord

_SERVICE_FIELDS = {"kind", "service", "timestamp", "counts", "load", "active_users", "predicted"}
_SERVICE_REQUIRED = ("service", "timestamp")
_REGION_FIELDS = {"kind", "region", "timestamp", *REGION_METRICS}
_REGION_REQUIRED = ("region", "timestamp")


def record_from_dict(d: Any) -> Record:
    """Build a record from its JSON form (``{"kind": "service" | "region", ...}``).

    ``kind`` may be omitted when the fields make it obvious (``service`` or ``region``).
    Unknown fields are rejected rather than ignored, so a misspelt metric is noticed.
    """
    if not isinstance(d, Mapping):
        raise RecordError(BAD_TYPE, f"a record must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    if kind is None:
        kind = "service" if "service" in d else "region" if "region" in d else None
    cls: type[ServiceRecord] | type[RegionRecord]
    if kind == "service":
        allowed, required, cls = _SERVICE_FIELDS, _SERVICE_REQUIRED, ServiceRecord
    elif kind == "region":
        allowed, required, cls = _REGION_FIELDS, _REGION_REQUIRED, RegionRecord
    else:
        raise RecordError(
            MISSING_FIELD if kind is None else BAD_TYPE,
            f"kind must be 'service' or 'region', got {kind!r}",
        )
    unknown = sorted(str(k) for k in d if k not in allowed)
    if unknown:
        raise RecordError(
            UNKNOWN_FIELD,
            f"unknown field(s) {', '.join(unknown)} in a {kind} record; accepted: "
            f"{', '.join(sorted(allowed))}",
        )
    for f in required:
        if f not in d:
            raise RecordError(MISSING_FIELD, f"field {f!r} is required in a {kind} record")
    kwargs = {k: v for k, v in d.items() if k != "kind"}
    return cls(**kwargs)
