"""The compiled block cursor (fastshard._idgen.IdCore) against a plain-Python twin."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastshard._idgen import ATOMICS, IdCore
from fastshard.errors import IdExhaustedError, InvalidTypeError, InvalidValueError


class OutOfBlocks(Exception):
    pass


class ScriptedCore(IdCore):
    """IdCore whose refills come from a list of blocks (then OutOfBlocks)."""

    def __init__(self, blocks: list[tuple[int, int]]) -> None:
        self.blocks = list(blocks)
        self.refills = 0

    def _refill(self, n: int) -> None:
        self.refills += 1
        if not self.blocks:
            raise OutOfBlocks
        self.install(*self.blocks.pop(0))


class CoreTwin:
    """What IdCore does, single-threaded, in plain Python."""

    def __init__(self, blocks: list[tuple[int, int]]) -> None:
        self.blocks = list(blocks)
        self.cursor = self.start = self.end = 0

    def _refill(self) -> None:
        if not self.blocks:
            raise OutOfBlocks
        s, e = self.blocks.pop(0)
        self.start, self.cursor, self.end = s, max(self.cursor, s), e

    def next_id(self) -> int:
        while True:
            if self.start <= self.cursor < self.end:
                self.cursor += 1
                return self.cursor - 1
            self._refill()

    def next_ids(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            c = self.cursor
            if self.start <= c < self.end:
                k = min(n - len(out), self.end - c)
                out.extend(range(c, c + k))
                self.cursor = c + k
            else:
                self._refill()
        return out

    def invalidate(self) -> None:
        self.end = 0


@st.composite
def increasing_blocks(draw: st.DrawFn) -> list[tuple[int, int]]:
    pos = draw(st.integers(0, 2**62))
    blocks = []
    for _ in range(draw(st.integers(1, 8))):
        pos += draw(st.integers(0, 50))  # gaps (another host's range) or contiguous blocks
        size = draw(st.integers(1, 40))
        blocks.append((pos, pos + size))
        pos += size
    return blocks


ops = st.lists(
    st.one_of(
        st.tuples(st.just("one"), st.just(1)),
        st.tuples(st.just("many"), st.integers(0, 70)),
        st.tuples(st.just("invalidate"), st.just(0)),
    ),
    max_size=40,
)


@given(increasing_blocks(), ops)
@settings(max_examples=300, deadline=None)
def test_core_matches_python_twin(blocks: list[tuple[int, int]], script: list[tuple[str, int]]) -> None:
    core, twin = ScriptedCore(blocks), CoreTwin(blocks)
    for op, n in script:
        if op == "invalidate":
            core.invalidate()
            twin.invalidate()
            continue
        try:
            want = [twin.next_id()] if op == "one" else twin.next_ids(n)
        except OutOfBlocks:
            with pytest.raises(OutOfBlocks):
                core.next_id() if op == "one" else core.next_ids(n)
            return
        if op == "one":
            assert core.next_id() == want[0]
        else:
            got = core.next_ids(n)
            assert got.dtype == np.uint64
            assert got.tolist() == want


def test_contiguous_blocks_give_gapless_ids() -> None:
    core = ScriptedCore([(10, 13), (13, 16), (16, 20)])
    assert [core.next_id() for _ in range(10)] == list(range(10, 20))


def test_install_rejects_empty_and_decreasing_blocks() -> None:
    core = IdCore()
    with pytest.raises(InvalidValueError, match="end must be > start"):
        core.install(5, 5)
    core.install(100, 200)
    with pytest.raises(InvalidValueError, match="increasing order"):
        core.install(50, 60)
    assert core.next_id() == 100  # the failed install changed nothing


def test_plain_core_without_source_raises_clearly() -> None:
    with pytest.raises(IdExhaustedError, match="no block source"):
        IdCore().next_id()


def test_next_ids_validates_n() -> None:
    core = ScriptedCore([(0, 10)])
    with pytest.raises(InvalidTypeError, match="n must be an int"):
        core.next_ids(2.0)
    with pytest.raises(InvalidValueError, match=r"n must be in \[0, "):
        core.next_ids(-1)
    assert core.next_ids(0).shape == (0,)
    assert core.next_ids(np.int64(3)).tolist() == [0, 1, 2]


def test_snapshot_and_remaining() -> None:
    core = ScriptedCore([])
    core.install(1000, 1010)
    core.next_ids(4)
    assert core.snapshot() == (1004, 1000, 1010)
    assert core.remaining() == 6
    core.invalidate()
    assert core.remaining() == 0
    assert ATOMICS in {"c11-stdatomic", "gcc-builtins", "msvc-interlocked"}


def test_many_threads_never_get_the_same_id() -> None:
    """Tiny blocks force constant installs while 8 threads claim singles and batches."""
    lock = threading.Lock()

    class Source(IdCore):
        def __init__(self) -> None:
            self.next_start = 0

        def _refill(self, n: int) -> None:
            with lock:
                if self.remaining() > 0:
                    return
                s = self.next_start + 3  # leave gaps: values there belong to someone else
                self.install(s, s + 17)
                self.next_start = s + 17

    core = Source()
    results: list[list[int]] = [[] for _ in range(8)]

    def work(i: int) -> None:
        out = results[i]
        for j in range(3000):
            if j % 7 == 0:
                out.extend(core.next_ids(5).tolist())
            else:
                out.append(core.next_id())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [x for r in results for x in r]
    assert len(everything) == len(set(everything))
    for r in results:
        assert r == sorted(r)  # each thread sees increasing IDs
    # nothing was taken from the gaps between blocks
    assert all((x % 20) >= 3 for x in everything)
