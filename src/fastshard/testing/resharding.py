"""A reusable resharding check: random plans under concurrent publishing, on any backend.

``check_resharding(backend)`` starts producer threads that publish through a
:class:`~fastshard.sharding.Router` (each key owned by one producer, with a per-key
sequence number in the value), consumer threads that drain every live queue through
:class:`~fastshard.sharding.FencedConsumer` (one thread per queue at a time), and applies
random split / isolate / resize / merge / move plans while they run. It then asserts that

* every published message was delivered (none lost),
* after de-duplication by message id nothing was delivered twice,
* each key's messages were processed in the order they were published.

It works with any backend offering ``queues``; the backend conformance suite calls it for
every backend. Queue names carry a random token, so runs on a shared server do not collide.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from fastshard.backends.base import Backend
from fastshard.errors import FastshardError, InvalidValueError, check_int
from fastshard.sharding.manager import ShardManager
from fastshard.sharding.plan import HASH_SPACE, Action, Merge, Move, Plan, Reassign
from fastshard.sharding.router import FencedConsumer, Router, hash_key


@dataclass
class ReshardingReport:
    published: int = 0
    delivered: int = 0  # distinct messages processed
    duplicates: int = 0  # redeliveries dropped by id
    lost: list[str] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    plans_applied: int = 0
    plans_rejected: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    fences_released: int = 0
    queues_deleted: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.order_violations and self.delivered == self.published


def random_plan(shard_map, rng: random.Random, nodes: list[str], name_counter, keys: list[str]) -> Plan:  # noqa: ANN001
    """1-3 random actions on distinct shards of ``shard_map`` (a split, a hot-key isolation,
    a resize, a merge or a move), as one plan against its current epoch."""
    slices = shard_map.slices
    used: set[str] = set()
    actions: list[Action] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["split", "isolate", "resize", "merge", "move"])
        if kind == "split":
            cands = [s for s in slices if s.end - s.start >= 2 and s.shard not in used]
            if not cands:
                continue
            s = rng.choice(cands)
            cut = rng.randint(s.start + 1, s.end - 1)
            new = f"r{next(name_counter)}"
            actions.append(Reassign(cut, s.end, s.shard, new, rng.choice(nodes), "split",
                                    (s.end - cut) / HASH_SPACE, 0.0))
            used |= {s.shard, new}
        elif kind == "isolate":
            h = hash_key(rng.choice(keys))
            owner = next(s for s in slices if s.start <= h < s.end)
            if owner.shard in used or owner.end - owner.start < 2:
                continue
            new = f"r{next(name_counter)}"
            actions.append(Reassign(h, h + 1, owner.shard, new, rng.choice(nodes), "isolate",
                                    1 / HASH_SPACE, 0.0))
            used |= {owner.shard, new}
        elif kind in ("resize", "merge"):
            pairs = [(a, b) for a, b in itertools.pairwise(slices)
                     if a.shard != b.shard and a.shard not in used and b.shard not in used]
            if not pairs:
                continue
            a, b = rng.choice(pairs)
            if kind == "merge":
                actions.append(Merge(a.shard, b.shard, 0.0, 0.0))
            else:
                if b.end - b.start < 2:
                    continue
                cut = rng.randint(b.start + 1, b.end - 1)
                actions.append(Reassign(b.start, cut, b.shard, a.shard, shard_map.node_of(a.shard),
                                        "resize", (cut - b.start) / HASH_SPACE, 0.0))
            used |= {a.shard, b.shard}
        else:
            free = [s for s in shard_map.shards if s not in used]
            if not free:
                continue
            s = rng.choice(free)
            actions.append(Move(s, shard_map.node_of(s), rng.choice(nodes), 0.0, 0.0))
            used.add(s)
    return Plan(None, shard_map.epoch, tuple(actions))


def check_resharding(
    backend: Backend,
    *,
    seed: int = 0,
    keys: int = 40,
    messages: int = 1200,
    producers: int = 2,
    consumers: int = 2,
    rounds: int = 8,
    timeout: float = 60.0,
    raise_on_failure: bool = True,
) -> ReshardingReport:
    """Run the check; raises ``AssertionError`` describing the first problems (unless
    ``raise_on_failure`` is False) and returns the report."""
    from fastshard.shardmap import ShardMap

    check_int("keys", keys, 1, 1_000_000)
    check_int("messages", messages, 1, 10_000_000)
    check_int("producers", producers, 1, 64)
    check_int("consumers", consumers, 1, 64)
    check_int("rounds", rounds, 0, 10_000)
    if "queues" not in backend.capabilities:
        raise InvalidValueError(f"backend {backend.name!r} must offer queues for the resharding check")
    rng = random.Random(seed)
    token = uuid.uuid4().hex[:8]
    nodes = ["n0", "n1", "n2"]
    shard_map = ShardMap(4, nodes[:2], name=f"rs{token}")
    router = Router(shard_map, backend, queue_prefix="fsrt")
    manager = ShardManager(shard_map, capacity=1.0, router=router)
    group = "fsrt-check"
    key_names = [f"k{i}-{token}" for i in range(keys)]
    report = ReshardingReport()
    published: dict[str, tuple[str, int]] = {}  # uid -> (key, per-key seq)
    pub_lock = threading.Lock()
    processed: list[tuple[int, str, int, str]] = []  # (order, key, per-key seq, uid)
    proc_lock = threading.Lock()
    order = itertools.count()
    producers_done = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []
    t0 = time.monotonic()

    def produce(p: int) -> None:
        try:
            mine = key_names[p::producers]
            if not mine:
                return
            prng = random.Random(seed * 1000 + p)
            next_seq = dict.fromkeys(mine, 0)
            for _ in range(messages // producers):
                k = prng.choice(mine)
                n = next_seq[k]
                next_seq[k] = n + 1
                uid = f"{k}:{n}"
                with pub_lock:
                    published[uid] = (k, n)
                router.publish(k, uid)
                if prng.random() < 0.02:
                    time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
            errors.append(exc)

    def consume(c: int) -> None:
        mine: dict[str, FencedConsumer] = {}
        crng = random.Random(seed * 7919 + c)
        try:
            while not stop.is_set():
                got = 0
                for q in router.live_queues():
                    if hash(q) % consumers != c:
                        continue
                    cons = mine.get(q)
                    if cons is None:
                        cons = mine[q] = router.consumer(q, group, f"c{c}")
                    try:
                        # small batches and a pause now and then: consumers lag behind
                        # producers, so moved ranges really have a backlog to fence
                        msgs = cons.poll(max_messages=25)
                    except InvalidValueError:
                        continue  # the queue was deleted after draining
                    for m in msgs:
                        with proc_lock:
                            k, _, n = m.value.decode().rpartition(":")
                            processed.append((next(order), k, int(n), m.value.decode()))
                    if msgs and crng.random() < 0.2:
                        time.sleep(0.001)
                    cons.ack(msgs)
                    got += len(msgs)
                if not got:
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(p,), daemon=True) for p in range(producers)]
    cthreads = [threading.Thread(target=consume, args=(c,), daemon=True) for c in range(consumers)]
    for t in threads + cthreads:
        t.start()
    names = itertools.count(1)
    try:
        for _ in range(rounds):
            time.sleep(rng.uniform(0.0, 0.02))
            plan = random_plan(shard_map, rng, nodes, names, key_names)
            try:
                manager.apply(plan)
                report.plans_applied += 1
                for a in plan.actions:
                    kind = type(a).__name__.lower() if not isinstance(a, Reassign) else a.kind
                    report.actions[kind] = report.actions.get(kind, 0) + 1
            except FastshardError:
                report.plans_rejected += 1  # e.g. a merge of shards no longer adjacent
            report.queues_deleted += len(manager.collect_retired(group))
        for t in threads:
            t.join(timeout)
        producers_done.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not errors:
            with proc_lock:
                done = len({u for *_, u in processed})
            if done >= len(published):
                break
            report.queues_deleted += len(manager.collect_retired(group))
            time.sleep(0.01)
    finally:
        stop.set()
        for t in cthreads:
            t.join(10)
    if errors:
        raise errors[0]
    report.seconds = time.monotonic() - t0
    report.published = len(published)
    seen: set[str] = set()
    last: dict[str, int] = {}
    for _, k, n, uid in sorted(processed):
        if uid in seen:
            report.duplicates += 1
            continue
        seen.add(uid)
        if n <= last.get(k, -1):
            report.order_violations.append(f"key {k}: seq {n} processed after seq {last[k]}")
        last[k] = max(last.get(k, -1), n)
    report.delivered = len(seen)
    report.lost = sorted(set(published) - seen)
    report.fences_released = router.fences.released
    for q in router.live_queues():
        try:
            backend.delete_queue(q)
        except FastshardError:
            pass
    if raise_on_failure and not report.ok:
        raise AssertionError(
            f"resharding check failed on backend {backend.name!r} (seed {seed}): "
            f"{len(report.lost)} lost (first {report.lost[:5]}), "
            f"{len(report.order_violations)} order violations (first {report.order_violations[:5]}), "
            f"{report.delivered}/{report.published} delivered"
        )
    return report
