"""Backends: the plugin machinery and the embedded in-memory engine.

>>> from fastshard import backends
>>> mem = backends.get("memory")
>>> mem.create_queue("orders-0")
"""

from __future__ import annotations

from typing import Any

from fastshard.backends.base import Backend, LeaseInfo, Message, Subscription, Versioned
from fastshard.backends.plugins import backend_classes, get_plugin_manager, hookimpl
from fastshard.errors import UnknownBackendError

__all__ = [
    "Backend",
    "LeaseInfo",
    "Message",
    "Subscription",
    "Versioned",
    "available",
    "get",
    "get_plugin_manager",
    "hookimpl",
]


def available() -> list[str]:
    """Names of every backend a plugin registered (``memory`` is always there)."""
    return sorted(backend_classes())


def get(name: str = "memory", **options: Any) -> Backend:
    """Create the backend registered as ``name`` with ``options`` (URL, hosts, timeouts...)."""
    classes = backend_classes()
    try:
        cls = classes[name]
    except KeyError:
        raise UnknownBackendError(
            f"backend must be one of {sorted(classes)} (installed plugins), got {name!r}"
        ) from None
    backend = cls(**options)
    get_plugin_manager().hook.fastshard_backend_created(backend=backend)
    return backend
