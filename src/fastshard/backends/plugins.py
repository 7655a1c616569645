"""The plugin manager: loads the ``fastshard`` entry-point group and the built-in backend."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pluggy

from fastshard.backends import hookspecs
from fastshard.errors import DuplicateNodeError

if TYPE_CHECKING:
    from fastshard.backends.base import Backend

hookimpl = pluggy.HookimplMarker("fastshard")

_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created (and entry points loaded) on first use."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("fastshard")
            pm.add_hookspecs(hookspecs)
            from fastshard.backends import memory

            pm.register(memory, name="memory")
            # Our own pyproject also lists memory under the entry point group (so that
            # `pip show` style tooling sees it); loading skips names already registered.
            pm.load_setuptools_entrypoints("fastshard")
            _pm = pm
        return _pm


def backend_classes() -> dict[str, type[Backend]]:
    """Every registered backend class by name; a name registered twice is an error."""
    found: dict[str, type[Backend]] = {}
    for classes in get_plugin_manager().hook.fastshard_backends():
        for cls in classes or ():
            if cls.name in found and found[cls.name] is not cls:
                raise DuplicateNodeError(
                    f"backend name {cls.name!r} is registered by both "
                    f"{found[cls.name].__module__} and {cls.__module__}"
                )
            found[cls.name] = cls
    return found
