"""The routing stamp: a message's epoch, sequence number and key hash as one header value.

:meth:`fastshard.sharding.Router.publish` gives every message the shard-map epoch it was
routed under plus two headers, ``fs-seq`` (the router's per-queue sequence number) and
``fs-hash`` (the key's 64-bit hash). A backend whose cost grows with the number of headers
(Kafka: librdkafka allocates and copies each one; RabbitMQ: pika encodes each table entry
in Python) carries all three in one header named ``fs``::

    fs: "<epoch> <seq> <hash>"      a routed message (decimal, one space apart)
    fs: "<epoch>"                   any other message

and unpacks it on consume, so consumers see the same :class:`~fastshard.backends.Message`
(``epoch`` plus the ``fs-seq``/``fs-hash`` headers) whichever way it travelled. The name
``fs`` is reserved on such backends: a caller's header of that name is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastshard.backends.base import (
    MAX_KEY_BYTES,
    QUEUES,
    Backend,
    _validate_headers,
    validate_name,
)
from fastshard.errors import InvalidValueError, check_int

MAX_EPOCH = 2**63 - 1  # Backend.publish_batch's bound on epochs
_ONLY_BYTES = {bytes}

STAMP_HEADER = "fs"
#: the router's per-queue sequence number of a message (a decimal str)
SEQ_HEADER = "fs-seq"
#: the 64-bit hash of a message's key (a decimal str)
HASH_HEADER = "fs-hash"


def format_stamp(epoch: int, seq: int, key_hash: int) -> str:
    """The stamp of a routed message."""
    return f"{epoch} {seq} {key_hash}"


def pack_stamp(headers: dict[str, str], epoch: int) -> tuple[dict[str, str], str]:
    """``(other headers, stamp)`` for a message published with ``headers`` and ``epoch``.

    ``fs-seq``/``fs-hash`` go into the stamp when both are decimal (what the router sends;
    digits only, so the fields split apart again unchanged); otherwise they stay ordinary
    headers and the stamp holds the epoch alone. ``headers`` is not changed.
    """
    if STAMP_HEADER in headers:
        raise InvalidValueError(
            f"headers must not use the name {STAMP_HEADER!r}: this backend carries the epoch in it")
    seq, key_hash = headers.get(SEQ_HEADER), headers.get(HASH_HEADER)
    if seq is None or key_hash is None or not (seq.isdigit() and key_hash.isdigit()):
        return headers, str(epoch)
    stamp = f"{epoch} {seq} {key_hash}"
    if len(headers) == 2:  # what Router.publish sends
        return {}, stamp
    return {k: v for k, v in headers.items() if k != SEQ_HEADER and k != HASH_HEADER}, stamp


def unpack_stamp(text: str, headers: dict[str, str]) -> int | None:
    """The epoch in stamp ``text``, adding its ``fs-seq``/``fs-hash`` to ``headers``; ``None``
    (and ``headers`` untouched) when ``text`` is not a stamp, e.g. another producer's ``fs``
    header, which the caller then keeps as an ordinary header."""
    parts = text.split(" ")
    epoch = parts[0]
    if not (epoch.isascii() and epoch.isdigit()):
        return None
    if len(parts) == 3:
        seq, key_hash = parts[1], parts[2]
        if not (seq.isdigit() and key_hash.isdigit()):
            return None
        headers[SEQ_HEADER] = seq
        headers[HASH_HEADER] = key_hash
    elif len(parts) != 1:
        return None
    return int(epoch)


def checked_stamped_batch(
    backend: Backend,
    queue: str,
    keys: Sequence[bytes],
    values: Sequence[bytes | str],
    epoch: int,
    first_seq: int,
    key_hashes: Sequence[int],
    headers: Mapping[str, str] | None,
) -> tuple[list[tuple[bytes, bytes]], dict[str, str], int]:
    """What a backend's ``publish_stamped_batch`` checks before sending anything: the same
    checks, with the same errors, as ``backend.publish_batch`` (queue name, headers, epoch,
    every key and value), plus the batch's own fields. Returns ``(items, headers, epoch)``:
    (key bytes, value bytes) pairs, the caller's headers without ``fs-seq``/``fs-hash`` (the
    stamp replaces them, as in ``stamp_headers``) and the epoch."""
    backend._require(QUEUES)
    validate_name("queue", queue)
    hdrs = _validate_headers(headers)
    hdrs.pop(SEQ_HEADER, None)
    hdrs.pop(HASH_HEADER, None)
    if type(epoch) is not int or not 0 <= epoch <= MAX_EPOCH:
        epoch = check_int("epoch", epoch, 0, MAX_EPOCH)
    check_int("first_seq", first_seq, 1, MAX_EPOCH)
    n = len(keys)
    if len(values) != n or len(key_hashes) != n:
        raise InvalidValueError(
            f"keys, values and key_hashes must have the same length, got {n}, {len(values)} "
            f"and {len(key_hashes)}")
    max_value = backend.max_message_bytes
    if n and (set(map(type, keys)) == _ONLY_BYTES and set(map(type, values)) == _ONLY_BYTES
              and max(map(len, keys)) <= MAX_KEY_BYTES and max(map(len, values)) <= max_value):
        return list(zip(keys, values, strict=True)), hdrs, epoch  # the common case, checked in C loops
    items = [backend._checked_item(i, item, max_value) for i, item in enumerate(zip(keys, values, strict=True))]
    return items, hdrs, epoch
