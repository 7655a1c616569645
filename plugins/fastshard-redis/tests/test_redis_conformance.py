"""The shared backend contract, run against a real Redis server."""

from fastshard.testing.conformance import BackendConformance


class TestRedisConformance(BackendConformance):
    """Every contract test, with the ``backend``/``unreachable_backend`` fixtures of conftest."""
