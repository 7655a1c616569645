"""fastshard-kafka: fastshard queues on Kafka topic partitions.

>>> import fastshard.backends
>>> kafka = fastshard.backends.get("kafka", bootstrap_servers="broker:9092")  # doctest: +SKIP
"""

from fastshard_kafka.backend import KafkaBackend
from fastshard_kafka.placement import PartitionCutover, PlacementPublisher, partition_for
from fastshard_kafka.wire import EPOCH_HEADER

__all__ = ["EPOCH_HEADER", "KafkaBackend", "PartitionCutover", "PlacementPublisher", "partition_for"]
