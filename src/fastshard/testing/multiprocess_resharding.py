"""The resharding check across processes: producers, consumers and a manager that share one
shard map and its drain fences only through a server backend (Redis, PostgreSQL, ...).

``check_multiprocess_resharding(backend_name, options)`` (called from the test process, which
acts as the manager) starts producer processes and consumer processes with
``python -m fastshard.testing.multiprocess_resharding <role> <config.json>``; each opens its
own backend connection, its own :class:`~fastshard.sharding.Router` with a
``ShardMapStore`` and a :class:`~fastshard.sharding.fence_store.FenceStore`. The manager
applies random plans (through :class:`~fastshard.sharding.fence_store.FencedMapStore`) while
they publish, then checks the logs: every published message processed, and each key's
messages processed in publish order, by whichever consumer process held them.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastshard import backends
from fastshard.errors import FastshardError
from fastshard.sharding.fence_store import FencedMapStore, FenceStore
from fastshard.sharding.manager import ShardManager
from fastshard.sharding.plan import Reassign
from fastshard.sharding.router import Router
from fastshard.shardmap import ShardMap
from fastshard.shardmap_store import ShardMapStore
from fastshard.testing.resharding import random_plan

GROUP = "fsmp"
PREFIX = "fsmp"


@dataclass
class MultiProcessReport:
    published: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: list[str] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    plans_applied: int = 0
    fences_released: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.order_violations and self.delivered == self.published


def _open(cfg: dict[str, Any]) -> tuple[Any, ShardMapStore, FenceStore]:
    backend = backends.get(cfg["backend"], **cfg["options"])
    return backend, ShardMapStore(backend, cfg["map"]), FenceStore(backend, cfg["map"], lease_ttl=cfg["lease_ttl"])


def run_producer(cfg: dict[str, Any]) -> None:
    backend, store, fences = _open(cfg)
    m = store.load()
    router = Router(m, backend, queue_prefix=PREFIX, store=store, fence_store=fences,
                    producer_id=cfg["id"], create_queues=False)
    rng = random.Random(cfg["seed"])
    keys = cfg["keys"]
    next_n = dict.fromkeys(keys, 0)
    out = Path(cfg["dir"]) / f"pub-{cfg['id']}.txt"
    with out.open("w") as f:
        for i in range(cfg["messages"]):
            if i % 8 == 0:
                router.sync()  # follow the manager's epochs
            k = rng.choice(keys)
            uid = f"{k}:{next_n[k]}"
            next_n[k] += 1
            router.publish(k, uid)
            f.write(uid + "\n")
            f.flush()
            time.sleep(0.004 if rng.random() < 0.8 else 0.02)  # ~3 s of publishing: rounds land mid-stream
        f.write("DONE\n")
    backend.close()


def run_consumer(cfg: dict[str, Any]) -> None:
    rounds_done = Path(cfg["dir"]) / "rounds-done"
    while cfg["late"] and not rounds_done.exists():
        time.sleep(0.01)  # a consumer process started only after every resharding round
    backend, store, fences = _open(cfg)
    router = Router(store.load(), backend, queue_prefix=PREFIX, store=store, fence_store=fences,
                    create_queues=False)
    stop = Path(cfg["dir"]) / "stop"
    consumers: dict[str, Any] = {}
    rng = random.Random(cfg["seed"])
    last_sync = 0.0
    with (Path(cfg["dir"]) / f"con-{cfg['index']}.txt").open("w") as log:
        while not stop.exists():
            if time.monotonic() - last_sync > 0.02:
                router.sync()
                last_sync = time.monotonic()
            got = 0
            for q in router.live_queues():
                if zlib.crc32(q.encode()) % cfg["count"] != cfg["index"]:
                    continue
                c = consumers.get(q) or consumers.setdefault(q, router.consumer(q, GROUP, f"c{cfg['index']}"))
                try:
                    msgs = c.poll(max_messages=20)
                except FastshardError:
                    continue  # a retired queue deleted after draining
                for msg in msgs:
                    log.write(f"{time.monotonic_ns()} {msg.value.decode()}\n")
                log.flush()
                if msgs and rng.random() < 0.2:
                    time.sleep(0.002)  # lag behind, so moved ranges have a backlog to fence
                c.ack(msgs)
                got += len(msgs)
            if not got:
                time.sleep(0.003)
    backend.close()


def _spawn(role: str, cfg: dict[str, Any], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(cfg))
    err = (workdir / f"{name}.err").open("wb")
    return subprocess.Popen([sys.executable, "-m", "fastshard.testing.multiprocess_resharding", role, str(path)],
                            stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def check_multiprocess_resharding(
    backend_name: str, options: dict[str, Any], workdir: Path, *, producers: int = 3, consumers: int = 2,
    messages: int = 300, keys: int = 24, rounds: int = 6, seed: int = 0, timeout: float = 90.0,
    late_consumers: bool = False,
) -> MultiProcessReport:
    """Run the check (this process is the manager); raises AssertionError on loss or reorder.

    The rounds start once every producer has begun publishing, and producers pace
    themselves, so plans land while messages flow. With ``late_consumers`` the consumer
    processes start only after the last round: they must find the retired queues and the
    open fences of epochs they never routed under."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    token = uuid.uuid4().hex[:8]
    name = f"mp{token}"
    nodes = ["n0", "n1", "n2"]
    backend = backends.get(backend_name, **options)
    store = ShardMapStore(backend, name)
    fences = FenceStore(backend, name, lease_ttl=5.0)
    m = ShardMap(4, nodes[:2], name=name)
    assert store.publish(m, 0)
    router = Router(m, backend, queue_prefix=PREFIX, store=store, fence_store=fences)
    manager = ShardManager(m, 1.0, router=router, store=FencedMapStore(store, fences))
    key_names = [f"k{i}-{token}" for i in range(keys)]
    base = {"backend": backend_name, "options": options, "map": name, "dir": str(workdir), "lease_ttl": 5.0}
    procs = [_spawn("consumer", {**base, "index": c, "count": consumers, "seed": seed + c,
                                      "late": late_consumers}, workdir, f"c{c}")
             for c in range(consumers)]
    procs += [_spawn("producer", {**base, "id": f"p{p}", "keys": key_names[p::producers],
                                  "messages": messages, "seed": seed * 100 + p}, workdir, f"p{p}")
              for p in range(producers)]
    report = MultiProcessReport()
    names = itertools.count(1)
    try:
        _wait_started(workdir, producers, procs, t0 + timeout)
        for _ in range(rounds):
            time.sleep(rng.uniform(0.05, 0.3))
            plan = random_plan(m, rng, nodes, names, key_names)
            for a in plan.actions:  # queues exist before any producer can route to them
                if isinstance(a, Reassign):
                    backend.create_queue(router.queue_of(a.to_shard))
            try:
                manager.apply(plan)
                report.plans_applied += 1
            except FastshardError:
                pass  # e.g. a merge of shards that are no longer neighbours
            manager.collect_retired(GROUP)
        (workdir / "rounds-done").write_text("done")
        published = _wait_published(workdir, producers, procs, t0 + timeout)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if {u for _, u in _processed(workdir, consumers)} >= published:
                break
            manager.collect_retired(GROUP)
            time.sleep(0.1)
    finally:
        (workdir / "stop").write_text("stop")
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode]
    if failed:
        errs = "\n".join(f.read_text()[-2000:] for f in workdir.glob("*.err"))
        raise AssertionError(f"child processes failed: {failed}\n{errs}")
    report.published = len(published)
    seen: set[str] = set()
    last: dict[str, int] = {}
    for _, uid in sorted(_processed(workdir, consumers)):
        if uid in seen:
            report.duplicates += 1
            continue
        seen.add(uid)
        k, _, n = uid.rpartition(":")
        if int(n) <= last.get(k, -1):
            report.order_violations.append(f"key {k}: {n} processed after {last[k]}")
        last[k] = max(last.get(k, -1), int(n))
    report.delivered = len(seen)
    report.lost = sorted(published - seen)
    report.fences_released = router.fences.released
    report.seconds = time.monotonic() - t0
    backend.close()
    if not report.ok:
        raise AssertionError(
            f"multi-process resharding failed on {backend_name}: {len(report.lost)} lost "
            f"(first {report.lost[:5]}), order violations {report.order_violations[:5]}, "
            f"{report.delivered}/{report.published} delivered")
    return report


