"""The shared backend contract, run against librdkafka's in-process mock cluster."""

from __future__ import annotations

import uuid

import pytest

from fastshard.testing.conformance import BackendConformance
from fastshard_kafka import KafkaBackend

pytestmark = pytest.mark.integration


class TestKafkaConformance(BackendConformance):
    @pytest.fixture
    def backend(self, kafka_mock_cluster):
        b = KafkaBackend(
            kafka_mock_cluster.bootstrap_servers,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
            topic_manager=kafka_mock_cluster,
            visibility_timeout=0.5,
            timeout=5.0,
        )
        yield b
        b.close()

    @pytest.fixture
    def unreachable_backend(self):
        return lambda: KafkaBackend("127.0.0.1:1", timeout=0.5, retries=2)
