"""Checks that need no server: option validation, the plugin registration, the capabilities."""

from __future__ import annotations

import pytest

from fastshard import backends
from fastshard.backends.base import UnsupportedOperationError
from fastshard.errors import BackendUnavailableError, InvalidValueError
from fastshard_cassandra import CassandraBackend


def test_registered_under_its_entry_point_name():
    assert "cassandra" in backends.available()
    b = backends.get("cassandra", hosts="127.0.0.1")  # connects lazily
    assert isinstance(b, CassandraBackend) and b.hosts == ["127.0.0.1"]


def test_offers_kv_counters_leases_but_not_queues():
    b = CassandraBackend()
    assert b.capabilities == frozenset({"kv", "counters", "leases"})
    with pytest.raises(UnsupportedOperationError, match="not 'queues'"):
        b.publish("q", b"k", b"v")


@pytest.mark.parametrize("kw, match", [
    ({"keyspace": "bad-name"}, "keyspace must be"),
    ({"keyspace": "1abc"}, "keyspace must be"),
    ({"hosts": ""}, "hosts must name"),
    ({"port": 0}, "port must be in"),
    ({"timeout": 0}, "timeout must be in"),
    ({"poll_interval": 0}, "poll_interval must be in"),
    ({"replication": {"replication_factor": 3}}, "replication must be a dict with a 'class'"),
])
def test_bad_options_are_rejected(kw, match):
    with pytest.raises(InvalidValueError, match=match):
        CassandraBackend(**kw)


def test_no_server_means_a_clear_error_after_the_retry_budget():
    b = CassandraBackend("127.0.0.1", port=1, timeout=0.5, retries=2)
    with pytest.raises(BackendUnavailableError, match="after 2 attempts"):
        b.kv_get("anything")
    b.close()
