"""The shared backend contract against a real Cassandra cluster.

There is no Cassandra server in this project's CI. These tests run only when
``FASTSHARD_CASSANDRA_HOSTS`` names one (``host1,host2``), and otherwise skip with that
reason; it is the one integration suite allowed to skip under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid

import pytest

from fastshard.testing.conformance import BackendConformance
from fastshard_cassandra import CassandraBackend

HOSTS = os.environ.get("FASTSHARD_CASSANDRA_HOSTS", "")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HOSTS, reason="FASTSHARD_CASSANDRA_HOSTS is not set"),
]


class TestCassandraConformance(BackendConformance):
    @pytest.fixture
    def backend(self):
        # a keyspace per test: isolation (and it is dropped afterwards)
        b = CassandraBackend(HOSTS, keyspace=f"fs_{uuid.uuid4().hex[:12]}", poll_interval=0.05)
        yield b
        try:
            b._run(lambda s: s.execute(f"DROP KEYSPACE IF EXISTS {b.keyspace}"), "drop keyspace")
        finally:
            b.close()

    @pytest.fixture
    def unreachable_backend(self):
        return lambda: CassandraBackend("127.0.0.1", port=1, timeout=0.5, retries=2)
