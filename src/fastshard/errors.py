"""Exceptions raised by fastshard.

Every input error is both a :class:`FastshardError` and the matching built-in
(``ValueError`` / ``TypeError``), so callers can catch either. Messages name the
offending field and the accepted range.
"""

from __future__ import annotations

import math
from typing import Any


class FastshardError(Exception):
    """Base class of every exception fastshard raises on purpose."""


class InvalidValueError(FastshardError, ValueError):
    """An argument has the right type but a value outside what is accepted."""


class InvalidTypeError(FastshardError, TypeError):
    """An argument has a type fastshard does not accept."""


class EmptyRingError(InvalidValueError):
    """A lookup was made on a ring (or map) that has no nodes."""


class UnknownNodeError(InvalidValueError, KeyError):
    """A node (or shard) name that is not present was named."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNodeError(InvalidValueError):
    """A node (or shard) name that is already present was added again."""


class UnknownQueueError(InvalidValueError):
    """A queue (shard) that does not exist was named: never created, or deleted meanwhile."""


class EpochConflictError(FastshardError):
    """A compare-and-set on a versioned object lost: someone else wrote that epoch first."""


class StaleEpochError(FastshardError):
    """An operation named an epoch older than the oldest one still known."""


class BackendError(FastshardError):
    """A backend call failed and could not be completed after retrying."""


class BackendUnavailableError(BackendError):
    """The backend's server could not be reached (after the configured retries)."""


class UnknownBackendError(InvalidValueError):
    """No backend plugin registered the requested name."""


class MessageTooLargeError(InvalidValueError):
    """A message exceeds the backend's maximum message size."""


class LeaseLostError(FastshardError):
    """A lease (ID block range, host id, shard ownership) expired or was taken over (fenced)."""


class IdExhaustedError(FastshardError):
    """No ID could be issued within the bounded wait (counter range full, no new block)."""


def check_finite(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise naming ``name`` if it is not a finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(v):
        raise InvalidValueError(f"{name} must be finite, got {value!r}")
    return v


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0, else an error naming ``name``."""
    v = check_finite(name, value)
    if v <= 0:
        raise InvalidValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_seconds(name: str, value: Any, hi: float | None = None) -> float:
    """A duration in seconds: finite, > 0 and (when ``hi`` is given) <= ``hi``."""
    v = check_finite(name, value)
    if hi is None:
        if v <= 0:
            raise InvalidValueError(f"{name} must be > 0 seconds, got {value}")
    elif not 0 < v <= hi:
        raise InvalidValueError(f"{name} must be in (0, {hi}] seconds, got {value!r}")
    return v


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An ``int`` (not bool) within ``[lo, hi]`` (either end optional), else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise InvalidTypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else str(lo)
        hi_s = "inf" if hi is None else str(hi)
        raise InvalidValueError(f"{name} must be in [{lo_s}, {hi_s}], got {value}")
    return value
