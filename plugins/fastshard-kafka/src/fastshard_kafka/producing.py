"""Publishing to Kafka: single confirmed messages, batches, and batches to many partitions.

A mixin of :class:`~fastshard_kafka.backend.KafkaBackend` (it uses the producer, the timeout
and the queue-name checks set up there). Every message carries the ``fs`` stamp
(:mod:`fastshard_kafka.wire`). A single message -- what ``Router.publish`` sends, one at a
time, each confirmed -- takes the shortest path: one produce with a closure for its delivery
report and one flush. A batch shares one header list and one report callback, and
``publish_routed`` confirms many partitions with one wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer

from fastshard.backends.base import MAX_KEY_BYTES
from fastshard.backends.stamp import HASH_HEADER, SEQ_HEADER, STAMP_HEADER, checked_stamped_batch
from fastshard.errors import BackendError, BackendUnavailableError
from fastshard_kafka.wire import Delivery, delivery_error, wire_headers

_MAX_EPOCH = 2**63 - 1  # Backend.publish's bound


class Producing:
    """The publish side of :class:`~fastshard_kafka.backend.KafkaBackend`."""

    _producer: Producer
    _targets: dict[str, tuple[str, int]]  # queue -> (topic, partition), checked to exist
    _lock: threading.Lock
    _publishing: threading.local  # publish_routed's per-thread pass (see there)
    timeout: float
    max_message_bytes: int

    if TYPE_CHECKING:  # provided by KafkaBackend and Backend
        def _require_partition(self, queue: str) -> tuple[str, int]: ...
        def publish(self, queue: str, key: bytes | str, value: bytes | str, *,
                    headers: Mapping[str, str] | None = None, epoch: int = 0) -> str: ...
        def publish_batch(self, queue: str, items: Any, *, headers: Mapping[str, str] | None = None,
                          epoch: int = 0) -> list[str]: ...

    @property
    def producer(self) -> Producer:
        """The confluent-kafka ``Producer`` every publish of this backend goes through.

        For comparing with the raw client on the same connections (bench/), or for settings
        fastshard does not expose; messages produced with it directly carry no ``fs`` stamp
        and skip fastshard's checks.
        """
        return self._producer

    def _publish_batch(
        self, queue: str, batch: list[tuple[bytes, bytes]], headers: dict[str, str], epoch: int
    ) -> list[str]:
        staged = getattr(self._publishing, "staged", None)
        if staged is not None:  # inside publish_routed: validated now, produced all together later
            self._target(queue)
            staged.append((queue, batch, headers, epoch))
            return [""] * len(batch)
        if len(batch) == 1:
            return [self._publish_one(queue, batch[0][0], batch[0][1], headers, epoch)]
        delivery = self._produce(queue, batch, headers, epoch)
        self._confirm([delivery])
        return delivery.ids()

    def _publish_one(self, queue: str, key: bytes, value: bytes, headers: dict[str, str],
                     epoch: int) -> str:
        return self._send_one(queue, self._targets.get(queue) or self._target(queue), key, value,
                              wire_headers(headers, epoch))

    def publish_stamped(self, queue: str, key: bytes, value: bytes | str, epoch: int, seq: int,
                        key_hash: int, headers: Mapping[str, str] | None = None) -> str:
        """:meth:`publish` for :class:`fastshard.sharding.Router` (its ``StampedPublisher``
        hook): the epoch, sequence number and key hash go straight into the ``fs`` stamp.

        The router's common case (a queue published to before, bytes key and value within the
        limits, no other headers) is checked here in one expression; anything else is handed
        to :meth:`publish` with the stamp as headers, which validates it all and writes the
        same stamp.
        """
        target = self._targets.get(queue)
        if (target is None or headers or type(key) is not bytes or type(value) is not bytes
                or len(value) > self.max_message_bytes or len(key) > MAX_KEY_BYTES
                or type(epoch) is not int or not 0 <= epoch <= _MAX_EPOCH
                or type(seq) is not int or seq < 0 or type(key_hash) is not int or key_hash < 0):
            stamp = {**(headers or {}), SEQ_HEADER: str(seq), HASH_HEADER: str(key_hash)}
            return self.publish(queue, key, value, headers=stamp, epoch=epoch)
        # format_stamp's text, formatted straight to bytes (this runs once per routed message)
        return self._send_one(queue, target, key, value,
                              [(STAMP_HEADER, b"%d %d %d" % (epoch, seq, key_hash))])

    def publish_stamped_batch(self, queue: str, keys: Sequence[bytes], values: Sequence[bytes | str],
                              epoch: int, first_seq: int, key_hashes: Sequence[int],
                              headers: Mapping[str, str] | None = None) -> list[str]:
        """One queue's part of ``Router.publish_many`` (its ``StampedBatchPublisher`` hook):
        validated like ``publish_batch``, then every message produced with its own ``fs``
        stamp and the whole group confirmed with one wait, as :meth:`publish_routed` does."""
        items, hdrs, epoch = checked_stamped_batch(self, queue, keys, values, epoch, first_seq,
                                                   key_hashes, headers)
        self._target(queue)  # the queue must exist before anything is produced
        others = wire_headers(hdrs, epoch)[:-1]  # the caller's headers, without the epoch stamp
        e = b"%d" % epoch
        if others:
            per_message = [[*others, (STAMP_HEADER, b"%s %d %d" % (e, seq, h))]
                           for seq, h in zip(range(first_seq, first_seq + len(items)), key_hashes, strict=True)]
        else:  # the router's common case: the stamp alone
            per_message = [[(STAMP_HEADER, b"%s %d %d" % (e, seq, h))]
                           for seq, h in zip(range(first_seq, first_seq + len(items)), key_hashes, strict=True)]
        staged = getattr(self._publishing, "staged", None)
        if staged is not None:  # inside a staged pass: produced with the other groups
            staged.append((queue, items, hdrs, epoch, per_message))
            return [""] * len(items)
        delivery = self._produce(queue, items, hdrs, epoch, per_message)
        self._confirm([delivery])
        return delivery.ids()

    def publish_stamped_groups(self, groups: Sequence[tuple[str, Sequence[bytes], Sequence[bytes | str], int,
                                                            Sequence[int]]],
                               epoch: int, headers: Mapping[str, str] | None = None) -> list[list[str]]:
        """All of ``Router.publish_many`` at once (its optional ``publish_stamped_groups``
        hook): every group ``(queue, keys, values, first_seq, key_hashes)`` validated as by
        :meth:`publish_stamped_batch`, then all produced and confirmed with one wait, as
        :meth:`publish_routed` does. Returns the ids per group."""
        def stage() -> None:
            for queue, keys, values, first_seq, key_hashes in groups:
                self.publish_stamped_batch(queue, keys, values, epoch, first_seq, key_hashes, headers)

        return [d.ids() for d in self._staged_pass(stage)]

    def _staged_pass(self, stage: Any) -> list[Delivery]:
        """Run ``stage`` with publishes staged (validated, nothing sent), then produce
        everything staged and wait for every delivery report once."""
        staged: list[tuple[Any, ...]] = []
        self._publishing.staged = staged
        try:
            stage()
        finally:
            self._publishing.staged = None
        deliveries = [self._produce(*args) for args in staged]
        self._confirm(deliveries)
        return deliveries

    def _send_one(self, queue: str, target: tuple[str, int], key: bytes, value: bytes,
                  hdrs: list[tuple[str, str | bytes | None]]) -> str:
        """Produce one message and wait for its delivery report: a closure for the report and
        one flush, no batch bookkeeping (routed publishes are sent one at a time)."""
        topic, p = target
        report: list[tuple[KafkaError | None, Any]] = []

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            report.append((err, msg))

        try:
            self._producer.produce(topic, value, key, p, on_delivery=on_delivery, headers=hdrs)
        except BufferError:
            self._produce_when_room(topic, p, key, value, hdrs, on_delivery)
        except KafkaException as exc:
            raise BackendError(f"publishing to {queue!r} failed: {exc}") from exc
        # flush returns as soon as the local queue is empty, i.e. our report is in (or when
        # the slice ends: another thread may keep the queue busy)
        self._producer.flush(0.1)
        if not report:
            self._await_report(queue, report)
        err, msg = report[0]
        if err is not None:
            raise delivery_error(queue, err, 0, 1)
        return str(msg.offset())

    def _await_report(self, queue: str, report: list[Any]) -> None:
        limit = self.timeout + 5.0
        deadline = time.monotonic() + limit
        while not report:
            if time.monotonic() > deadline:
                raise BackendUnavailableError(f"publishing to {queue!r}: no delivery confirmation within {limit}s")
            self._producer.flush(0.1)

    def publish_routed(
        self,
        batches: Mapping[str, Sequence[tuple[bytes | str, bytes | str]]],
        *,
        headers: Mapping[str, str] | None = None,
        epoch: int = 0,
    ) -> dict[str, list[str]]:
        """Publish to several queues and wait for every confirmation once, not per queue.

        Everything is validated (and every queue checked to exist) before anything is sent.
        Per-queue order is kept; returns the message ids per queue.
        """
        def stage() -> None:
            for q, items in batches.items():  # the base class validates; nothing is sent yet
                self.publish_batch(q, items, headers=headers, epoch=epoch)

        return {d.queue: d.ids() for d in self._staged_pass(stage)}

    def _target(self, queue: str) -> tuple[str, int]:
        """``(topic, partition)`` of an existing queue, remembered after the first check so a
        publish does not parse the name and consult metadata every time."""
        target = self._targets.get(queue)
        if target is None:
            target = self._require_partition(queue)
            with self._lock:
                self._targets[queue] = target
        return target

    def _produce(self, queue: str, batch: list[tuple[bytes, bytes]], headers: dict[str, str],
                 epoch: int, per_message: Sequence[Any] | None = None) -> Delivery:
        """Produce ``batch`` to ``queue``'s partition; ``per_message`` (a header list per
        message, routed batches) replaces the batch's shared headers."""
        topic, p = self._target(queue)
        # one header list for the whole batch: librdkafka copies it into each message
        hdrs = wire_headers(headers, epoch) if per_message is None else []
        delivery = Delivery(queue, len(batch))
        produce, report = self._producer.produce, delivery.on_delivery
        for i, (key, value) in enumerate(batch):
            if per_message is not None:
                hdrs = per_message[i]
            try:
                produce(topic, value, key, p, on_delivery=report, headers=hdrs)
            except BufferError:
                self._produce_when_room(topic, p, key, value, hdrs, report)
            except KafkaException as exc:
                raise BackendError(
                    f"publishing to {queue!r} failed after {i} of {len(batch)} messages were "
                    f"handed to the producer: {exc}"
                ) from exc
        return delivery

    def _produce_when_room(self, topic: str, p: int, key: bytes, value: bytes,
                           hdrs: list[tuple[str, str | bytes | None]], report: Any) -> None:
        """The producer's local queue is full: serve delivery reports until it takes the message."""
        deadline = time.monotonic() + self.timeout + 5.0
        while True:
            self._producer.poll(0.05)
            try:
                self._producer.produce(topic, value, key, p, on_delivery=report, headers=hdrs)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise BackendUnavailableError(
                        f"publishing to topic {topic!r}: the producer queue stayed full for "
                        f"{self.timeout + 5.0}s"
                    ) from None

    def _confirm(self, deliveries: list[Delivery]) -> None:
        """Wait for the delivery reports; the idempotent producer retries until message.timeout.ms."""
        flush = self._producer.flush
        pending = [d for d in deliveries if not d.done()]
        if pending:
            limit = self.timeout + 5.0
            deadline = time.monotonic() + limit
            while pending:
                # flush returns as soon as the local queue is empty, i.e. every report is in
                flush(0.1)
                pending = [d for d in pending if not d.done()]
                if pending and time.monotonic() > deadline:
                    raise BackendUnavailableError(
                        f"publishing to {pending[0].queue!r}: no delivery confirmation within {limit}s"
                    )
        for d in deliveries:
            if d.errors:
                raise delivery_error(d.queue, d.errors[0], len(d.offsets), d.expected)
