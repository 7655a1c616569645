"""The check every ``publish_stamped_batch`` hook must pass: ``Router.publish_many`` on a
backend gives consumers exactly what ``Router.publish``, one message at a time, gives them.

Two routers on the same backend route the same keys through maps of different names (so
their queues differ): one publishes one by one, the other in batches. Per shard, the
consumed messages must agree in key, value, epoch, headers (``fs-seq``, ``fs-hash``, the
caller's) and order.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastshard.sharding.router import Router
from fastshard.shardmap import ShardMap


def _consume(backend: Any, router: Router, shard: str, n: int) -> list[tuple[bytes, bytes, int, dict[str, str]]]:
    """``n`` messages of ``shard``'s queue (what reaches it within 30 s), then 0.2 s more
    for any surplus."""
    queue, out = router.queue_of(shard), []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = backend.consume(queue, "check", max_messages=1000, timeout=0.2 if len(out) >= n else 1.0)
        if not got and len(out) >= n:
            break
        out += [(m.key, m.value, m.epoch, dict(m.headers)) for m in got]
        backend.ack(queue, "check", [m.id for m in got])
    return out


def check_publish_many_matches_one_by_one(backend: Any, *, shards: int = 4, n: int = 300) -> list[Router]:
    """Run the comparison on ``backend`` (which must offer ``publish_stamped_batch``);
    returns the two routers so the caller can delete their queues."""
    assert callable(getattr(backend, "publish_stamped_batch", None)), "the backend has no batch hook"
    tag = uuid.uuid4().hex[:6]
    one = Router(ShardMap(shards, ["a"], name=f"one{tag}"), backend)
    many = Router(ShardMap(shards, ["a"], name=f"many{tag}"), backend)
    for r in (one, many):  # a group may start reading at the queue's end: register it first
        for s in r.shard_map.shards:
            backend.consume(r.queue_of(s), "check", max_messages=1)
    keys: list[Any] = [f"user-{i % 37}" for i in range(n)]
    keys[1], keys[2], keys[3] = b"raw-bytes", 42, "user-0"
    values: list[Any] = [b"v%d" % i for i in range(n)]
    values[4] = "a str value"
    batches = [(0, 1, None), (1, 120, {"trace": "t1"}), (120, n, {"trace": "t2", "fs-seq": "999"})]
    for start, end, headers in batches:
        for k, v in zip(keys[start:end], values[start:end], strict=True):
            one.publish(k, v, headers=headers)
        sent = many.publish_many(keys[start:end], values[start:end], headers=headers)
        assert [s.shard for s in sent] == [many.route(k) for k in keys[start:end]]
    for shard in one.shard_map.shards:
        n_shard = sum(one.route(k) == shard for k in keys)
        expected, got = _consume(backend, one, shard, n_shard), _consume(backend, many, shard, n_shard)
        assert len(expected) == n_shard
        assert got == expected, f"shard {shard}: publish_many differs from publishing one by one"
    return [one, many]
