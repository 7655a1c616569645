"""The shared backend contract, run against a real PostgreSQL server."""

from fastshard.testing.conformance import BackendConformance


class TestPostgresConformance(BackendConformance):
    """Every contract test, with the ``backend``/``unreachable_backend`` fixtures of conftest."""
