"""Creating, growing and deleting topics: the Admin API, behind a small replaceable interface.

The backend needs three topic operations (create with N partitions, add partitions, delete).
A real cluster does them through the Kafka Admin API. librdkafka's in-process mock cluster,
used by the tests, does not implement the Admin API, so the backend takes any object with
this interface; :class:`fastshard_kafka.testing.MockCluster` provides one over the mock C API.
"""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from fastshard.errors import BackendError, BackendUnavailableError


class TopicManager(Protocol):
    def create_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions; an existing topic is left alone."""

    def add_partitions(self, topic: str, total: int) -> None:
        """Grow ``topic`` to ``total`` partitions (Kafka cannot shrink a topic)."""

    def delete_topic(self, topic: str) -> None:
        """Delete ``topic`` and its messages; a missing topic is not an error."""


class AdminTopicManager:
    """Topic operations through the Kafka Admin API (a real broker or cluster)."""

    def __init__(self, config: dict[str, Any], *, replication_factor: int = -1,
                 timeout: float = 30.0) -> None:
        # replication_factor -1 lets the broker apply default.replication.factor
        self._admin = AdminClient(dict(config))
        self._rf = replication_factor
        self._timeout = timeout

    def _wait(self, futures: dict, what: str, ok_codes: tuple[int, ...]) -> None:
        for name, fut in futures.items():
            try:
                fut.result(timeout=self._timeout)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.code() in ok_codes:
                    continue
                if err.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                                  KafkaError._ALL_BROKERS_DOWN):
                    raise BackendUnavailableError(f"{what} {name!r} failed: {err.str()}") from exc
                raise BackendError(f"{what} {name!r} failed: {err.str()}") from exc

    def create_topic(self, topic: str, partitions: int) -> None:
        futures = self._admin.create_topics(
            [NewTopic(topic, partitions, self._rf)], request_timeout=self._timeout
        )
        self._wait(futures, "creating topic", (KafkaError.TOPIC_ALREADY_EXISTS,))

    def add_partitions(self, topic: str, total: int) -> None:
        futures = self._admin.create_partitions(
            [NewPartitions(topic, total)], request_timeout=self._timeout
        )
        self._wait(futures, "adding partitions to topic", ())

    def delete_topic(self, topic: str) -> None:
        futures = self._admin.delete_topics([topic], request_timeout=self._timeout)
        self._wait(futures, "deleting topic", (KafkaError.UNKNOWN_TOPIC_OR_PART,))