def _wait_started(workdir: Path, producers: int, procs: list[subprocess.Popen[bytes]], deadline: float) -> None:
    files = [workdir / f"pub-p{p}.txt" for p in range(producers)]
    while time.monotonic() < deadline:
        if all(f.exists() and f.stat().st_size > 0 for f in files):
            return
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.01)
    raise AssertionError("producer processes did not start publishing: " + " ".join(
        f.read_text()[-1500:] for f in workdir.glob("p*.err")))


def _wait_published(workdir: Path, producers: int, procs: list[subprocess.Popen[bytes]], deadline: float) -> set[str]:
    while time.monotonic() < deadline:
        files = [workdir / f"pub-p{p}.txt" for p in range(producers)]
        if all(f.exists() and f.read_text().endswith("DONE\n") for f in files):
            return {u for f in files for u in f.read_text().split() if u != "DONE"}
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.05)
    raise AssertionError("producer processes did not finish: " + " ".join(
        f.read_text()[-1500:] for f in workdir.glob("p*.err")))


def _processed(workdir: Path, consumers: int) -> list[tuple[int, str]]:
    out = []
    for c in range(consumers):
        f = workdir / f"con-{c}.txt"
        if f.exists():
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2:
                    out.append((int(parts[0]), parts[1]))
    return out


if __name__ == "__main__":
    role, cfg_path = sys.argv[1], sys.argv[2]
    config = json.loads(Path(cfg_path).read_text())
    {"producer": run_producer, "consumer": run_consumer}[role](config)
