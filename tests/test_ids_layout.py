"""IdLayout: packing, validation, time shards and the Crockford base32 text form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard.errors import InvalidTypeError, InvalidValueError
from fastshard.ids import DEFAULT_LAYOUT, IdLayout, from_text, parse, to_text

layouts = st.builds(
    lambda t, h, c, secs: IdLayout(t, h, c, secs),
    st.integers(1, 30), st.integers(1, 16), st.integers(1, 18),
    st.sampled_from([0.001, 0.5, 1.0, 60.0, 3600.0]),
)


def test_default_layout_has_room_for_years_hosts_and_millions_per_shard() -> None:
    lay = DEFAULT_LAYOUT
    assert lay.total_bits == 63  # positive in signed BIGINT columns
    years = (lay.max_shard + 1) * lay.shard_seconds / (365.25 * 86400)
    assert years > 15
    assert lay.max_host + 1 >= 1024
    assert lay.counter_capacity >= 10_000_000


@given(layouts, st.data())
@settings(max_examples=200, deadline=None)
def test_compose_parse_roundtrip(lay: IdLayout, data: st.DataObject) -> None:
    shard = data.draw(st.integers(0, lay.max_shard))
    host = data.draw(st.integers(0, lay.max_host))
    counter = data.draw(st.integers(0, lay.counter_capacity - 1))
    i = lay.compose(shard, host, counter)
    assert 0 <= i <= lay.max_id
    assert lay.parse(i) == (shard, host, counter)
    assert parse(i, lay) == (shard, host, counter)
    pos = lay.position_of(i)
    assert lay.id_of_position(pos, host) == i


@given(layouts, st.data())
@settings(max_examples=200, deadline=None)
def test_later_shards_sort_after_earlier_ones_whatever_host_and_counter(lay: IdLayout, data: st.DataObject) -> None:
    s1 = data.draw(st.integers(0, lay.max_shard - 1)) if lay.max_shard > 0 else 0
    s2 = data.draw(st.integers(s1 + 1, lay.max_shard)) if lay.max_shard > s1 else s1
    if s1 == s2:
        return
    a = lay.compose(s1, lay.max_host, lay.counter_capacity - 1)
    b = lay.compose(s2, 0, 0)
    assert a < b
    assert to_text(a) < to_text(b)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
@settings(max_examples=300, deadline=None)
def test_text_roundtrip_and_order(a: int, b: int) -> None:
    ta, tb = to_text(a), to_text(b)
    assert len(ta) == len(tb) == 13
    assert from_text(ta) == a
    assert from_text(ta.lower()) == a
    assert (ta < tb) == (a < b)


def test_text_forgives_ambiguous_characters_and_hyphens() -> None:
    t = to_text(123456789)
    assert from_text(t.replace("1", "I").replace("0", "O")) == 123456789
    assert from_text(t[:5] + "-" + t[5:]) == 123456789


@pytest.mark.parametrize("bad", ["", "U0000", "0" * 14, "G000000000000", "ab!"])
def test_text_rejects_invalid(bad: str) -> None:
    with pytest.raises(InvalidValueError, match="text"):
        from_text(bad)


def test_text_type_errors() -> None:
    with pytest.raises(InvalidTypeError, match="text"):
        from_text(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="id"):
        to_text(-1)
    with pytest.raises(InvalidValueError, match="id"):
        to_text(2**64)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"time_bits": 0}, "time_bits"),
        ({"host_bits": 0}, "host_bits"),
        ({"counter_bits": 0}, "counter_bits"),
        ({"time_bits": 40, "host_bits": 12, "counter_bits": 13}, "at most 64"),
        ({"shard_seconds": 0}, "shard_seconds"),
        ({"shard_seconds": 100_000}, "shard_seconds"),
        ({"shard_seconds": float("nan")}, "shard_seconds"),
        ({"epoch": -1}, "epoch"),
    ],
)
def test_invalid_layouts_are_rejected(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidValueError, match=field):
        IdLayout(**kwargs)


def test_bool_and_float_widths_are_type_errors() -> None:
    with pytest.raises(InvalidTypeError, match="host_bits"):
        IdLayout(host_bits=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="counter_bits"):
        IdLayout(counter_bits=3.0)  # type: ignore[arg-type]


def test_out_of_range_fields_name_the_field() -> None:
    lay = IdLayout(20, 4, 8)
    with pytest.raises(InvalidValueError, match=r"host_id must be in \[0, 15\]"):
        lay.compose(0, 16, 0)
    with pytest.raises(InvalidValueError, match="counter"):
        lay.compose(0, 0, 256)
    with pytest.raises(InvalidValueError, match="shard"):
        lay.compose(2**20, 0, 0)
    with pytest.raises(InvalidValueError, match="id"):
        lay.parse(2**32)


def test_64_bit_layout_keeps_the_last_shard_free_so_block_ends_fit() -> None:
    lay = IdLayout(32, 12, 20)
    assert lay.total_bits == 64
    assert lay.max_shard == 2**32 - 2
    last = lay.compose(lay.max_shard, lay.max_host, lay.counter_capacity - 1)
    assert last + 1 < 2**64


def test_time_shards() -> None:
    lay = IdLayout(shard_seconds=60.0, epoch=1_000_000.0)
    assert lay.shard_of(1_000_000.0) == 0
    assert lay.shard_of(1_000_059.9) == 0
    assert lay.shard_of(1_000_060.0) == 1
    assert lay.shard_start(3) == 1_000_180.0
    assert lay.time_of(lay.compose(3, 1, 5)) == 1_000_180.0
    with pytest.raises(InvalidValueError, match="unix_time"):
        lay.shard_of(999_999.0)
