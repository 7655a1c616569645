"""Reaching real servers from tests.

On a developer's laptop an integration test whose server is unreachable is skipped with the
reason; under ``CI=true`` it fails instead, so a green CI run means the integration tests ran.
"""

from __future__ import annotations

import os
import socket

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def server_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip (outside CI) or fail (under CI=true) unless ``host:port`` accepts connections."""
    import pytest

    if server_reachable(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{msg}, and CI=true requires every integration test to run")
    pytest.skip(msg)
