"""The plugin manager: entry points, duplicate names, and the backend-created hook."""

from __future__ import annotations

import pytest

from fastshard import backends
from fastshard.backends import plugins
from fastshard.backends.memory import MemoryBackend
from fastshard.errors import DuplicateNodeError


class _Clash:
    class Other(MemoryBackend):
        name = "memory"

    @backends.hookimpl
    def fastshard_backends(self):
        return [self.Other]


class _Watcher:
    def __init__(self) -> None:
        self.seen: list = []

    @backends.hookimpl
    def fastshard_backend_created(self, backend):
        self.seen.append(backend)


@pytest.fixture
def pm():
    manager = plugins.get_plugin_manager()
    registered: list = []
    yield lambda plugin: registered.append(manager.register(plugin) and plugin)
    for plugin in registered:
        manager.unregister(plugin)


def test_memory_plugin_is_registered_under_its_entry_point_name():
    assert plugins.get_plugin_manager().get_plugin("memory") is not None


def test_two_plugins_claiming_one_name_is_an_error_naming_both(pm):
    pm(_Clash())
    with pytest.raises(DuplicateNodeError, match="registered by both"):
        backends.get("memory")


def test_backend_created_hook_sees_every_new_backend(pm):
    watcher = _Watcher()
    pm(watcher)
    b = backends.get("memory")
    assert watcher.seen == [b]


def test_every_lazy_export_resolves():
    import fastshard

    for name in fastshard.__all__:
        assert getattr(fastshard, name) is not None, name
