"""ShardMap: compiled lookup vs a plain-Python twin, mutations, epochs, diffs, serialisation."""

from __future__ import annotations

import bisect
import json
import threading

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastshard._shardmap import ShardMapCore, SliceTable
from fastshard.errors import (
    DuplicateNodeError,
    InvalidTypeError,
    InvalidValueError,
    StaleEpochError,
    UnknownNodeError,
)
from fastshard.shardmap import HASH_SPACE, ShardMap, ShardMaps, Slice, SliceChange

U64 = st.integers(0, HASH_SPACE - 1)


# ---------------------------------------------------------------- plain-Python twins
def twin_hash(key: str | bytes | int) -> int:
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif isinstance(key, int):
        key = (key % HASH_SPACE).to_bytes(8, "little")
    return xxhash.xxh3_64_intdigest(key)


def twin_slice(starts: list[int], h: int) -> int:
    return bisect.bisect_right(starts, h) - 1


def owner_at(slices: list[Slice], placement: dict[str, str], h: int) -> tuple[str, str]:
    i = bisect.bisect_right([s.start for s in slices], h) - 1
    return slices[i].shard, placement[slices[i].shard]


def brute_force_diff(old: ShardMap, new: ShardMap) -> list[tuple]:
    """Maximal ranges whose (shard, node) differ between two maps' slice tables."""
    os_, ns = old.slices, new.slices
    op, np_ = old.placement(), new.placement()
    bounds = sorted({s.start for s in os_} | {s.start for s in ns})
    out: list[tuple] = []
    for k, s in enumerate(bounds):
        e = bounds[k + 1] if k + 1 < len(bounds) else HASH_SPACE
        (a, an), (b, bn) = owner_at(os_, op, s), owner_at(ns, np_, s)
        if (a, an) == (b, bn):
            continue
        if out and out[-1][1] == s and out[-1][2:] == (a, b, an, bn):
            out[-1] = (out[-1][0], e, a, b, an, bn)
        else:
            out.append((s, e, a, b, an, bn))
    return out


def normalised(changes: list[SliceChange]) -> list[tuple]:
    out: list[tuple] = []
    for c in changes:
        t = (c.start, c.end, c.old_shard, c.new_shard, c.old_node, c.new_node)
        if out and out[-1][1] == c.start and out[-1][2:] == t[2:]:
            out[-1] = (out[-1][0], c.end, *t[2:])
        else:
            out.append(t)
    return out


def assert_partition(m: ShardMap) -> None:
    sl = m.slices
    assert sl[0].start == 0 and sl[-1].end == HASH_SPACE
    for a, b in zip(sl, sl[1:], strict=False):
        assert a.end == b.start and a.start < a.end and a.shard != b.shard
    assert set(m.shards) == {s.shard for s in sl}
    assert all(m.node_of(s) in m.nodes for s in m.shards)


# ---------------------------------------------------------------- the compiled table
@st.composite
def slice_tables(draw):
    spread = draw(st.lists(U64, max_size=300))
    # clustered starts put many slices in one radix bucket, exercising the in-bucket search
    base = draw(U64)
    cluster = [min(base + d, HASH_SPACE - 1) for d in draw(st.lists(st.integers(0, 5000), max_size=100))]
    starts = sorted(set([0] + spread + cluster))
    nshards = draw(st.integers(1, 40))
    owners = draw(st.lists(st.integers(0, nshards - 1), min_size=len(starts), max_size=len(starts)))
    return starts, owners, tuple(f"x{i}" for i in range(nshards))


@settings(max_examples=200, deadline=None)
@given(slice_tables(), st.lists(U64, max_size=200), st.lists(st.text(max_size=20), max_size=50))
def test_compiled_lookup_equals_bisect_twin(table, hashes, keys):
    starts, owners, names = table
    core = ShardMapCore()
    core._install_table(SliceTable(starts, owners, names, 7))
    probes = hashes + [0, HASH_SPACE - 1] + [s for s in starts] + [max(s - 1, 0) for s in starts]
    for h in probes:
        i = twin_slice(starts, h)
        assert core.slice_for_hash(h) == i
        assert core.shard_for_hash(h) == names[owners[i]]
    arr = np.array(probes, dtype=np.uint64)
    assert core.slices_for_many(arr).tolist() == [twin_slice(starts, h) for h in probes]
    assert core.shards_for_many(arr).tolist() == [owners[twin_slice(starts, h)] for h in probes]
    mixed = keys + [k.encode() for k in keys] + [len(k) - 3 for k in keys]
    expect = [owners[twin_slice(starts, twin_hash(k))] for k in mixed]
    assert core.shards_for_many(mixed).tolist() == expect
    assert [core.shard_for(k) for k in mixed] == [names[i] for i in expect]
    assert core.epoch == 7


