"""Retrying a backend call with capped exponential backoff, then surfacing the failure."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastshard.errors import BackendUnavailableError

T = TypeVar("T")


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    attempts: int = 5,
    base_delay: float = 0.05,
    max_delay: float = 1.0,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, retrying only on ``retry_on`` errors.

    Raises :class:`BackendUnavailableError` naming ``what`` after the last attempt, with the
    last error chained. Only use it for operations that are safe to repeat (idempotent, or
    whose retry cannot duplicate an effect).
    """
    delay = base_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            if attempt == attempts:
                raise BackendUnavailableError(
                    f"{what} failed after {attempts} attempts: {type(exc).__name__}: {exc}"
                ) from exc
            if on_retry is not None:
                on_retry(exc)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(max_delay, delay * 2)
    raise AssertionError("unreachable")


async def call_with_retry_async(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    attempts: int = 5,
    base_delay: float = 0.05,
    max_delay: float = 1.0,
) -> T:
    """:func:`call_with_retry` for coroutines (asyncio backends): the same backoff and the same
    :class:`BackendUnavailableError` after the last attempt; the waits do not block the loop."""
    delay = base_delay
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except retry_on as exc:
            if attempt == attempts:
                raise BackendUnavailableError(
                    f"{what} failed after {attempts} attempts: {type(exc).__name__}: {exc}"
                ) from exc
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(max_delay, delay * 2)
    raise AssertionError("unreachable")
