"""Request ids shared by the Redis and PostgreSQL plugins' retry-safe publishes."""

from __future__ import annotations

import os

from fastshard.backends.request_ids import REQUEST_IDS, RequestIds


def test_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = RequestIds()
    made = [ids.next() for _ in range(5000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert ids.next_bytes().decode() > made[-1]  # bytes and str forms share one counter


def test_two_generators_do_not_collide() -> None:
    a, b = RequestIds(), RequestIds()
    assert {a.next() for _ in range(100)}.isdisjoint({b.next() for _ in range(100)})


def test_a_forked_child_draws_a_new_prefix() -> None:
    parent = REQUEST_IDS.next()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, REQUEST_IDS.next().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child[:16] != parent[:16], "parent and child must not share a prefix"
