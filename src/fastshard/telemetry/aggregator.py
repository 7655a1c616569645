"""Binning telemetry into fixed steps: one dense vector per step for the forecasters.

Series keys (index ``i`` of every emitted vector; keys are only ever appended):

* ``(service, message_type)`` -- messages of that type in the step (sum of the counts);
* ``("service", service, "load" | "active_users")`` -- mean of the samples in the step;
* ``("region", region, metric)`` -- mean of the region's samples (``cpu``, ``memory``,
  ``queue_length``, ``latency_ms``).

A step ``[t, t + step)`` stays open until ``close_steps(now)`` is called with
``now >= t + step + grace``; until then records for it may arrive in any order. A record
for a step already closed is *too late*: dropped and counted, never silently. A step in
which a service sent nothing is NaN for its series (missing, which the forecasters handle);
a step in which it reported but left out a message type it has used before counts 0.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastshard.errors import InvalidTypeError, InvalidValueError, check_finite, check_int
from fastshard.telemetry.records import (
    BAD_JSON,
    BAD_TYPE,
    FUTURE_TIMESTAMP,
    Record,
    RecordError,
    RegionRecord,
    ServiceRecord,
    record_from_dict,
)

MIN_STEP = 1e-3
MAX_STEP = 7 * 86400.0
MAX_ERROR_SAMPLES = 20

SeriesKey = tuple[str, ...]


@dataclass(slots=True)
class IngestReport:
    """What happened to one batch: how many records were kept, and why the rest were not."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    too_late: int = 0
    #: up to 20 ``(index in batch, reason, message)`` for the rejected records
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def merge(self, other: IngestReport) -> None:
        self.accepted += other.accepted
        self.rejected.update(other.rejected)
        self.too_late += other.too_late
        room = MAX_ERROR_SAMPLES - len(self.errors)
        if room > 0:
            self.errors.extend(other.errors[:room])


class _Bin:
    """Accumulators of one open step: per series index, a sum and a sample count."""

    __slots__ = ("sums", "counts", "reporters", "reported")

    def __init__(self) -> None:
        self.sums: dict[int, float] = {}
        self.counts: dict[int, int] = {}
        self.reporters: set[str] = set()  # services with at least one record in this step
        self.reported: dict[int, float] = {}  # service predictions *for the next step*


