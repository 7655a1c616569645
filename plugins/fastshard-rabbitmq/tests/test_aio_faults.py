"""AsyncRabbitMQBackend when the broker drops its connection: publishing rides it out
through aio-pika's reconnect and the backend's re-send of unconfirmed messages.

pytest-asyncio is not a dependency: each test drives its coroutine with ``asyncio.run``.
The connection kills are DELETE /api/connections/<name> on the management API. The backend
under test names its connection (``?name=`` in the AMQP URL), so the killer finds it, and no
other client's, in the API's connection list, which shows a new connection only after ~3-5 s
(the broker's statistics interval): that wait sets the pace of the kills.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest

from fastshard.errors import BackendError
from fastshard.testing.servers import require_server
from fastshard_rabbitmq import RabbitMQBackend
from fastshard_rabbitmq.aio import AsyncRabbitMQBackend

pytestmark = pytest.mark.integration

MGMT = "http://127.0.0.1:15672/api/connections"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


@pytest.fixture
def prefix():
    require_server("RabbitMQ", "127.0.0.1", 5672)
    require_server("RabbitMQ management API", "127.0.0.1", 15672)
    p = f"f{uuid.uuid4().hex[:10]}."
    yield p
    cleaner = RabbitMQBackend(prefix=p)
    for q in cleaner.list_queues():
        cleaner.delete_queue(q)
    cleaner.close()


def test_a_connection_dropped_soon_after_connecting_is_ridden_out_by_the_default_retries(prefix):
    """aio-pika's robust connection sleeps ``reconnect_interval`` (5 s by default) after each
    (re)connect before it reacts to a drop, and the default 5 retries wait ~0.4-1.1 s in
    all: a drop in those 5 s failed every call until the sleep ended. Here the broker drops
    a 3.5 s old connection (no heartbeats while the loop is blocked)."""
    async def main() -> None:
        async with AsyncRabbitMQBackend("amqp://guest:guest@127.0.0.1:5672/?heartbeat=1",
                                        prefix=prefix, timeout=5.0) as b:
            await b.create_queue("q")
            time.sleep(3.5)  # blocks the loop: no heartbeats for 3.5 s, the broker drops us
            started = time.monotonic()
            mid = await b.publish("q", b"k", b"after the drop")  # default retries=5
            took = time.monotonic() - started
            assert took < 1.0, f"a publish after one dropped connection took {took:.2f} s"
            got = await b.consume("q", "g", timeout=5.0)
            assert [(m.id, m.value) for m in got] == [(mid, b"after the drop")]

    asyncio.run(main())


# ---------------------------------------------------------------- kills under publishing
def _named_url(name: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/?name={name}"


def _listed_connections(user_provided_name: str) -> list[str]:
    """The broker's names of the connections a client named ``user_provided_name``."""
    req = urllib.request.Request(f"{MGMT}?columns=name,user_provided_name", headers=AUTH)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return [c["name"] for c in json.load(resp) if c.get("user_provided_name") == user_provided_name]


def _kill_connection(name: str) -> None:
    req = urllib.request.Request(f"{MGMT}/{quote(name, safe='')}", method="DELETE", headers=AUTH)
    urllib.request.urlopen(req, timeout=5).close()


