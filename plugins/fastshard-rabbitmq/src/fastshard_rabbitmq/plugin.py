"""Registers the RabbitMQ backend with fastshard (entry point ``fastshard: rabbitmq``)."""

from __future__ import annotations

from fastshard.backends import hookimpl
from fastshard_rabbitmq.backend import RabbitMQBackend


@hookimpl
def fastshard_backends() -> list[type[RabbitMQBackend]]:
    return [RabbitMQBackend]
