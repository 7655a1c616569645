"""The router's publish hooks and its batch path (:meth:`Router.publish_many`).

A routed message carries the shard-map epoch it was routed under and two headers, ``fs-seq``
(the router's per-queue sequence number) and ``fs-hash`` (the key's 64-bit hash). A backend
may carry the three numbers its own way by offering the optional methods described by
:class:`StampedPublisher` (one message) and :class:`StampedBatchPublisher` (one queue's part
of a batch); consumers see the same ``Message`` whichever way it travelled.

:func:`publish_many` routes a whole batch under one epoch: the keys are hashed and looked up
with the compiled many-key path, the router's gate is entered once, the messages are grouped
by queue (call order kept inside each queue), each queue's sequence numbers are reserved in
one step, and each queue's group goes to the backend in one call (or all groups in one call,
:class:`StampedGroupsPublisher`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fastshard.backends.stamp import HASH_HEADER, SEQ_HEADER
from fastshard.errors import InvalidTypeError, InvalidValueError
from fastshard.sharding.fence_store import PRODUCER_HEADER

if TYPE_CHECKING:
    from fastshard.sharding.router import RoutedMessage, Router


def stamp_headers(seq: int, key_hash: int, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers a routed message is published with: the caller's, then ``fs-seq`` and
    ``fs-hash`` (last, so a caller's header of the same name cannot replace them)."""
    if headers:
        return {**headers, SEQ_HEADER: str(seq), HASH_HEADER: str(key_hash)}
    return {SEQ_HEADER: str(seq), HASH_HEADER: str(key_hash)}


class StampedPublisher(Protocol):
    """What a backend may add so that :meth:`Router.publish` skips the str-header round trip.

    ``publish_stamped(queue, key, value, epoch, seq, key_hash, headers)`` must publish one
    message exactly as ``publish(queue, key, value, headers=stamp_headers(seq, key_hash,
    headers), epoch=epoch)`` would — same validation and errors, and the consumed message
    carries ``epoch`` and the ``fs-seq``/``fs-hash`` headers — but may carry the three
    numbers in its own format (Kafka packs them into one header). The router looks the
    method up on each publish; a backend without it is published to with the headers.
    """

    def publish_stamped(self, queue: str, key: bytes, value: bytes | str, epoch: int, seq: int,
                        key_hash: int, headers: Mapping[str, str] | None = None) -> str: ...


class StampedBatchPublisher(Protocol):
    """What a backend may add so that :meth:`Router.publish_many` sends one queue's messages
    in one call (a pipeline, a script run, one flush, one confirm wait, one transaction).

    ``publish_stamped_batch(queue, keys, values, epoch, first_seq, key_hashes, headers)``
    must publish ``keys[i], values[i]`` in order, each exactly as ``publish(queue, keys[i],
    values[i], headers=stamp_headers(first_seq + i, key_hashes[i], headers), epoch=epoch)``
    would: a consumer sees the same messages (epoch, ``fs-seq``, ``fs-hash``, the caller's
    headers, order) as if they had been published one by one. It validates everything
    before sending anything, with the errors of ``publish_batch``
    (:func:`fastshard.backends.stamp.checked_stamped_batch` does that), returns the ids in
    order, and raises if any message may not have been published — preferably sending all or
    none, as the router then voids every sequence number of the batch.
    """

    def publish_stamped_batch(self, queue: str, keys: Sequence[bytes], values: Sequence[bytes | str],
                              epoch: int, first_seq: int, key_hashes: Sequence[int],
                              headers: Mapping[str, str] | None = None) -> list[str]: ...


class StampedGroupsPublisher(Protocol):
    """An optional widening of :class:`StampedBatchPublisher` for a backend that confirms
    many queues with one wait (Kafka: produce everything, then one flush).

    ``publish_stamped_groups(groups, epoch, headers)``, each group ``(queue, keys, values,
    first_seq, key_hashes)``, must do what ``publish_stamped_batch`` would do for each group
    in turn, except that it validates every group (and checks every queue exists) before
    sending any message; returns the ids per group. When it raises, the router voids every
    sequence number of the call, so the error must say which groups were published.
    """

    def publish_stamped_groups(
        self, groups: Sequence[tuple[str, Sequence[bytes], Sequence[bytes | str], int, Sequence[int]]],
        epoch: int, headers: Mapping[str, str] | None = None,
    ) -> list[list[str]]: ...


