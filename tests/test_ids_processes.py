"""Fault injection across processes: forked generators sharing a host id, SIGKILL + restart."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.managers import BaseManager
from pathlib import Path

import numpy as np
import pytest

from fastshard.backends.memory import MemoryBackend
from fastshard.ids import Coordinator, IdGenerator, parse
from fastshard.testing.faults import OutageBackend

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork and SIGKILL are POSIX")


class _Manager(BaseManager):
    pass


_Manager.register("MemoryBackend", MemoryBackend)


def ProxiedBackend(proxy) -> OutageBackend:  # noqa: N802 - reads like the class it stands for
    """A MemoryBackend living in a manager process, shared by every process that uses it."""
    return OutageBackend(proxy, capabilities=frozenset({"kv", "counters", "leases"}))


def _generate(gen: IdGenerator, n_threads: int, per_thread: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n_threads)]

    def work(seq: list[int]) -> None:
        for j in range(per_thread // 10):
            if j % 3 == 0:
                seq.extend(gen.next_ids(10).tolist())
            else:
                seq.extend(gen.next_id() for _ in range(10))

    threads = [threading.Thread(target=work, args=(out[i],)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _child(gen: IdGenerator, path: str) -> None:
    seqs = _generate(gen, 2, 3000)
    np.save(path, np.array([x for s in seqs for x in s], dtype=np.uint64))
    for s in seqs:  # each thread's IDs increase, also in the child
        if s != sorted(s):
            os._exit(3)


def test_forked_processes_sharing_a_host_id_draw_disjoint_blocks(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    with _Manager(ctx=ctx) as manager:
        backend = ProxiedBackend(manager.MemoryBackend())
        gen = IdGenerator(7, coordinator=Coordinator(backend), min_block=64, max_block=256)
        first = gen.next_ids(100).tolist()
        children = [ctx.Process(target=_child, args=(gen, str(tmp_path / f"c{i}.npy"))) for i in range(3)]
        for p in children:
            p.start()
        parent_seqs = _generate(gen, 2, 3000)
        for p in children:
            p.join(timeout=30)
            assert p.exitcode == 0
        everything = first + [x for s in parent_seqs for x in s]
        for i in range(3):
            everything += np.load(tmp_path / f"c{i}.npy").tolist()
        assert len(everything) == 100 + 4 * 6000  # parent + 3 children, 2 threads each
        assert len(set(everything)) == len(everything), "duplicate IDs across processes"
        assert {parse(x)[1] for x in everything} == {7}
        for s in parent_seqs:
            assert s == sorted(s)
        gen.close()


_WRITER = """
import os, sys
from fastshard.ids import IdGenerator
gen = IdGenerator(1, state_path=sys.argv[1], min_block=500, max_block=2000)
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
limit = int(sys.argv[3])
n = 0
while limit == 0 or n < limit:
    os.write(fd, gen.next_ids(50).tobytes())
    n += 50
"""


def _read_ids(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    return np.frombuffer(raw[: len(raw) - len(raw) % 8], dtype=np.uint64)


def test_sigkilled_mid_block_and_restarted_never_reissues(tmp_path: Path) -> None:
    state = tmp_path / "ids-state.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    runs: list[np.ndarray] = []
    for i in range(3):
        out = tmp_path / f"run{i}.bin"
        limit = 20_000 if i == 2 else 0  # the last run ends normally
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(state), str(out), str(limit)], env=env)
        if i < 2:
            deadline = time.monotonic() + 20
            while (not out.exists() or out.stat().st_size < 80_000) and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)  # mid-block: blocks are 500-2000 IDs
        assert proc.wait(timeout=30) in (0, -signal.SIGKILL)
        runs.append(_read_ids(out))
    assert all(len(r) >= 10_000 for r in runs)
    everything = np.concatenate(runs)
    assert np.unique(everything).size == everything.size, "an ID was reissued after SIGKILL"
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.min() > earlier.max()  # restarts continue above everything issued
    assert (np.diff(everything.astype(np.int64)) > 0).all()