def test_slice_table_rejects_bad_tables():
    with pytest.raises(InvalidValueError, match="starts\\[0\\] must be 0"):
        SliceTable([1, 5], [0, 0], ("a",))
    with pytest.raises(InvalidValueError, match="strictly increasing"):
        SliceTable([0, 5, 5], [0, 0, 0], ("a",))
    with pytest.raises(InvalidValueError, match="slice_shard\\[1\\] must be in \\[0, 0\\]"):
        SliceTable([0, 5], [0, 1], ("a",))
    with pytest.raises(InvalidValueError, match="one entry per slice"):
        SliceTable([0, 5], [0], ("a",))


def test_lookup_input_errors():
    m = ShardMap(4)
    with pytest.raises(InvalidTypeError, match="key must be str, bytes or int"):
        m.shard_for(1.5)
    with pytest.raises(InvalidValueError, match="h must be in \\[0, 2\\*\\*64\\)"):
        m.shard_for_hash(-1)
    with pytest.raises(InvalidValueError, match="h must be in"):
        m.shard_for_hash(HASH_SPACE)
    with pytest.raises(InvalidTypeError, match="dtype uint64"):
        m.shards_for_many(np.zeros(3, dtype=np.int64))
    with pytest.raises(InvalidTypeError, match="keys\\[1\\] must be str, bytes or int"):
        m.shards_for_many(["a", None])
    with pytest.raises(InvalidTypeError, match="numpy uint64 array"):
        m.slices_for_many([1, 2])
    with pytest.raises(InvalidValueError, match="int key must be in"):
        m.shards_for_many(["ok", 2**64])
    with pytest.raises(InvalidValueError, match="int key must be in"):
        m.shard_for(-(2**63) - 1)
    assert m.shards_for_many([]).shape == (0,)
    assert m.shards_for_many(("a", b"a")).tolist() == [m.shards.index(m.shard_for("a"))] * 2


# ---------------------------------------------------------------- construction and reading
def test_equal_slices_round_robin_on_nodes():
    m = ShardMap(4, ["a", "b"], name="orders")
    assert m.name == "orders" and m.epoch == 1
    assert m.shards == ["s0", "s1", "s2", "s3"]
    assert [s.start for s in m.slices] == [i * 2**62 for i in range(4)]
    assert [m.node_of(s) for s in m.shards] == ["a", "b", "a", "b"]
    assert m.slices_of("s2") == [Slice(2**63, 3 * 2**62, "s2")]
    key = "user-42"
    assert m.shard_for(key) == m.shards[twin_hash(key) >> 62]
    assert m.shard_and_epoch_for(key) == (m.shard_for(key), 1)


def test_named_shards_and_constructor_errors():
    assert ShardMap(["x", "y"]).shards == ["x", "y"]
    with pytest.raises(DuplicateNodeError):
        ShardMap(["x", "x"])
    with pytest.raises(DuplicateNodeError):
        ShardMap(2, ["a", "a"])
    with pytest.raises(InvalidValueError, match="shards must be in \\[1, 1048576\\]"):
        ShardMap(0)
    with pytest.raises(InvalidValueError, match="nodes must name at least 1"):
        ShardMap(2, [])
    with pytest.raises(InvalidValueError, match="shards\\[0\\] must be 1-200 characters"):
        ShardMap(["bad id"])
    with pytest.raises(InvalidTypeError):
        ShardMap(2.0)


def test_balance_of_equal_slices():
    m = ShardMap(8)
    counts = np.bincount(m.shards_for_many([f"key-{i}" for i in range(80_000)]), minlength=8)
    assert counts.max() / counts.mean() < 1.05


