"""fastshard-rabbitmq: fastshard queues on RabbitMQ queues bound to one direct exchange.

>>> import fastshard.backends
>>> rabbit = fastshard.backends.get("rabbitmq", url="amqp://guest:guest@127.0.0.1:5672/")  # doctest: +SKIP
"""

from fastshard_rabbitmq.backend import EPOCH_HEADER, KEY_HEADER, RabbitMQBackend
from fastshard_rabbitmq.placement import ShardRouter, shard_for

__all__ = ["EPOCH_HEADER", "KEY_HEADER", "RabbitMQBackend", "ShardRouter", "shard_for"]
