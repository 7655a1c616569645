"""Telemetry in: typed records from services and regional agents, binned per time step.

>>> from fastshard.telemetry import TelemetryAggregator, ServiceRecord
>>> agg = TelemetryAggregator(step=60, grace=10)
>>> agg.add([ServiceRecord("checkout", ts, counts={"transactional": 12})])
>>> for start, vector in agg.close_steps(now): forecaster.update(vector)
"""

from fastshard.telemetry.agent import RegionalLoadAgent
from fastshard.telemetry.aggregator import IngestReport, SeriesKey, TelemetryAggregator
from fastshard.telemetry.ingest import (
    QueueIngestor,
    encode_record,
    publish_records,
    records_to_json_lines,
)
from fastshard.telemetry.records import (
    REGION_METRICS,
    STANDARD_MESSAGE_TYPES,
    RecordError,
    RegionRecord,
    ServiceRecord,
    record_from_dict,
)

__all__ = [
    "REGION_METRICS",
    "STANDARD_MESSAGE_TYPES",
    "IngestReport",
    "QueueIngestor",
    "RecordError",
    "RegionRecord",
    "RegionalLoadAgent",
    "SeriesKey",
    "ServiceRecord",
    "TelemetryAggregator",
    "encode_record",
    "publish_records",
    "record_from_dict",
    "records_to_json_lines",
]