# ---------------------------------------------------------------- mutations
def test_split_default_is_midpoint_then_load_median():
    m = ShardMap(2)
    new = m.split("s0")
    assert new == "s2" and m.epoch == 2
    assert m.slices_of("s2") == [Slice(2**62, 2**63, "s2")]
    # load concentrated in the upper part of s1: the cut follows the weighted median
    m.record_load(np.arange(30 * 2**59, 30 * 2**59 + 1000, dtype=np.uint64))
    hot = m.split("s1", new_shard="hot")
    cut = m.slices_of("hot")[0].start
    assert 30 * 2**59 + 400 <= cut <= 30 * 2**59 + 600
    assert m.node_of(hot) == m.node_of("s1")


def test_split_picks_most_loaded_slice_of_a_shard():
    m = ShardMap(["a", "b"])
    m.assign_range(2**61, 2**62, "b")  # a now has slices [0, 2**61) and [2**62, 2**63)
    m.record_load(np.full(10, 2**62 + 7, dtype=np.uint64))
    m.split("a", new_shard="c")
    assert m.slices_of("c")[0].start == 2**62 + 8 or m.slices_of("c")[0].start == 2**62 + 7


def test_split_explicit_at_and_errors():
    m = ShardMap(2, ["n0"])
    m.split(0, at=100, new_shard="t", node="n1")
    assert m.slices[1] == Slice(100, 2**63, "t") and m.node_of("t") == "n1"
    assert m.nodes == ["n0", "n1"]
    before = m.to_dict()
    for bad, exc in [
        (lambda: m.split(0, at=0), InvalidValueError),  # at == start of slice
        (lambda: m.split(0, at=100), InvalidValueError),
        (lambda: m.split("s1", at=5), InvalidValueError),  # not in a slice of s1
        (lambda: m.split("nope"), UnknownNodeError),
        (lambda: m.split(9), InvalidValueError),
        (lambda: m.split(0, new_shard="t"), DuplicateNodeError),
        (lambda: m.split(True), InvalidTypeError),
        (lambda: m.split(0, at=1.5), InvalidTypeError),
    ]:
        with pytest.raises(exc):
            bad()
        assert m.to_dict() == before
    m.assign_range(7, 8, "one")
    with pytest.raises(InvalidValueError, match="one hash wide"):
        m.split("one")


def test_merge_needs_neighbours_and_coalesces():
    m = ShardMap(4, ["a", "b"])
    before = m.to_dict()
    with pytest.raises(InvalidValueError, match="neighbours"):
        m.merge("s0", "s2")
    with pytest.raises(InvalidValueError, match="different"):
        m.merge("s0", "s0")
    with pytest.raises(UnknownNodeError):
        m.merge("s0", "zz")
    assert m.to_dict() == before
    assert m.merge("s1", "s0") == "s1"
    assert m.slices[0] == Slice(0, 2**63, "s1") and "s0" not in m.shards
    assert m.diff(1) == [SliceChange(0, 2**62, "s0", "s1", "a", "b", 2)]


def test_move_add_remove_node():
    m = ShardMap(2, ["a", "b"])
    m.move("s0", "c")
    assert m.node_of("s0") == "c" and m.nodes == ["a", "b", "c"]
    with pytest.raises(InvalidValueError, match="holds \\['s1'\\]"):
        m.remove_node("b")
    m.remove_node("a")
    assert m.nodes == ["b", "c"]
    with pytest.raises(UnknownNodeError):
        m.remove_node("a")
    with pytest.raises(DuplicateNodeError):
        m.add_node("b")
    m.add_node("d")
    assert m.epoch == 4 and m.nodes == ["b", "c", "d"]
    with pytest.raises(UnknownNodeError):
        m.move("zz", "d")


