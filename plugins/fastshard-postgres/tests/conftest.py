"""Fixtures: a PostgresBackend in a schema of its own, dropped after each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from fastshard.testing.servers import require_server
from fastshard_postgres import PostgresBackend

PG_DSN = os.environ.get("FASTSHARD_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _require_postgres() -> None:
    info = psycopg.conninfo.conninfo_to_dict(PG_DSN)
    require_server("PostgreSQL", str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))


@pytest.fixture
def make_backend() -> Iterator[Callable[..., PostgresBackend]]:
    """Create backends sharing one fresh schema; it is dropped afterwards."""
    _require_postgres()
    schema = f"fs_test_{uuid.uuid4().hex[:12]}"
    made: list[PostgresBackend] = []

    def make(**options: object) -> PostgresBackend:
        options.setdefault("visibility_timeout", 0.5)
        b = PostgresBackend(dsn=PG_DSN, schema=schema, **options)  # type: ignore[arg-type]
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
    cleaner = PostgresBackend(dsn=PG_DSN, schema=schema)
    cleaner.drop_schema()
    cleaner.close()


@pytest.fixture
def backend(make_backend: Callable[..., PostgresBackend]) -> PostgresBackend:
    return make_backend()


@pytest.fixture
def unreachable_backend() -> Callable[[], PostgresBackend]:
    return lambda: PostgresBackend(
        dsn="postgresql://postgres@127.0.0.1:1/test",
        schema="unreachable",
        connect_timeout=1,
        retry_attempts=2,
        retry_base_delay=0.01,
    )


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The server's DSN, for tests that talk to PostgreSQL directly (skips without a server)."""
    _require_postgres()
    return PG_DSN
