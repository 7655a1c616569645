"""Observed load of a shard map: a bounded, weighted sample of key hashes.

``ShardMap.record_load`` feeds it; ``split`` cuts a slice at the sample's weighted median
(so both halves get about half the load) and picks a shard's most loaded slice from it.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from fastshard.errors import InvalidTypeError, InvalidValueError
from fastshard.shardmap_slices import HASH_SPACE


class LoadReservoir:
    """A bounded uniform sample of (hash, weight) observations (Vitter's algorithm R)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._h = np.zeros(capacity, dtype=np.uint64)
        self._w = np.zeros(capacity, dtype=np.float64)
        self._filled = 0
        self._seen = 0
        self._rng = np.random.default_rng()

    def add(self, hashes: Any, weights: Any) -> None:
        if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint64 or hashes.ndim != 1:
            raise InvalidTypeError("hashes must be a 1-D numpy uint64 array of key hashes")
        if weights is None:
            w = np.ones(hashes.shape[0], dtype=np.float64)
        else:
            try:
                w = np.asarray(weights, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise InvalidTypeError("weights must be an array of real numbers") from None
            if w.shape[0] != hashes.shape[0]:
                raise InvalidValueError(
                    f"weights must have one entry per hash ({hashes.shape[0]}), got {w.shape[0]}")
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise InvalidValueError("weights must be finite and >= 0")
        with self._lock:
            n = hashes.shape[0]
            room = min(n, self.capacity - self._filled)
            if room > 0:
                self._h[self._filled:self._filled + room] = hashes[:room]
                self._w[self._filled:self._filled + room] = w[:room]
                self._filled += room
            rest = n - room
            if rest > 0:
                # item with global position j (0-based) replaces a random slot w.p. capacity/(j+1)
                positions = np.arange(self._seen + room, self._seen + n, dtype=np.float64)
                slots = (self._rng.random(rest) * (positions + 1)).astype(np.int64)
                take = slots < self.capacity
                self._h[slots[take]] = hashes[room:][take]
                self._w[slots[take]] = w[room:][take]
            self._seen += n

    def clear(self) -> None:
        with self._lock:
            self._filled = self._seen = 0

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self._h[:self._filled].copy(), self._w[:self._filled].copy()

    def copy(self) -> LoadReservoir:
        other = LoadReservoir(self.capacity)
        with self._lock:
            other._h[:] = self._h
            other._w[:] = self._w
            other._filled, other._seen = self._filled, self._seen
        return other

    def weighted_median(self, start: int, end: int) -> int | None:
        """The cut in (start, end) that best halves the recorded load of [start, end)."""
        h, w = self.snapshot()
        sel = (h >= np.uint64(start)) if start else np.ones(h.shape[0], dtype=bool)
        if end < HASH_SPACE:
            sel &= h < np.uint64(end)
        h, w = h[sel], w[sel]
        total = float(w.sum())
        if total <= 0:
            return None
        order = np.argsort(h, kind="stable")
        h, w = h[order], w[order]
        cum = np.cumsum(w)
        m = int(np.searchsorted(cum, total / 2))
        hm = int(h[m])
        below_hm = float(w[h < np.uint64(hm)].sum())
        below_next = below_hm + float(w[h == np.uint64(hm)].sum())
        # cut at hm puts the median hash above the cut, at hm + 1 below it: take the better
        return hm if abs(2 * below_hm - total) <= abs(2 * below_next - total) else hm + 1