def _paint_twin(starts, owners, start, end, shard):
    """Owner of every hash after giving [start, end) to shard, as a coalesced slice list."""
    bounds = sorted(set(starts) | {start} | ({end} if end < HASH_SPACE else set()))
    out_s, out_o = [], []
    for b in bounds:
        o = shard if start <= b < end else owners[bisect.bisect_right(starts, b) - 1]
        if not out_o or out_o[-1] != o:
            out_s.append(b)
            out_o.append(o)
    return out_s, out_o


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_assign_range_paints_only_the_range(data):
    """Many ranges painted one after another (as a plan of many moves is applied) give the
    same slices as repainting every hash from scratch."""
    m = ShardMap(data.draw(st.integers(1, 6)), ["a", "b"])
    starts = [s.start for s in m.slices]
    owners = [s.shard for s in m.slices]
    for _ in range(data.draw(st.integers(1, 12))):
        lo = data.draw(st.one_of(U64, st.sampled_from(starts)))
        hi = data.draw(st.one_of(st.integers(lo + 1, min(lo + 5000, HASH_SPACE)),
                                 st.integers(lo + 1, HASH_SPACE)))
        shard = data.draw(st.sampled_from(sorted(set(owners)) + ["fresh-1", "fresh-2"]))
        m.assign_range(lo, hi, shard, node="a" if shard.startswith("fresh") and shard not in owners else None)
        starts, owners = _paint_twin(starts, owners, lo, hi, shard)
        assert [(s.start, s.shard) for s in m.slices] == list(zip(starts, owners, strict=True))


def test_assign_range_isolates_a_hot_key_and_retires_empty_shards():
    m = ShardMap(2, ["a", "b"])
    h = twin_hash("celebrity")
    m.assign_range(h, h + 1, "hot-1", node="z")
    assert m.shard_for("celebrity") == "hot-1" and m.node_of("hot-1") == "z"
    assert m.shard_for_hash(h + 1) == m.shard_for_hash(h - 1) if h else True
    m.assign_range(0, HASH_SPACE, "all")
    assert m.shards == ["all"] and len(m.slices) == 1
    with pytest.raises(InvalidValueError, match="start must be < end"):
        m.assign_range(5, 5, "all")
    with pytest.raises(InvalidValueError, match="end must be in"):
        m.assign_range(0, HASH_SPACE + 1, "all")
    with pytest.raises(InvalidValueError, match="use move"):
        m.assign_range(0, 10, "all", node="elsewhere")


def test_batch_commits_one_epoch_or_none():
    m = ShardMap(2)
    seen_in_other_thread = []
    with m.batch():
        a = m.split("s0")
        m.merge("s0", a)  # sees its own pending shard
        m.move("s1", "n9")
        t = threading.Thread(target=lambda: seen_in_other_thread.append(m.nodes))
        t.start()
        t.join()
        assert m.epoch == 1 and m.node_of("s1") == "n9"
    assert seen_in_other_thread == [["node-0"]]
    assert m.epoch == 2 and m.node_of("s1") == "n9"
    before = m.to_dict()
    with pytest.raises(RuntimeError):
        with m.batch():
            m.split("s0")
            raise RuntimeError("boom")
    assert m.to_dict() == before and m.epoch == 2


def test_diff_history_bounds():
    m = ShardMap(2, history_limit=1000)
    with pytest.raises(InvalidValueError, match="since_epoch must be in \\[0, 1\\]"):
        m.diff(2)
    for i in range(1005):
        m.move("s0", f"n{i % 3}")
    assert m.epoch == 1006
    assert m.diff(1006) == []
    assert len(m.diff(6)) == 1
    with pytest.raises(StaleEpochError):
        m.diff(5)


def test_readers_see_one_consistent_epoch_while_writer_splits():
    m = ShardMap(4)
    keys = [f"k{i}" for i in range(2000)]
    stop = threading.Event()
    errors: list[str] = []

    def reader():
        while not stop.is_set():
            shard, epoch = m.shard_and_epoch_for("k1")
            idx = m.shards_for_many(keys)
            if idx.min() < 0 or shard is None or epoch < 1:
                errors.append("bad lookup")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(200):
        m.split(int(np.argmax([s.end - s.start for s in m.slices])))
    stop.set()
    for t in threads:
        t.join()
    assert not errors and m.epoch == 201


# ---------------------------------------------------------------- random operation sequences
OPS = st.lists(
    st.tuples(
        st.sampled_from(["split", "split_at", "merge", "move", "assign", "add", "remove", "bad"]),
        st.integers(0, 1000),
        st.integers(0, 1000),
        U64,
    ),
    max_size=25,
)


