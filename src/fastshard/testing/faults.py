"""Fault injection for tests: a backend wrapper whose link to the real backend can be cut.

``OutageBackend(inner)`` forwards every operation to ``inner`` until ``down`` is set; then
each call raises :class:`BackendUnavailableError`, as a real client does after its retries
when the server is unreachable or partitioned away. Flip ``down`` back to heal the link.
"""

from __future__ import annotations

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
