"""The stream fields of a routed batch: each message's headers JSON with its own stamp.

A routed message's ``h`` field holds its headers as compact JSON, the router's ``fs-seq``
and ``fs-hash`` included (``Router.publish`` sends them as ordinary headers). In a batch
every message has its own pair, so encoding a dict per message would cost a JSON encoder
run each; instead the caller's headers are encoded once and each message's two numbers are
formatted onto that prefix. ``json.loads`` of the result equals
``stamp_headers(seq, key_hash, headers)``: the numbers are decimal digits and the caller's
headers were stripped of the two names, so no key repeats.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

_headers_json = json.JSONEncoder(separators=(",", ":")).encode


def stamped_fields(items: Sequence[tuple[bytes, bytes]], headers: dict[str, str], first_seq: int,
                   key_hashes: Sequence[int]) -> list[tuple[bytes, bytes, bytes]]:
    """``(key, value, headers JSON)`` per message; message ``i`` has sequence number
    ``first_seq + i`` and hash ``key_hashes[i]``. ``headers`` must not hold ``fs-seq`` or
    ``fs-hash`` (``checked_stamped_batch`` removes them)."""
    prefix = _headers_json(headers)[:-1].encode() + b"," if headers else b"{"
    return [
        (k, v, b'%s"fs-seq":"%d","fs-hash":"%d"}' % (prefix, first_seq + i, h))
        for i, ((k, v), h) in enumerate(zip(items, key_hashes, strict=True))
    ]
