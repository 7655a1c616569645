"""fastshard-kafka: fastshard queues on Kafka topic partitions.

>>> import fastshard.backends
>>> kafka = fastshard.backends.get("kafka", bootstrap_servers="broker:9092")  # doctest: +SKIP
"""

from fastshard_kafka.backend import EPOCH_HEADER, KafkaBackend
from fastshard_kafka.placement import PartitionCutover, PlacementPublisher, partition_for

__all__ = ["EPOCH_HEADER", "KafkaBackend", "PartitionCutover", "PlacementPublisher", "partition_for"]
