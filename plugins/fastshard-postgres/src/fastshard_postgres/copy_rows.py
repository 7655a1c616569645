"""Rows of the ``messages`` table as one buffer in PostgreSQL's binary COPY format.

psycopg's ``Copy.write_row`` runs a Python dumper per field, ~4 µs a row for the six fields
of a message. A batch of messages always has the same shape — ``(queue text, seq int8, key
bytea, value bytea, headers jsonb, epoch int8)`` — so its rows are packed here in one pass
and sent with one ``Copy.write``.

The format (PostgreSQL manual, "COPY", "Binary Format"): an 11-byte signature, an int32
flags field and an int32 header-extension length; per tuple an int16 field count, then per
field an int32 byte length (-1 for NULL) followed by the bytes in the type's binary form
(``text``: UTF-8; ``int8``: big-endian; ``bytea``: as is; ``jsonb``: a version byte 1 and
the JSON text); an int16 -1 ends the data. All integers are network byte order.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

#: the column list the buffers below fill, in order
COLUMNS = "(queue, seq, key, value, headers, epoch)"
COPY_OPTIONS = "(FORMAT binary)"

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_FIELDS = 6
_JSONB_VERSION = b"\x01"
_NULL = struct.pack(">i", -1)
_length = struct.Struct(">i").pack
_int8 = struct.Struct(">iq").pack  # an int8 field: its length (8), then the value


def _row_head(queue: str) -> bytes:
    q = queue.encode()
    return struct.pack(">hi", _FIELDS, len(q)) + q


def message_rows(queue: str, first_seq: int, items: Sequence[tuple[bytes, bytes]],
                 headers_json: bytes | Sequence[bytes] | None, epoch: int, out: list[bytes]) -> None:
    """Append the tuples of ``items`` (sequence numbers from ``first_seq``) to ``out``.

    ``headers_json`` is the JSON text of every row's headers (one ``bytes`` for all rows, a
    sequence with one per row, or ``None`` for SQL NULL).
    """
    head = _row_head(queue)
    tail = _int8(8, epoch)
    append = out.append
    if headers_json is None or isinstance(headers_json, bytes):
        shared = _NULL if headers_json is None else _length(len(headers_json) + 1) + _JSONB_VERSION + headers_json
        for i, (k, v) in enumerate(items):
            append(b"".join((head, _int8(8, first_seq + i), _length(len(k)), k, _length(len(v)), v, shared, tail)))
        return
    for i, ((k, v), h) in enumerate(zip(items, headers_json, strict=True)):
        append(b"".join((head, _int8(8, first_seq + i), _length(len(k)), k, _length(len(v)), v,
                         _length(len(h) + 1), _JSONB_VERSION, h, tail)))


def stamped_headers_json(prefix: bytes, first_seq: int, key_hashes: Sequence[int]) -> list[bytes]:
    """Each routed row's headers as JSON text: ``prefix`` (``b"{"`` or the caller's headers
    without their closing brace and with a comma) plus its ``fs-seq``/``fs-hash``."""
    return [b'%s"fs-seq":"%d","fs-hash":"%d"}' % (prefix, first_seq + i, h) for i, h in enumerate(key_hashes)]


def copy_buffer(rows: list[bytes]) -> bytes:
    """The whole COPY stream for ``rows``."""
    return b"".join((SIGNATURE, *rows, TRAILER))
