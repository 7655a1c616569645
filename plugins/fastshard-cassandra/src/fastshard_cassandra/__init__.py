"""fastshard-cassandra: shard maps, counters and leases in Cassandra with lightweight transactions.

>>> import fastshard.backends
>>> cass = fastshard.backends.get("cassandra", hosts="10.0.0.1,10.0.0.2")  # doctest: +SKIP
"""

from fastshard_cassandra.backend import CassandraBackend

__all__ = ["CassandraBackend"]