async def _next_connection(user_provided_name: str, killed: set[str], within: float = 10.0) -> str:
    """The broker's name of a connection named ``user_provided_name`` not killed yet."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        fresh = [n for n in await asyncio.to_thread(_listed_connections, user_provided_name)
                 if n not in killed]
        if fresh:
            return fresh[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no new connection {user_provided_name!r} in the management API")


@dataclass
class _Publisher:
    """What one publisher handed to publish (in order) and what each call did."""

    key: bytes
    handed: list[bytes] = field(default_factory=list)
    returned: dict[str, bytes] = field(default_factory=dict)  # id -> value, calls that returned
    raised: list[BaseException] = field(default_factory=list)
    calls_in_a_kill: int = 0  # calls still running when a kill went out

    async def call(self, values: list[bytes], publish) -> None:  # noqa: ANN001
        self.handed += values
        try:
            ids = await publish(values)
        except Exception as exc:  # noqa: BLE001 - checked by _check_delivery
            self.raised.append(exc)
            return
        assert len(ids) == len(values)
        self.returned.update(zip(ids, values, strict=True))


async def _kill_during(cname: str, kills: int, in_flight, start_burst) -> int:  # noqa: ANN001
    """Kill the backend's connection ``kills`` times, each while ``in_flight()`` is true
    (``start_burst()`` makes the publishers busy once the next victim is listed). Returns
    how many kills went out while publish calls were running."""
    killed: set[str] = set()
    during = 0
    for _ in range(kills):
        victim = await _next_connection(cname, killed)
        await start_burst()
        await asyncio.sleep(random.uniform(0.02, 0.3))  # somewhere in the burst
        during += bool(in_flight())
        await asyncio.to_thread(_kill_connection, victim)
        killed.add(victim)
    return during


def _drain_all(prefix: str, queue: str) -> list:
    """Every message in ``queue`` (sync backend: a second client), acked."""
    reader = RabbitMQBackend(prefix=prefix, timeout=5.0)
    try:
        got: list = []
        while batch := reader.consume(queue, "g", max_messages=1000, timeout=1.0):
            got += batch
            reader.ack(queue, "g", [m.id for m in batch])
        return got
    finally:
        reader.close()


def _check_delivery(got: list, publishers: list[_Publisher]) -> None:
    for p in publishers:
        for exc in p.raised:  # a failed call surfaces as a fastshard error, never aio-pika's
            assert isinstance(exc, BackendError), f"{p.key!r}: publish raised {exc!r}"
    returned = {mid: v for p in publishers for mid, v in p.returned.items()}
    handed = {v: p.key for p in publishers for v in p.handed}
    # handed to a call that raised, and no id returned for it: may or may not be delivered
    unsure = {v for p in publishers if p.raised for v in p.handed} - set(returned.values())
    first: dict[str, bytes] = {}  # id -> value, in order of first delivery
    for m in got:
        assert m.value in handed and m.key == handed[m.value], f"never published: {m!r}"
        assert first.setdefault(m.id, m.value) == m.value, f"one id, two messages: {m.id}"
        if m.id in returned:
            assert returned[m.id] == m.value, f"{m.id} is not the id publish returned for it"
        else:
            assert m.value in unsure, f"{m!r} has an id no publish returned"
    print(f"{len(got)} delivered, {len(got) - len(first)} duplicates, "
          f"{sum(len(p.raised) for p in publishers)} publish calls raised")
    lost = set(returned) - set(first)
    assert not lost, f"{len(lost)} confirmed message(s) never delivered, e.g. {sorted(lost)[:5]}"
    for p in publishers:  # each publisher's messages in publish order, duplicates dropped
        mine = [v for v in first.values() if handed[v] == p.key]
        order = {v: i for i, v in enumerate(p.handed)}
        assert mine == sorted(mine, key=order.__getitem__), f"{p.key!r}: out of publish order"


KILLS = 3


def test_publish_batch_rides_out_connection_kills_in_the_middle_of_batches(prefix):
    """Batches of 3,000; each kill lands while one is being sent or confirmed, so the
    backend re-sends the unconfirmed rest of it, same ids, on the new connection."""
    cname = f"fs-aio-faults-{uuid.uuid4().hex[:8]}"

    async def main() -> tuple[_Publisher, int]:
        async with AsyncRabbitMQBackend(_named_url(cname), prefix=prefix, timeout=5.0) as b:
            await b.create_queue("q")
            p = _Publisher(b"batch")
            busy, go = [0], asyncio.Event()
            sent = [0]

            async def batch() -> None:
                values = [b"%d" % (sent[0] + i) for i in range(3000)]
                sent[0] += len(values)
                busy[0] += 1
                try:
                    await p.call(values, lambda vs: b.publish_batch("q", [(p.key, v) for v in vs]))
                finally:
                    busy[0] -= 1

            async def start_burst() -> None:
                go.set()
                await asyncio.sleep(0)  # the batch starts

            async def producer() -> None:
                await batch()  # before any kill
                for _ in range(KILLS):
                    await go.wait()
                    go.clear()
                    await batch()

            during, _ = await asyncio.gather(
                _kill_during(cname, KILLS, lambda: busy[0] > 0, start_burst), producer())
            await batch()  # after the last kill
            return p, during

    p, during = asyncio.run(main())
    got = _drain_all(prefix, "q")
    _check_delivery(got, [p])
    assert during == KILLS, f"only {during} of {KILLS} kills landed while a batch was in flight"
    assert not p.raised, f"the default retries did not ride out a kill: {p.raised!r}"
    assert len(p.returned) == 3000 * (KILLS + 2)


def test_concurrent_single_publishes_ride_out_connection_kills(prefix):
    """Four coroutines publishing one message at a time, in bursts around each kill."""
    cname = f"fs-aio-faults-{uuid.uuid4().hex[:8]}"

    async def main() -> tuple[list[_Publisher], int]:
        async with AsyncRabbitMQBackend(_named_url(cname), prefix=prefix, timeout=5.0) as b:
            await b.create_queue("q")
            pubs = [_Publisher(b"p%d" % n) for n in range(4)]
            busy, until, stop = [0], [time.monotonic() + 0.3], asyncio.Event()

            async def produce(p: _Publisher) -> None:
                i = 0
                while not stop.is_set() or time.monotonic() < until[0]:
                    if time.monotonic() >= until[0]:
                        await asyncio.sleep(0.01)
                        continue
                    busy[0] += 1
                    try:
                        await p.call([b"%s:%d" % (p.key, i)],
                                     lambda vs, p=p: _one(b.publish("q", p.key, vs[0])))
                    finally:
                        busy[0] -= 1
                    i += 1

            async def start_burst() -> None:
                until[0] = time.monotonic() + 0.5
                await asyncio.sleep(0)

            async def kill_then_stop() -> int:
                try:
                    return await _kill_during(cname, KILLS, lambda: busy[0] > 0, start_burst)
                finally:
                    until[0] = time.monotonic() + 0.3  # a burst after the last kill
                    stop.set()

            during, *_ = await asyncio.gather(kill_then_stop(), *[produce(p) for p in pubs])
            return pubs, during

    pubs, during = asyncio.run(main())
    got = _drain_all(prefix, "q")
    _check_delivery(got, pubs)
    assert during == KILLS, f"only {during} of {KILLS} kills landed while publishes were in flight"
    raised = [exc for p in pubs for exc in p.raised]
    assert not raised, f"the default retries did not ride out a kill: {raised!r}"
    assert all(len(p.returned) > 100 for p in pubs), [len(p.returned) for p in pubs]


async def _one(publishing) -> list[str]:  # noqa: ANN001
    return [await publishing]