class TelemetryAggregator:
    """Bins records into steps of ``step`` seconds, tolerating ``grace`` seconds of lateness.

    Parameters
    ----------
    step:
        step length in seconds (0.001 s .. 7 days), e.g. 1, 60, 3600.
    grace:
        how long after a step ends records for it are still accepted (>= 0 seconds).
    origin:
        steps start at ``origin + k * step`` (default 0: aligned to the epoch).
    max_future:
        a record stamped more than this many seconds after ``now`` is rejected
        (``future_timestamp``); default ``max(60, 2 * step)``.
    clock:
        the time source for ``add`` when it is not given ``now`` (default ``time.time``).
    """

    def __init__(
        self,
        step: float,
        grace: float,
        *,
        origin: float = 0.0,
        max_future: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        st = check_finite("step", step)
        if not MIN_STEP <= st <= MAX_STEP:
            raise InvalidValueError(f"step must be in [{MIN_STEP}, {MAX_STEP}] seconds, got {step}")
        gr = check_finite("grace", grace)
        if gr < 0:
            raise InvalidValueError(f"grace must be >= 0 seconds, got {grace}")
        mf = max(60.0, 2 * st) if max_future is None else check_finite("max_future", max_future)
        if mf < 0:
            raise InvalidValueError(f"max_future must be >= 0 seconds, got {max_future}")
        if not callable(clock):
            raise InvalidTypeError("clock must be a callable returning seconds")
        self.step = st
        self.grace = gr
        self.origin = check_finite("origin", origin)
        self.max_future = mf
        self._clock = clock
        self._keys: list[SeriesKey] = []
        self._index: dict[SeriesKey, int] = {}
        self._service_types: dict[str, list[int]] = {}  # service -> its count series
        self._bins: dict[int, _Bin] = {}
        self._next: int | None = None  # index of the oldest step not yet closed
        self.totals = IngestReport()  # cumulative over every add()

    # ------------------------------------------------------------------ keys
    @property
    def series_keys(self) -> list[SeriesKey]:
        """Key of each vector position; new keys are appended, old ones never move."""
        return list(self._keys)

    @property
    def n_series(self) -> int:
        return len(self._keys)

    def index_of(self, key: SeriesKey) -> int:
        """Vector position of ``key``; ``KeyError`` if it has not appeared yet."""
        return self._index[key]

    def _key(self, key: SeriesKey) -> int:
        i = self._index.get(key)
        if i is None:
            i = len(self._keys)
            self._keys.append(key)
            self._index[key] = i
            if len(key) == 2:
                self._service_types.setdefault(key[0], []).append(i)
        return i

    # ------------------------------------------------------------------ ingestion
    def step_of(self, timestamp: float) -> int:
        """Index of the step containing ``timestamp``."""
        return math.floor((timestamp - self.origin) / self.step)

    def step_start(self, k: int) -> float:
        return self.origin + k * self.step

    def add(self, records: Iterable[Any], now: float | None = None) -> IngestReport:
        """Add a batch of records (:class:`ServiceRecord`, :class:`RegionRecord` or dicts in
        their JSON form). Bad records are rejected with a counted reason; the good ones in
        the same batch are kept. Returns what happened; also added to :attr:`totals`."""
        if isinstance(records, (ServiceRecord, RegionRecord, dict, str, bytes)):
            raise InvalidTypeError("records must be an iterable of records, not a single record")
        t_now = check_finite("now", self._clock() if now is None else now)
        report = IngestReport()
        for pos, raw in enumerate(records):
            try:
                rec = _coerce(raw)
                if rec.timestamp > t_now + self.max_future:
                    raise RecordError(
                        FUTURE_TIMESTAMP,
                        f"timestamp must be at most {self.max_future:g} s after now ({t_now:.3f}),"
                        f" got {rec.timestamp:.3f}",
                    )
            except RecordError as exc:
                report.rejected[exc.reason] += 1
                if len(report.errors) < MAX_ERROR_SAMPLES:
                    report.errors.append((pos, exc.reason, str(exc)))
                continue
            k = self.step_of(rec.timestamp)
            if self._next is not None and k < self._next:
                report.too_late += 1
                continue
            self._absorb(k, rec)
            report.accepted += 1
        self.totals.merge(report)
        return report

    def add_json(self, payloads: Iterable[bytes | str], now: float | None = None) -> IngestReport:
        """Like :meth:`add` for JSON-encoded records (one object, or a list of them, each)."""
        batch: list[Any] = []
        bad = IngestReport()
        for pos, p in enumerate(payloads):
            try:
                obj = json.loads(p)
            except (ValueError, TypeError) as exc:
                bad.rejected[BAD_JSON] += 1
                if len(bad.errors) < MAX_ERROR_SAMPLES:
                    bad.errors.append((pos, BAD_JSON, f"payload is not JSON: {exc}"))
                continue
            batch.extend(obj if isinstance(obj, list) else [obj])
        report = self.add(batch, now=now)
        self.totals.rejected.update(bad.rejected)
        report.merge(bad)
        return report

    def _absorb(self, k: int, rec: Record) -> None:
        b = self._bins.get(k)
        if b is None:
            b = self._bins[k] = _Bin()
        if isinstance(rec, ServiceRecord):
            b.reporters.add(rec.service)
            for mtype, c in rec.counts.items():
                self._accumulate(b, self._key((rec.service, mtype)), c)
            for gauge in ("load", "active_users"):
                v = getattr(rec, gauge)
                if v is not None:
                    self._accumulate(b, self._key(("service", rec.service, gauge)), v)
            if rec.predicted:
                for mtype, c in rec.predicted.items():
                    i = self._key((rec.service, mtype))
                    b.reported[i] = b.reported.get(i, 0.0) + c
        else:
            for metric, v in rec.metrics().items():
                self._accumulate(b, self._key(("region", rec.region, metric)), v)

    @staticmethod
    def _accumulate(b: _Bin, i: int, v: float) -> None:
        b.sums[i] = b.sums.get(i, 0.0) + v
        b.counts[i] = b.counts.get(i, 0) + 1

    # ------------------------------------------------------------------ closing
    def open_steps(self) -> list[float]:
        """Start times of the steps holding records that are not closed yet."""
        return [self.step_start(k) for k in sorted(self._bins)]

    def close_steps(
        self, now: float, *, with_reported: bool = False, limit: int = 100_000
    ) -> list[tuple[float, np.ndarray]] | list[tuple[float, np.ndarray, np.ndarray]]:
        """Close every step that ended at least ``grace`` before ``now``, oldest first.

        Returns ``(step_start, values)`` per closed step, ``values`` a float64 vector aligned
        with :attr:`series_keys` (NaN = no data). Steps with no record at all are emitted too
        (all NaN), so the forecasters see one vector per step. With ``with_reported``, each
        item has a third vector: the services' own predictions made in that step for the
        *next* one (NaN where none), to pass to ``Forecaster.update(values, reported)``.

        At most ``limit`` steps are closed per call (a clock far ahead of the data would
        otherwise emit millions of empty steps at once); call again for the rest.
        """
        t_now = check_finite("now", now)
        lim = check_int("limit", limit, 1)
        last_closable = math.floor((t_now - self.grace - self.origin) / self.step) - 1
        first = self._next
        if first is None:
            # nothing closed yet: start at the oldest step with data, but only commit to it
            # once it actually closes (a record for an even older step may still arrive)
            if not self._bins:
                return []
            first = min(self._bins)
        if last_closable < first:
            return []
        self._next = first
        last_closable = min(last_closable, first + lim - 1)
        out: list[Any] = []
        n = len(self._keys)
        count_keys = len(self._keys)
        for k in range(self._next, last_closable + 1):
            b = self._bins.pop(k, None)
            values = np.full(n, np.nan)
            reported = np.full(n, np.nan)
            if b is not None:
                for service in b.reporters:  # reported, but not this type: zero messages
                    for i in self._service_types.get(service, ()):
                        if i < count_keys:
                            values[i] = 0.0
                for i, s in b.sums.items():
                    key = self._keys[i]
                    values[i] = s if len(key) == 2 else s / b.counts[i]
                for i, r in b.reported.items():
                    reported[i] = r
            start = self.step_start(k)
            out.append((start, values, reported) if with_reported else (start, values))
        if last_closable + 1 > self._next:
            self._next = last_closable + 1
        return out


def _coerce(raw: Any) -> Record:
    if isinstance(raw, (ServiceRecord, RegionRecord)):
        return raw
    if isinstance(raw, dict):
        return record_from_dict(raw)
    raise RecordError(
        BAD_TYPE, f"a record must be a ServiceRecord, RegionRecord or dict, got {type(raw).__name__}"
    )
