"""What a fastshard message looks like on Kafka, and what its delivery reports mean.

Headers
    Every message carries one ``fs`` header, the stamp of :mod:`fastshard.backends.stamp`:
    ``"<epoch>"``, or ``"<epoch> <seq> <hash>"`` for a message routed by
    :class:`fastshard.sharding.Router` (its ``fs-seq``/``fs-hash`` headers packed in).
    librdkafka allocates and copies each header of each message, so one header costs less
    than the three separate ones (``fastshard-epoch``, ``fs-seq``, ``fs-hash``) written
    before; consumers still read that older form.
Delivery reports
    A report with an error is raised as :class:`BackendUnavailableError` when retrying may
    help (broker gone, timed out) and as :class:`BackendError` otherwise, naming how many
    messages of the batch were confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError

from fastshard.backends.stamp import STAMP_HEADER, pack_stamp, unpack_stamp
from fastshard.errors import BackendError, BackendUnavailableError

#: the epoch header of messages written before the ``fs`` stamp replaced it; still read
EPOCH_HEADER = "fastshard-epoch"

UNAVAILABLE_CODES = {
    KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.REQUEST_TIMED_OUT, KafkaError._WAIT_COORD,
}


def error_class(err: KafkaError) -> type[BackendError]:
    """``BackendUnavailableError`` for a transient error, else ``BackendError``."""
    return BackendUnavailableError if (err.retriable() or err.code() in UNAVAILABLE_CODES) else BackendError


def delivery_error(queue: str, err: KafkaError, confirmed: int, expected: int) -> BackendError:
    return error_class(err)(f"publishing to {queue!r} failed after {confirmed} of {expected} "
                            f"messages were confirmed: {err.str()}")


def wire_headers(headers: dict[str, str], epoch: int) -> list[tuple[str, str | bytes | None]]:
    """The Kafka headers of a message: the caller's, with the epoch (and the router's
    ``fs-seq``/``fs-hash``) packed into the one ``fs`` stamp (:mod:`fastshard.backends.stamp`)."""
    others, stamp = pack_stamp(headers, epoch)
    out: list[tuple[str, str | bytes | None]] = [(k, v.encode()) for k, v in others.items()]
    out.append((STAMP_HEADER, stamp.encode()))
    return out


def read_headers(raw: Any) -> tuple[dict[str, str], int]:
    """A consumed message's ``(headers, epoch)``: the stamp unpacked, the pre-stamp
    ``fastshard-epoch`` header still read, a foreign ``fs`` header kept as it is."""
    headers: dict[str, str] = {}
    epoch = 0
    for k, v in raw or ():
        text = v.decode("utf-8", "replace") if v is not None else ""
        if k == STAMP_HEADER:
            stamped = unpack_stamp(text, headers)
            if stamped is not None:
                epoch = stamped
                continue
        elif k == EPOCH_HEADER:
            epoch = int(text) if text.isascii() and text.isdigit() else 0
            continue
        headers[k] = text
    return headers, epoch


@dataclass(slots=True)
class Delivery:
    """Delivery reports of one batch produced to one partition.

    librdkafka reports a partition's messages in the order they were produced, so one
    callback appending offsets is enough (no closure per message).
    """

    queue: str
    expected: int
    offsets: list[int] = field(default_factory=list)
    errors: list[KafkaError] = field(default_factory=list)

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.offsets.append(msg.offset())

    def done(self) -> bool:
        return bool(self.errors) or len(self.offsets) >= self.expected

    def ids(self) -> list[str]:
        return list(map(str, self.offsets))
