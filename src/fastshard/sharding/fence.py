"""The per-range drain fence: the one place that decides when a moved range may be consumed.

When a plan moves hash range ``[start, end)`` from queue A to queue B at epoch N+1, the
router records A's *mark*: the sequence number of the last message it published to A before
the switch (producers are paused for the instant of the switch, so nothing routed under
epoch N can land on A after the mark). Consumers of B then hold back every message of that
range stamped with epoch >= N+1 until A is *settled* up to the mark: every message A
received with a sequence number <= mark has been acknowledged.

Sequence numbers are the router's own (one counter per queue, stamped in the ``fs-seq``
header), not backend ids, so the rule is the same for a Redis stream id, a Kafka offset or
a RabbitMQ delivery tag. A publish that failed settles its number at once (it will never
be acked), so a failed send cannot wedge a fence.

Chains: if the range was itself still waiting to arrive on A (an active fence X -> A
covers it), the new fence A -> B also waits for X up to that fence's mark, so a range moved
twice in quick succession cannot overtake its own oldest messages (found by the hypothesis
test: publish, merge into A, isolate the key out of A, publish again).

Why this cannot deadlock: a fence installed at epoch e waits only for messages routed under
epochs < e; those can be held only by fences installed before e. Following the chain
strictly decreases the epoch, so it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from fastshard.backends.base import Message
from fastshard.backends.stamp import HASH_HEADER, SEQ_HEADER

__all__ = ["HASH_HEADER", "SEQ_HEADER", "DrainFence", "FenceRegistry"]


@dataclass(frozen=True, slots=True)
class DrainFence:
    """Messages of ``[start, end)`` on ``new_queue`` stamped with epoch >= ``epoch`` wait until
    ``old_queue`` is settled up to sequence number ``mark``."""

    start: int
    end: int
    old_queue: str
    new_queue: str
    mark: int
    epoch: int

    def covers(self, queue: str, h: int, epoch: int) -> bool:
        return queue == self.new_queue and self.start <= h < self.end and epoch >= self.epoch


class _Settled:
    """Which sequence numbers of one queue are done: everything <= ``low`` plus ``above``."""

    __slots__ = ("low", "above")

    def __init__(self) -> None:
        self.low = 0
        self.above: set[int] = set()

    def add(self, seq: int) -> None:
        if seq <= self.low:
            return
        self.above.add(seq)
        while self.low + 1 in self.above:
            self.low += 1
            self.above.discard(self.low)


class FenceRegistry:
    """Sequence numbers, settlement and active fences for every queue of one router.

    Thread-safe. ``holds`` is called for every consumed message, so it is a scan over the
    (few) active fences of that queue only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_seq: dict[str, int] = {}
        self._settled: dict[str, _Settled] = {}
        self._fences: dict[str, list[DrainFence]] = {}  # by new_queue
        self.released = 0  # fences released so far (for metrics and tests)

    # ------------------------------------------------------------------ producer side
    def next_seq(self, queue: str) -> int:
        with self._lock:
            seq = self._last_seq.get(queue, 0) + 1
            self._last_seq[queue] = seq
            return seq

    def next_seqs(self, queue: str, n: int) -> int:
        """Reserve ``n`` consecutive sequence numbers of ``queue`` at once (a routed batch);
        returns the first, the others follow it."""
        with self._lock:
            first = self._last_seq.get(queue, 0) + 1
            self._last_seq[queue] = first + n - 1
            return first

    def last_seq(self, queue: str) -> int:
        with self._lock:
            return self._last_seq.get(queue, 0)

    def publish_failed(self, queue: str, seq: int, count: int = 1) -> None:
        """``seq`` (and the ``count - 1`` numbers after it) will never be acked: settle them
        so no fence waits for them."""
        self.settle(queue, list(range(seq, seq + count)))

    def install(self, fences: list[DrainFence]) -> None:
        """Add fences (the router calls this while producers are paused).

        A range may still be waiting to reach its old queue A: an active fence into A covers
        it, and its messages sit on that fence's old queue X. The new owner must wait for X
        too, so each new fence A -> B inherits, for the overlap, every active fence X -> A.
        """
        with self._lock:
            before = {q: list(fs) for q, fs in self._fences.items()}
            for f in fences:
                inherited = [
                    DrainFence(max(f.start, g.start), min(f.end, g.end), g.old_queue, f.new_queue,
                               g.mark, f.epoch)
                    for g in before.get(f.old_queue, ())
                    if g.start < f.end and f.start < g.end
                ]
                for x in (f, *inherited):
                    if self._is_settled(x.old_queue, x.mark):
                        self.released += 1
                    else:
                        self._fences.setdefault(x.new_queue, []).append(x)

    # ------------------------------------------------------------------ consumer side
    def settle(self, queue: str, seqs: list[int]) -> None:
        """Sequence numbers of ``queue`` that were acked (or will never arrive)."""
        if not seqs:
            return
        with self._lock:
            st = self._settled.setdefault(queue, _Settled())
            for s in seqs:
                st.add(s)
            self._release_locked()

    def acked(self, queue: str, messages: Sequence[Message]) -> None:
        """Settle the sequence numbers of acknowledged messages (may release fences)."""
        self.settle(queue, [int(s) for m in messages if (s := m.headers.get(SEQ_HEADER)) is not None])

    def holds(self, queue: str, h: int, epoch: int) -> bool:
        fences = self._fences.get(queue)
        if not fences:
            return False
        return any(f.covers(queue, h, epoch) for f in list(fences))

    def active(self) -> list[DrainFence]:
        with self._lock:
            return [f for fs in self._fences.values() for f in fs]

    def waiting_on(self, queue: str) -> bool:
        """Does any active fence wait for ``queue`` to drain (so it must not be deleted)?"""
        with self._lock:
            return any(f.old_queue == queue for fs in self._fences.values() for f in fs)

    def settled_up_to(self, queue: str) -> int:
        with self._lock:
            st = self._settled.get(queue)
            return st.low if st else 0

    def forget(self, queue: str) -> None:
        """Drop the bookkeeping of a deleted queue."""
        with self._lock:
            self._last_seq.pop(queue, None)
            self._settled.pop(queue, None)
            self._fences.pop(queue, None)

    # ------------------------------------------------------------------ internals
    def _is_settled(self, queue: str, mark: int) -> bool:
        if mark <= 0:
            return True
        st = self._settled.get(queue)
        return st is not None and st.low >= mark

    def _release_locked(self) -> None:
        for q in list(self._fences):
            keep = [f for f in self._fences[q] if not self._is_settled(f.old_queue, f.mark)]
            self.released += len(self._fences[q]) - len(keep)
            if keep:
                self._fences[q] = keep
            else:
                del self._fences[q]
