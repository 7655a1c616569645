from fastshard_kafka.testing import kafka_mock_cluster  # noqa: F401  (the shipped fixture)
