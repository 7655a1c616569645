"""fastshard-postgres: the PostgreSQL backend plugin for fastshard.

>>> import fastshard.backends
>>> backend = fastshard.backends.get("postgres", dsn="postgresql://postgres@127.0.0.1/test")
"""

from fastshard_postgres.backend import PostgresBackend

__all__ = ["PostgresBackend"]