def apply_random(m: ShardMap, op: str, a: int, b: int, h: int) -> None:
    shards, nodes = m.shards, m.nodes
    if op == "split":
        m.split(shards[a % len(shards)])
    elif op == "split_at":
        m.split(shards[a % len(shards)], at=h)
    elif op == "merge":
        m.merge(shards[a % len(shards)], shards[b % len(shards)])
    elif op == "move":
        m.move(shards[a % len(shards)], f"n{b % 5}")
    elif op == "assign":
        end = min(HASH_SPACE, h + 1 + b * 2**52)
        target = shards[a % len(shards)] if a % 2 else f"r{a}"
        m.assign_range(h, end, target)
    elif op == "add":
        m.add_node(f"n{b % 7}")
    elif op == "remove":
        m.remove_node(nodes[b % len(nodes)])
    else:
        m.merge(shards[0], "no-such-shard")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 6), OPS, st.data())
def test_random_operations_keep_partition_epochs_and_diffs(n, ops, data):
    m = ShardMap(n, ["n0", "n1"])
    snapshots = {1: m.copy()}
    for op, a, b, h in ops:
        before, epoch = m.to_dict(), m.epoch
        try:
            apply_random(m, op, a, b, h)
        except (InvalidValueError, InvalidTypeError):
            assert m.to_dict() == before and m.epoch == epoch  # nothing half-applied
            continue
        assert m.epoch == epoch + 1
        assert_partition(m)
        snapshots[m.epoch] = m.copy()
    since = data.draw(st.sampled_from(sorted(snapshots)))
    got = m.diff(since)
    assert normalised(got) == brute_force_diff(snapshots[since], m)
    assert all(since < c.epoch <= m.epoch for c in got)
    # round trip through JSON keeps the map, its epoch and its history
    back = ShardMap.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.to_dict() == m.to_dict() and back.epoch == m.epoch
    assert back.diff(since) == got
    probe = np.array([h for _, _, _, h in ops] + [0, HASH_SPACE - 1], dtype=np.uint64)
    assert (back.shards_for_many(probe) == m.shards_for_many(probe)).all()
    starts = [s.start for s in m.slices]
    for x in probe.tolist():
        assert m.shard_for_hash(x) == m.slices[twin_slice(starts, x)].shard


# ---------------------------------------------------------------- serialisation
def test_to_dict_is_json_safe_and_versioned():
    m = ShardMap(3)
    m.split("s2")
    d = m.to_dict()
    assert d["format"] == 1 and d["epoch"] == 2
    big = [x for x in json.dumps(d).replace("[", " ").replace("]", " ").replace(",", " ").split()
           if x.isdigit()]
    assert all(int(x) <= 2**53 for x in big)
    assert d["slices"][1][0] == str(HASH_SPACE // 3)
    assert ShardMap.from_dict(d).to_dict(history=0)["history"] == []


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(format=2), "format must be 1"),
        (lambda d: d["slices"].__setitem__(0, ["5", "s0"]), "start at 0"),
        (lambda d: d["slices"][1].__setitem__(1, "zz"), "known shard"),
        (lambda d: d.update(epoch="x"), "epoch must be an int"),
        (lambda d: d.pop("nodes"), "not a valid ShardMap"),
        (lambda d: d["history"].pop(), "history must hold epochs"),
    ],
)
def test_from_dict_rejects_corrupt_input(mutate, match):
    m = ShardMap(2)
    m.move("s0", "x")
    d = json.loads(json.dumps(m.to_dict()))
    mutate(d)
    with pytest.raises(InvalidValueError, match=match):
        ShardMap.from_dict(d)


# ---------------------------------------------------------------- several dimensions
def test_shard_maps_keyed_by_service_and_type():
    maps = ShardMaps(shards=4, nodes=["a", "b"], prefix="orders")
    m = maps["billing", "transactional"]
    assert maps["billing", "transactional"] is m and len(maps) == 1
    assert m.name == "orders.billing.transactional" and len(m.shards) == 4
    m.split("s0")
    assert maps["billing", "error"].epoch == 1
    assert sorted(maps) == [("billing", "error"), ("billing", "transactional")]
    assert ("billing", "info") not in maps and len(maps) == 2
    with pytest.raises(InvalidValueError, match="2 dimensions"):
        maps["billing"]
    with pytest.raises(InvalidValueError, match="letters, digits"):
        maps["bill ing", "x"]
