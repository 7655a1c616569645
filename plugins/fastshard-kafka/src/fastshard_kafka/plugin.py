"""Registers the Kafka backend with fastshard (entry point ``fastshard: kafka``)."""

from __future__ import annotations

from fastshard.backends import hookimpl
from fastshard_kafka.backend import KafkaBackend


@hookimpl
def fastshard_backends() -> list[type[KafkaBackend]]:
    return [KafkaBackend]
