"""Input validation for the asyncio backend, by the Backend base class itself.

The base class validates in its public methods and then calls the ``_`` method a backend
implements; :class:`ArgumentChecks` implements those by returning the checked arguments, so
``AsyncRabbitMQBackend`` runs the very same checks (same errors, same messages) without
re-implementing them, and before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastshard.backends.base import QUEUES, Backend

__all__ = ["ArgumentChecks"]


class ArgumentChecks(Backend):
    """The Backend base class's public queue methods, validating exactly as they do for every
    backend, whose ``_`` methods hand the checked arguments back instead of sending them.
    An asyncio backend calls these first, so it refuses what RabbitMQBackend refuses, with
    the same errors, before anything reaches the broker."""

    name = "rabbitmq"
    capabilities = frozenset({QUEUES})

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def _create_queue(self, queue: str) -> None:
        return None

    def _delete_queue(self, queue: str) -> None:
        return None

    def _list_queues(self) -> Iterable[str]:
        return ()

    def _publish_batch(self, queue: str, batch: list[tuple[bytes, bytes]],
                       headers: dict[str, str], epoch: int) -> list[Any]:
        return [(batch, headers, epoch)]

    def _consume(self, queue: str, group: str, consumer: str, max_messages: int,
                 timeout: float) -> list[Any]:
        return [(max_messages, timeout)]

    def _ack(self, queue: str, group: str, ids: list[str]) -> Any:
        return ids

    def _backlog(self, queue: str, group: str) -> int:
        return 0
