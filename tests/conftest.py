"""Shared test helpers (the reusable ones live in fastshard.testing, for plugin authors too)."""

from fastshard.testing.servers import IN_CI, require_server, server_reachable

__all__ = ["IN_CI", "require_server", "server_reachable"]
