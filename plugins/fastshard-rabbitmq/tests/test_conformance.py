"""The shared backend contract against the RabbitMQ server on 127.0.0.1:5672."""

from __future__ import annotations

import uuid

import pytest

from fastshard.testing.conformance import BackendConformance
from fastshard.testing.servers import require_server
from fastshard_rabbitmq import RabbitMQBackend

pytestmark = pytest.mark.integration


class TestRabbitMQConformance(BackendConformance):
    @pytest.fixture
    def backend(self):
        require_server("RabbitMQ", "127.0.0.1", 5672)
        require_server("RabbitMQ management API", "127.0.0.1", 15672)
        b = RabbitMQBackend(prefix=f"t{uuid.uuid4().hex[:10]}.", visibility_timeout=0.5, timeout=5.0)
        yield b
        try:
            for q in b.list_queues():
                b.delete_queue(q)
        finally:
            b.close()

    @pytest.fixture
    def unreachable_backend(self):
        return lambda: RabbitMQBackend("amqp://guest:guest@127.0.0.1:1/%2F", timeout=0.5, retries=2)
