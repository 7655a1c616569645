"""Hook specifications: the extension points a fastshard plugin may implement.

A plugin is a module (usually a small distribution of its own) that implements some of
these hooks with :data:`fastshard.backends.hookimpl` and is registered under the
``fastshard`` entry-point group::

    [project.entry-points.fastshard]
    redis = "fastshard_redis.plugin"

Every hook is optional. Hooks are called with keyword arguments, so an implementation may
accept fewer parameters than the specification lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from fastshard.backends.base import Backend

hookspec = pluggy.HookspecMarker("fastshard")


@hookspec
def fastshard_backends() -> Iterable[type[Backend]]:
    """Return the backend classes this plugin provides.

    Each class subclasses :class:`fastshard.backends.base.Backend` and sets ``name``;
    ``fastshard.backends.get(name, **options)`` instantiates it with ``options`` (a URL,
    hosts, timeouts). A name may be registered only once across all plugins.
    """


@hookspec
def fastshard_conflict_resolvers() -> Mapping[str, Callable[[Any, Any], Any]]:
    """Return named conflict resolvers for differential sync.

    A resolver takes ``(local, remote)`` versions of one record and returns the winner (or a
    merged record). ``"lww"`` (last writer wins on the hybrid logical clock) is built in.
    """


@hookspec
def fastshard_backend_created(backend: Backend) -> None:
    """Called after ``fastshard.backends.get`` created a backend (e.g. to add metrics)."""
