"""The binary COPY encoder against the server's own decoder: rows written with one
``Copy.write`` of :mod:`fastshard_postgres.copy_rows` read back exactly as given."""

from __future__ import annotations

import json

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastshard_postgres.copy_rows import (
    COLUMNS,
    COPY_OPTIONS,
    copy_buffer,
    message_rows,
    stamped_headers_json,
)

pytestmark = pytest.mark.integration

ITEMS = st.lists(st.tuples(st.binary(max_size=64), st.binary(max_size=300)), max_size=20)
# jsonb cannot hold U+0000 (the server refuses "\u0000" in any JSON it stores)
_TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=12)
HEADERS = st.none() | st.dictionaries(_TEXT.filter(bool), _TEXT, max_size=3)


@pytest.fixture(scope="module")
def conn(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("CREATE TEMP TABLE m (queue text, seq bigint, key bytea, value bytea, headers jsonb, "
                  "epoch bigint NOT NULL)")
        yield c


def _copy(conn, rows: list[bytes]) -> list[tuple]:
    conn.execute("TRUNCATE m")
    with conn.cursor().copy(f"COPY m {COLUMNS} FROM STDIN {COPY_OPTIONS}") as copy:
        copy.write(copy_buffer(rows))
    return conn.execute("SELECT queue, seq, key, value, headers, epoch FROM m ORDER BY queue, seq").fetchall()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=ITEMS, first=st.integers(1, 2**62), epoch=st.integers(0, 2**63 - 1), headers=HEADERS,
       queue=st.text(min_size=1, max_size=20).filter(lambda q: "\x00" not in q))
def test_rows_read_back_exactly(conn, items, first, epoch, headers, queue):
    rows: list[bytes] = []
    hj = None if headers is None else json.dumps(headers).encode()
    message_rows(queue, first, items, hj, epoch, rows)
    got = _copy(conn, rows)
    assert got == [(queue, first + i, k, v, headers, epoch) for i, (k, v) in enumerate(items)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 30), first_seq=st.integers(1, 2**40), hashes=st.lists(st.integers(0, 2**64 - 1), max_size=30),
       extra=st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda k: not k.startswith("fs")),
                             st.text(max_size=8), max_size=2))
def test_stamped_rows_carry_each_rows_numbers(conn, n, first_seq, hashes, extra):
    items = [(b"k%d" % i, b"v") for i in range(len(hashes))]
    prefix = (json.dumps(extra, separators=(",", ":"))[:-1] + ",").encode() if extra else b"{"
    rows: list[bytes] = []
    message_rows("q", 7, items, stamped_headers_json(prefix, first_seq, hashes), 3, rows)
    got = _copy(conn, rows)
    assert [r[4] for r in got] == [{**extra, "fs-seq": str(first_seq + i), "fs-hash": str(h)}
                                   for i, h in enumerate(hashes)]
    assert [r[1] for r in got] == list(range(7, 7 + len(hashes)))
