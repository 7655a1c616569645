"""Telemetry over a backend queue: services publish JSON records, the aggregator consumes them.

Works with any backend offering queues (the in-memory one, Redis streams, Kafka topics,
RabbitMQ queues via their plugins), through the :class:`~fastshard.backends.base.Backend`
contract: ``publish_batch`` on the producer side, ``consume`` + ``ack`` in a consumer group
on the aggregator side. Delivery is at least once; a record delivered twice would be counted
twice, so a consumer acks only after the batch is in the aggregator.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from fastshard.backends.base import Backend, validate_name
from fastshard.errors import InvalidTypeError, check_finite, check_int
from fastshard.telemetry.aggregator import IngestReport, TelemetryAggregator
from fastshard.telemetry.records import Record, RegionRecord, ServiceRecord

DEFAULT_GROUP = "fastshard-telemetry"


def encode_record(record: Record) -> bytes:
    """The JSON wire form of a record (UTF-8)."""
    if not isinstance(record, (ServiceRecord, RegionRecord)):
        raise InvalidTypeError(
            f"record must be a ServiceRecord or RegionRecord, got {type(record).__name__}"
        )
    return json.dumps(record.to_dict(), separators=(",", ":"), allow_nan=False).encode()


def _key_of(record: Record) -> str:
    return record.service if isinstance(record, ServiceRecord) else record.region


def publish_records(backend: Backend, queue: str, records: Sequence[Record]) -> list[str]:
    """Publish records, keyed by service or region so one producer's records stay in order.

    All records are encoded before anything is sent (nothing half-published on bad input).
    """
    validate_name("queue", queue)
    encoded = [(encode_record(r), r) for r in records]  # encode (and type-check) all first
    items: list[tuple[bytes | str, bytes | str]] = [(_key_of(r), data) for data, r in encoded]
    return backend.publish_batch(queue, items)


class QueueIngestor:
    """Moves records from a backend queue into a :class:`TelemetryAggregator`.

    Each :meth:`poll` consumes up to ``batch`` messages for consumer group ``group``, adds
    the decodable ones to the aggregator (undecodable and invalid ones are counted as
    rejected, like any bad record) and acks the whole batch afterwards, so a poison message
    is reported once instead of being redelivered forever. Backend failures propagate as
    :class:`~fastshard.errors.BackendError` after the backend's own retries; nothing is acked
    then, so the batch is delivered again.
    """

    def __init__(
        self,
        backend: Backend,
        queue: str,
        aggregator: TelemetryAggregator,
        *,
        group: str = DEFAULT_GROUP,
        consumer: str = "c0",
        batch: int = 500,
    ) -> None:
        if not isinstance(backend, Backend):
            raise InvalidTypeError(f"backend must be a Backend, got {type(backend).__name__}")
        if not isinstance(aggregator, TelemetryAggregator):
            raise InvalidTypeError(
                f"aggregator must be a TelemetryAggregator, got {type(aggregator).__name__}"
            )
        self.backend = backend
        self.queue = validate_name("queue", queue)
        self.group = validate_name("group", group)
        self.consumer = validate_name("consumer", consumer)
        self.batch = check_int("batch", batch, 1, 100_000)
        self.aggregator = aggregator
        backend.create_queue(queue)

    def poll(self, timeout: float = 0.0, now: float | None = None) -> IngestReport:
        """One round: consume, add, ack. ``now`` is passed to ``aggregator.add``."""
        t = check_finite("timeout", timeout)
        msgs = self.backend.consume(
            self.queue, self.group, self.consumer, max_messages=self.batch, timeout=t
        )
        if not msgs:
            return IngestReport()
        report = self.aggregator.add_json([m.value for m in msgs], now=now)
        self.backend.ack(self.queue, self.group, [m.id for m in msgs])
        return report

    def drain(self, now: float | None = None, max_rounds: int = 1_000) -> IngestReport:
        """Poll without waiting until the queue has nothing more for this group."""
        total = IngestReport()
        for _ in range(check_int("max_rounds", max_rounds, 1)):
            r = self.poll(0.0, now=now)
            if r.accepted == 0 and r.n_rejected == 0 and r.too_late == 0:
                break
            total.merge(r)
        return total


def records_to_json_lines(records: Iterable[Record]) -> str:
    """Records as JSON lines (for files and logs)."""
    return "".join(encode_record(r).decode() + "\n" for r in records)