def _as_list(field: str, items: Any) -> list[Any]:
    if isinstance(items, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(items, Sequence):
        raise InvalidTypeError(f"{field} must be a sequence (list or tuple), got {type(items).__name__}")
    return items if type(items) is list else list(items)


def publish_many(router: Router, keys: Sequence[Any], values: Sequence[bytes | str],
                 headers: Mapping[str, str] | None) -> list[RoutedMessage]:
    """:meth:`Router.publish_many` (see there)."""
    from fastshard.hashing import hash_many
    from fastshard.sharding.router import key_bytes

    backend = router.backend
    if backend is None:
        raise InvalidValueError("publish_many needs a backend: Router(shard_map, backend)")
    keys, values = _as_list("keys", keys), _as_list("values", values)
    if len(keys) != len(values):
        raise InvalidValueError(
            f"values must have one entry per key: len(keys) is {len(keys)}, len(values) is {len(values)}")
    if not keys:
        return []
    if headers is not None and not isinstance(headers, Mapping):
        raise InvalidTypeError(f"headers must be a mapping of str to str, got {type(headers).__name__}")
    kbs = [k if type(k) is bytes else key_bytes(k) for k in keys]
    hashes = hash_many(kbs)
    hash_ints = hashes.tolist()
    fences = router.fences
    shared = router.fence_store is not None
    batch_hook = getattr(backend, "publish_stamped_batch", None)
    gate = router._gate
    with gate.lock:  # enter the gate shared, once for the whole batch
        while gate.closed:
            gate.cv.wait()
        gate.readers += 1
    try:
        shard_map = router.shard_map
        epoch = shard_map.epoch
        if shared:
            fences.before_publish(epoch)  # type: ignore[union-attr]
        names = shard_map.shards
        # every number is reserved before anything is sent, so that a failure can void the
        # numbers of the groups not sent yet as well
        plan = []
        for s, positions in _group_positions(shard_map.shards_for_many(hashes)):
            queue = router.queue_of(names[s])
            plan.append((names[s], queue, positions, fences.next_seqs(queue, len(positions))))
        extra = headers
        if shared:
            extra = dict(headers) if headers else {}
            extra[PRODUCER_HEADER] = fences.producer_id  # type: ignore[union-attr]
        out: list[Any] = [None] * len(keys)
        groups_hook = getattr(backend, "publish_stamped_groups", None)
        if groups_hook is not None:
            _publish_groups_at_once(groups_hook, fences, plan, kbs, values, hash_ints, epoch, extra, out)
            return out
        for g_index, (shard, queue, positions, first) in enumerate(plan):
            g_keys, g_values, g_hashes = _pick(kbs, positions), _pick(values, positions), _pick(hash_ints, positions)
            sent = 0  # messages of this group known to be published
            try:
                if batch_hook is not None:
                    ids = batch_hook(queue, g_keys, g_values, epoch, first, g_hashes, extra)
                else:
                    ids = []
                    for j in range(len(positions)):
                        ids.append(_publish_one(backend, queue, g_keys[j], g_values[j], epoch, first + j,
                                                g_hashes[j], extra))
                        sent += 1
            except BaseException as exc:
                _void_unsent(fences, plan, g_index, sent)
                exc.add_note(_sent_note(plan, g_index, sent))
                raise
            _place(out, positions, shard, queue, ids, epoch, first)
    finally:
        with gate.lock:  # leave it
            gate.readers -= 1
            if gate.closed and not gate.readers:
                gate.cv.notify_all()
    return out


def _publish_groups_at_once(groups_hook: Any, fences: Any, plan: list[tuple[str, str, list[int], int]],
                            kbs: list[bytes], values: list[Any], hash_ints: list[int], epoch: int,
                            extra: Mapping[str, str] | None, out: list[Any]) -> None:
    """Every group in one backend call (``publish_stamped_groups``: one confirmation wait for
    the whole batch). If it raises, every number of the batch is voided: which groups made
    it is known only to the backend, whose error says so."""

    groups = [(queue, _pick(kbs, positions), _pick(values, positions), first, _pick(hash_ints, positions))
              for _, queue, positions, first in plan]
    try:
        ids = groups_hook(groups, epoch, extra)
    except BaseException as exc:
        _void_unsent(fences, plan, 0, 0)
        exc.add_note(f"publish_many: {len(plan)} group(s) were handed to the backend at once "
                     f"({', '.join(q for _, q, _, _ in plan)}); every sequence number was voided")
        raise
    for (shard, queue, positions, first), group_ids in zip(plan, ids, strict=True):
        _place(out, positions, shard, queue, group_ids, epoch, first)


def _group_positions(shard_index: np.ndarray) -> list[tuple[int, list[int]]]:
    """``(shard index, positions)`` per shard present: positions in call order, groups in
    the order their first message appears (a stable sort keeps call order inside each)."""
    order = np.argsort(shard_index, kind="stable")
    ranked = shard_index[order]
    cuts = np.flatnonzero(ranked[1:] != ranked[:-1]) + 1
    groups = [(int(ranked[c]), part.tolist()) for c, part in zip(np.r_[0, cuts], np.split(order, cuts), strict=True)]
    groups.sort(key=lambda g: g[1][0])
    return groups


def _pick(items: Sequence[Any], positions: list[int]) -> Sequence[Any]:
    """``[items[i] for i in positions]``, gathered in C (itemgetter of one position returns
    the item itself, not a 1-tuple)."""
    return itemgetter(*positions)(items) if len(positions) > 1 else [items[positions[0]]]


def _place(out: list[Any], positions: list[int], shard: str, queue: str, ids: Sequence[str], epoch: int,
           first: int) -> None:
    """Put one group's RoutedMessages at their input positions. Built with tuple.__new__: the
    named tuple's own __new__ is a Python function, ~2.5x slower, and this runs per message."""
    from fastshard.sharding.router import RoutedMessage

    made = map(partial(tuple.__new__, RoutedMessage),
               zip(repeat(shard), repeat(queue), ids, repeat(epoch), range(first, first + len(positions))))
    for i, routed in zip(positions, made, strict=True):
        out[i] = routed


def _publish_one(backend: Any, queue: str, key: bytes, value: bytes | str, epoch: int, seq: int,
                 key_hash: int, headers: Mapping[str, str] | None) -> str:
    """One message of a batch on a backend without ``publish_stamped_batch``.

    Not ``publish_batch``: it takes one header set for the whole batch, and every routed
    message needs its own ``fs-seq``/``fs-hash``; so the messages go one by one, through
    ``publish_stamped`` where the backend has it.
    """
    stamped = getattr(backend, "publish_stamped", None)
    if stamped is not None:
        return stamped(queue, key, value, epoch, seq, key_hash, headers)  # type: ignore[no-any-return]
    return backend.publish(queue, key, value, headers=stamp_headers(seq, key_hash, headers), epoch=epoch)  # type: ignore[no-any-return]


def _void_unsent(fences: Any, plan: list[tuple[str, str, list[int], int]], failed: int, sent: int) -> None:
    """Void the numbers that will never be acked: the failed group's from its first message
    not known to be published, and every later group's."""
    for k, (_, queue, positions, first) in enumerate(plan[failed:]):
        skip = sent if k == 0 else 0
        if len(positions) > skip:
            fences.publish_failed(queue, first + skip, len(positions) - skip)


def _sent_note(plan: list[tuple[str, str, list[int], int]], failed: int, sent: int) -> str:
    done = [f"{q} ({len(p)})" for _, q, p, _ in plan[:failed]]
    _, queue, positions, _ = plan[failed]
    return (f"publish_many: published before the failure: {', '.join(done) or 'no group'}; "
            f"{queue} failed after {sent} of {len(positions)} messages; "
            f"{len(plan) - failed - 1} later group(s) not sent")
