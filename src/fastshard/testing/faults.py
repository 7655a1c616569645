"""Fault injection for tests: a backend wrapper whose link to the real backend can be cut,
and a check that publishing survives a server killing its connections.

``OutageBackend(inner)`` forwards every operation to ``inner`` until ``down`` is set; then
each call raises :class:`BackendUnavailableError`, as a real client does after its retries
when the server is unreachable or partitioned away. Flip ``down`` back to heal the link.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from fastshard.backends.base import FAMILY_METHODS, Backend
from fastshard.errors import BackendUnavailableError


class OutageBackend(Backend):
    """Forwards to ``inner`` unless ``down``; counts the calls it refused in ``refused``."""

    name = "outage"
    capabilities: frozenset[str] = frozenset()  # per instance: whatever inner offers

    def __init__(self, inner: Any, capabilities: frozenset[str] | None = None) -> None:
        # ``inner`` is a Backend or anything with its public methods (e.g. a
        # multiprocessing manager proxy of one, shared by several processes);
        # ``capabilities`` is needed only when inner cannot report its own.
        self.inner = inner
        self.capabilities = frozenset(  # type: ignore[misc]
            capabilities if capabilities is not None else inner.capabilities
        )
        self.max_message_bytes = getattr(inner, "max_message_bytes", Backend.max_message_bytes)
        self.visibility_timeout = getattr(inner, "visibility_timeout", Backend.visibility_timeout)
        self.down = False
        self.refused = 0

    def _link(self, what: str) -> Backend:
        if self.down:
            self.refused += 1
            raise BackendUnavailableError(f"injected outage: {what} refused")
        return self.inner

    # Methods whose public form takes keyword-only arguments are spelled out; the rest
    # forward positionally (see the loop below).
    def _publish_batch(self, queue, batch, headers, epoch):  # noqa: ANN001, ANN202
        return self._link("publish_batch").publish_batch(queue, batch, headers=headers, epoch=epoch)

    def _consume(self, queue, group, consumer, max_messages, timeout):  # noqa: ANN001, ANN202
        return self._link("consume").consume(
            queue, group, consumer, max_messages=max_messages, timeout=timeout
        )


def _forwarder(method: str):  # noqa: ANN202
    public = method.lstrip("_")

    def call(self: OutageBackend, *args: Any) -> Any:
        return getattr(self._link(public), public)(*args)

    call.__name__ = method
    return call


for _methods in FAMILY_METHODS.values():
    for _m in _methods:
        if _m not in ("_publish_batch", "_consume"):
            setattr(OutageBackend, _m, _forwarder(_m))


def check_publishing_survives_connection_kills(
    backend: Backend,
    reader: Backend,
    kill_connections: Callable[[], int],
    *,
    messages: int,
    kill_every: float,
) -> None:
    """Publish ``messages`` messages and counter increments while a thread keeps killing the
    backend's server connections (``kill_connections`` returns how many it killed).

    Asserts that connections really were killed, that ``reader`` (a second client) sees every
    message exactly once and in order, and that every increment was applied exactly once.
    ``backend`` must be configured with enough retries to ride out the kills.
    """
    backend.create_queue("q")
    stop = threading.Event()
    kills = [0]

    def killer() -> None:
        while not stop.is_set():
            kills[0] += kill_connections()
            time.sleep(kill_every)

    t = threading.Thread(target=killer)
    t.start()
    published: list[bytes] = []
    counts: list[int] = []
    try:
        for i in range(messages):
            backend.publish("q", b"key", str(i).encode())
            published.append(str(i).encode())
            counts.append(backend.counter_add("c", 1))
    finally:
        stop.set()
        t.join()
    assert kills[0] > 0, "the check must actually have killed connections"
    got: list = []
    while batch := reader.consume("q", "g", max_messages=1000):
        got.extend(batch)
    assert [m.value for m in got] == published, "every message once, in order"
    assert counts == list(range(1, messages + 1)) and reader.counter_get("c") == messages


def publish_from_threads(backend: Backend, queue: str, *, threads: int = 6, per_thread: int = 30) -> None:
    """Publish ``per_thread`` messages from each of ``threads`` threads at once: thread ``t``
    sends key ``key-t`` with values ``t:0``, ``t:1``, ...; raises the first error any thread
    met (with the rest listed), so a pool that loses, mixes or refuses work shows up. The
    caller checks the stored messages: per key, values ``t:0 .. t:per_thread-1`` in order."""
    errors: list[BaseException] = []

    def produce(t: int) -> None:
        try:
            for i in range(per_thread):
                backend.publish(queue, f"key-{t}".encode(), f"{t}:{i}".encode())
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise AssertionError(f"{len(errors)} publishing thread(s) failed: {errors!r}") from errors[0]
