"""librdkafka's in-process mock cluster, for tests, and pytest fixtures around it.

``rd_kafka_mock_cluster_new`` starts brokers on 127.0.0.1 inside this process; any client
(ours, the raw confluent-kafka one, another language) reaches them over TCP through
:attr:`MockCluster.bootstrap_servers`. The mock does not implement the Admin API, so topics
are created with the mock C API (``rd_kafka_mock_topic_create``), reached through ctypes on
the librdkafka shared library that ships inside the confluent-kafka wheel. ``MockCluster``
is also a :class:`~fastshard_kafka.topics.TopicManager`, so a backend can be handed it.

Use from a test suite::

    pytest_plugins = ["fastshard_kafka.testing"]

    def test_something(kafka_mock_cluster):
        backend = KafkaBackend(bootstrap_servers=kafka_mock_cluster.bootstrap_servers,
                               topic_manager=kafka_mock_cluster)
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections.abc import Iterator

import confluent_kafka

from fastshard.errors import BackendError, InvalidValueError

_RD_KAFKA_PRODUCER = 0
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _find_librdkafka() -> str:
    """The librdkafka that confluent-kafka itself loaded (bundled in the wheel), else the system one."""
    here = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
    for pattern in ("confluent_kafka.libs/librdkafka*.so*", "confluent_kafka/.dylibs/librdkafka*.dylib",
                    "confluent_kafka.libs/librdkafka*.dll", "confluent_kafka/librdkafka*"):
        hits = sorted(glob.glob(os.path.join(here, pattern)))
        if hits:
            return hits[0]
    import ctypes.util

    found = ctypes.util.find_library("rdkafka")
    if found is None:
        raise BackendError("librdkafka shared library not found (needed for the Kafka mock cluster)")
    return found


def _librdkafka() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL(_find_librdkafka())
            vp, cp, ci, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
            lib.rd_kafka_conf_new.restype = vp
            lib.rd_kafka_conf_new.argtypes = []
            lib.rd_kafka_conf_set.restype = ci
            lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, sz]
            lib.rd_kafka_new.restype = vp
            lib.rd_kafka_new.argtypes = [ci, vp, cp, sz]
            lib.rd_kafka_destroy.restype = None
            lib.rd_kafka_destroy.argtypes = [vp]
            lib.rd_kafka_mock_cluster_new.restype = vp
            lib.rd_kafka_mock_cluster_new.argtypes = [vp, ci]
            lib.rd_kafka_mock_cluster_destroy.restype = None
            lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
            lib.rd_kafka_mock_cluster_bootstraps.restype = cp
            lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
            lib.rd_kafka_mock_topic_create.restype = ci
            lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ci, ci]
            lib.rd_kafka_mock_topic_delete.restype = ci
            lib.rd_kafka_mock_topic_delete.argtypes = [vp, cp]
            lib.rd_kafka_mock_broker_set_down.restype = ci
            lib.rd_kafka_mock_broker_set_down.argtypes = [vp, ctypes.c_int32]
            lib.rd_kafka_mock_broker_set_up.restype = ci
            lib.rd_kafka_mock_broker_set_up.argtypes = [vp, ctypes.c_int32]
            lib.rd_kafka_err2str.restype = cp
            lib.rd_kafka_err2str.argtypes = [ci]
            _lib = lib
        return _lib


class MockCluster:
    """An in-process mock Kafka cluster of ``brokers`` brokers; ``close()`` stops it."""

    def __init__(self, brokers: int = 3) -> None:
        if not isinstance(brokers, int) or not 1 <= brokers <= 16:
            raise InvalidValueError(f"brokers must be an int in [1, 16], got {brokers!r}")
        self.brokers = brokers
        lib = _librdkafka()
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        # the handle that owns the mock cluster never talks to a broker itself
        lib.rd_kafka_conf_set(conf, b"log_level", b"0", errstr, 512)
        self._rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, 512)
        if not self._rk:
            raise BackendError(f"rd_kafka_new failed: {errstr.value.decode(errors='replace')}")
        self._mc = lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._mc:
            lib.rd_kafka_destroy(self._rk)
            raise BackendError("rd_kafka_mock_cluster_new failed")
        self.bootstrap_servers: str = lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()
        self._lock = threading.Lock()

    def _check(self, err: int, what: str) -> None:
        if err:
            raise BackendError(f"{what}: {_librdkafka().rd_kafka_err2str(err).decode()}")

    # -- TopicManager ------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int) -> None:
        with self._lock:
            err = _librdkafka().rd_kafka_mock_topic_create(self._mc, topic.encode(), partitions, 1)
        if err == 36:  # TOPIC_ALREADY_EXISTS: creating an existing topic is a no-op
            return
        self._check(err, f"creating mock topic {topic!r}")

    def add_partitions(self, topic: str, total: int) -> None:
        raise BackendError(
            "the librdkafka mock cluster cannot add partitions to a topic; create the topic "
            "with all partitions up front (see docs/backend-kafka.md, 'growing a topic')"
        )

    def delete_topic(self, topic: str) -> None:
        with self._lock:
            err = _librdkafka().rd_kafka_mock_topic_delete(self._mc, topic.encode())
        if err == 3:  # UNKNOWN_TOPIC_OR_PART: deleting a missing topic is a no-op
            return
        self._check(err, f"deleting mock topic {topic!r}")

    # -- fault injection ---------------------------------------------------------
    def set_broker_down(self, broker_id: int) -> None:
        """Make broker ``broker_id`` (1-based) refuse connections, as if it crashed."""
        self._check(_librdkafka().rd_kafka_mock_broker_set_down(self._mc, broker_id), "broker down")

    def set_broker_up(self, broker_id: int) -> None:
        self._check(_librdkafka().rd_kafka_mock_broker_set_up(self._mc, broker_id), "broker up")

    def close(self) -> None:
        if self._mc:
            lib = _librdkafka()
            lib.rd_kafka_mock_cluster_destroy(self._mc)
            lib.rd_kafka_destroy(self._rk)
            self._mc = self._rk = None

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fixtures() -> None:
    """Define the pytest fixtures only when pytest is present (this module ships at runtime)."""
    import pytest

    @pytest.fixture(scope="session")
    def kafka_mock_cluster() -> Iterator[MockCluster]:
        """A 3-broker mock cluster shared by the test session (use fresh topic names per test)."""
        cluster = MockCluster(3)
        try:
            yield cluster
        finally:
            cluster.close()

    globals()["kafka_mock_cluster"] = kafka_mock_cluster


try:
    _fixtures()
except ImportError:  # pytest not installed: the MockCluster class is still usable
    pass
