"""The SQLite example backend passes the shared conformance suite, and survives a reopen."""

import json
import subprocess
import sys

import pytest

from fastshard import backends
from fastshard.testing.conformance import BackendConformance
from fastshard_sqlite import SqliteBackend


class TestSqliteConformance(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path):
        b = backends.get("sqlite", path=str(tmp_path / "fs.db"))
        yield b
        b.close()

    @pytest.fixture
    def unreachable_backend(self):
        return None  # a local file: there is no server to lose


def test_state_survives_reopening_the_file(tmp_path):
    path = str(tmp_path / "fs.db")
    b = SqliteBackend(path)
    b.counter_add("ids.host-1", 4096)
    b.kv_cas("shardmap.default", b"{}", 0)
    token = b.lease_acquire("host-1", "a", ttl=60)
    b.close()
    again = SqliteBackend(path)
    assert again.counter_get("ids.host-1") == 4096
    assert again.kv_get("shardmap.default").version == 1
    assert again.lease_info("host-1").token == token


_BUMP = """
import json, sys
from fastshard_sqlite import SqliteBackend
b = SqliteBackend(sys.argv[1])
print(json.dumps([b.counter_add("shared", 1) for _ in range(int(sys.argv[2]))]))
b.close()
"""


def test_counters_are_atomic_across_processes(tmp_path):
    path = str(tmp_path / "fs.db")
    SqliteBackend(path).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", _BUMP, path, "40"], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    flat = sorted(v for out in outs for v in json.loads(out))
    assert flat == list(range(1, 121)), "every fetch-add across processes returns a distinct value"
