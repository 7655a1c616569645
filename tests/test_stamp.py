"""The routing stamp (one ``fs`` header for epoch, sequence number and key hash)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastshard.backends.stamp import (
    HASH_HEADER,
    SEQ_HEADER,
    STAMP_HEADER,
    format_stamp,
    pack_stamp,
    unpack_stamp,
)
from fastshard.errors import InvalidValueError
from fastshard.sharding import fence

EPOCHS = st.integers(0, 2**63 - 1)
U64 = st.integers(0, 2**64 - 1)
HEADER_NAMES = st.text(min_size=1, max_size=12).filter(lambda k: k not in (STAMP_HEADER, SEQ_HEADER, HASH_HEADER))


def test_the_router_and_the_stamp_use_the_same_header_names():
    assert (fence.SEQ_HEADER, fence.HASH_HEADER) == (SEQ_HEADER, HASH_HEADER)


@given(epoch=EPOCHS, seq=U64, key_hash=U64, others=st.dictionaries(HEADER_NAMES, st.text(max_size=8), max_size=3))
def test_a_routed_message_round_trips_through_the_stamp(epoch, seq, key_hash, others):
    sent = {**others, SEQ_HEADER: str(seq), HASH_HEADER: str(key_hash)}
    rest, stamp = pack_stamp(sent, epoch)
    assert rest == others and stamp == format_stamp(epoch, seq, key_hash)
    got = dict(rest)
    assert unpack_stamp(stamp, got) == epoch
    assert got == sent  # the consumer sees exactly the headers the router sent


@given(epoch=EPOCHS, headers=st.dictionaries(HEADER_NAMES, st.text(max_size=8), max_size=3))
def test_a_message_without_router_headers_carries_only_the_epoch(epoch, headers):
    rest, stamp = pack_stamp(headers, epoch)
    assert rest == headers and stamp == str(epoch)
    got = dict(rest)
    assert unpack_stamp(stamp, got) == epoch and got == headers


def test_router_headers_that_are_not_decimal_travel_as_ordinary_headers():
    sent = {SEQ_HEADER: "7", HASH_HEADER: "not a number"}
    rest, stamp = pack_stamp(sent, 3)
    assert rest == sent and stamp == "3"


def test_a_caller_header_named_fs_is_refused():
    with pytest.raises(InvalidValueError, match="must not use the name 'fs'"):
        pack_stamp({STAMP_HEADER: "mine"}, 1)


@pytest.mark.parametrize("foreign", ["", "x", "1 2", "1 2 3 4", "-1", "1 a 3", "１", "1  2"])
def test_a_foreign_fs_header_is_not_taken_for_a_stamp(foreign):
    headers: dict[str, str] = {}
    assert unpack_stamp(foreign, headers) is None
    assert headers == {}
