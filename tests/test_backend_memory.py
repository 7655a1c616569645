"""The in-memory backend against the shared conformance suite, plus what is specific to it."""

from __future__ import annotations

import pytest

from fastshard import backends
from fastshard.backends.base import UnsupportedOperationError
from fastshard.backends.memory import MemoryBackend
from fastshard.errors import InvalidValueError, UnknownBackendError
from fastshard.testing.conformance import BackendConformance


class TestMemoryConformance(BackendConformance):
    @pytest.fixture
    def backend(self):
        b = backends.get("memory", visibility_timeout=0.5)
        yield b
        b.close()

    @pytest.fixture
    def unreachable_backend(self):
        return None  # in-process: there is no server to lose


def test_memory_is_the_default_and_listed():
    assert "memory" in backends.available()
    assert isinstance(backends.get(), MemoryBackend)


def test_unknown_backend_names_the_installed_ones():
    with pytest.raises(UnknownBackendError, match=r"backend must be one of \[.*'memory'.*\].*'nope'"):
        backends.get("nope")


def test_bad_options_are_rejected():
    with pytest.raises(InvalidValueError, match="visibility_timeout must be > 0"):
        MemoryBackend(visibility_timeout=0)
    with pytest.raises(InvalidValueError, match="max_message_bytes"):
        MemoryBackend(max_message_bytes=0)


def test_publishing_to_a_missing_queue_is_an_error_not_a_new_queue():
    b = MemoryBackend()
    with pytest.raises(InvalidValueError, match="does not exist"):
        b.publish("never-created", b"k", b"v")
    assert b.list_queues() == []


def test_log_is_trimmed_once_every_group_acked():
    b = MemoryBackend()
    b.create_queue("q")
    b.publish_batch("q", [(b"k", str(i)) for i in range(100)])
    for g in ("a", "b"):
        got = b.consume("q", g, max_messages=100)
        b.ack("q", g, [m.id for m in got])
    assert len(b._queues["q"].log) == 0, "acked by every group: nothing retained"
    b.publish("q", b"k", b"next")
    assert [m.value for m in b.consume("q", "a")] == [b"next"]


def test_capabilities_gate_operations():
    class QueuesOnly(MemoryBackend):
        name = "queues-only"
        capabilities = frozenset({"queues"})

    b = QueuesOnly()
    b.create_queue("q")
    with pytest.raises(UnsupportedOperationError, match="not 'kv'"):
        b.kv_set("k", b"v")
    with pytest.raises(UnsupportedOperationError, match="not 'counters'"):
        b.counter_add("c", 1)


def test_a_backend_must_implement_every_family_it_declares():
    from fastshard.backends.base import Backend

    with pytest.raises(TypeError, match=r"does not implement \['_counter_add'\]"):

        class Incomplete(Backend):
            name = "incomplete"
            capabilities = frozenset({"counters"})


def test_outage_backend_refuses_while_down_and_heals():
    from fastshard.errors import BackendUnavailableError
    from fastshard.testing.faults import OutageBackend

    link = OutageBackend(MemoryBackend())
    link.create_queue("q")
    link.publish("q", b"k", b"before")
    link.down = True
    with pytest.raises(BackendUnavailableError, match="injected outage: publish_batch"):
        link.publish("q", b"k", b"lost?")
    with pytest.raises(BackendUnavailableError):
        link.counter_add("c", 1)
    link.down = False
    assert [m.value for m in link.consume("q", "g", max_messages=10)] == [b"before"]
    assert link.refused == 2
