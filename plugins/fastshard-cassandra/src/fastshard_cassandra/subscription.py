"""Change notification on Cassandra, which has no pub/sub: subscribers poll a table.

``notify`` inserts ``(channel, now(), payload)``; a subscription remembers the newest
timeuuid it has seen and asks for rows after it every ``poll_interval`` seconds, from a
background thread, into an inbox. A notification made before ``subscribe`` is never seen
(the contract's "current subscribers"); the latency is the poll interval.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from fastshard.backends.base import Subscription
from fastshard.errors import BackendError

Poll = Callable[[Any], list[tuple[Any, bytes]]]


class PollingSubscription(Subscription):
    def __init__(self, poll: Poll, since: Any, interval: float) -> None:
        self._poll = poll
        self._last = since
        self._interval = interval
        self._inbox: queue.SimpleQueue[bytes | BackendError] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastshard-cassandra-sub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                rows = self._poll(self._last)
            except BackendError as exc:  # handed to the reader: a subscription never goes silent
                self._inbox.put(exc)
                continue
            for at, payload in rows:
                self._last = at
                self._inbox.put(payload)

    def get(self, timeout: float | None = None) -> bytes | None:
        try:
            item = self._inbox.get(timeout=timeout) if timeout != 0 else self._inbox.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, BackendError):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
