"""The fastshard command: every subcommand, exit codes and error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastshard.cli import build_parser, main

QUICK = ["--steps", "30", "--keys", "1000", "--hot-set", "5", "--quiet", "--policies", "static,reactive"]


def test_help_documents_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("simulate", "replay", "report", "backends", "selftest"):
        assert cmd in out


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "fastshard", "--help"], capture_output=True, text=True,
                         check=True, timeout=60)
    assert "usage: fastshard" in out.stdout


def test_selftest_passes(capsys):
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok    ") == 4 and "selftest passed" in out


def test_selftest_fails_with_exit_1(monkeypatch, capsys):
    import fastshard.cli as cli

    def broken():
        raise AssertionError("hash mismatch")

    monkeypatch.setattr(cli, "_check_hash", broken)
    assert main(["selftest"]) == 1
    assert "FAIL  hash_key" in capsys.readouterr().out


def test_backends_lists_memory(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "memory" in out and "queues" in out


def test_simulate_prints_the_table_and_saves_json_and_report(tmp_path, capsys):
    res, rep = tmp_path / "r.json", tmp_path / "rep"
    assert main(["simulate", *QUICK, "--json", str(res), "--report", str(rep), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "overload exposure" in out and "| goal | target | static | reactive |" in out
    data = json.loads(res.read_text())
    assert [r["policy"] for r in data["runs"]] == ["static", "reactive"]
    assert (rep / "index.html").exists()
    # `report` re-renders a saved run
    assert main(["report", str(res), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "events.png").exists()


def test_replay_a_csv(tmp_path, capsys):
    csv = tmp_path / "traffic.csv"
    rows = ["t,orders,payments"] + [f"{i},{100 + 50 * (i % 24 > 12)},{40 + i % 7}" for i in range(60)]
    csv.write_text("\n".join(rows) + "\n")
    assert main(["replay", str(csv), *QUICK]) == 0
    assert "traffic.csv" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "/no/such/file.csv"], "PATH must be an existing CSV file"),
        (["simulate", "--steps", "999999"], "--steps must be <="),
        (["simulate", "--offset", "-5"], "--offset must be in"),
        (["report", "/no/such.json", "--out", "x"], "RESULT.json must be an existing file"),
    ],
)
def test_bad_files_and_values_exit_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_json_report_exits_2(tmp_path, capsys):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    assert main(["report", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    p.write_text('{"runs": 1}')
    assert main(["report", str(p), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--policies", "static,psychic"], "comma-separated subset"),
        (["simulate", "--steps", "0"], "must be >= 1"),
        (["simulate", "--zipf", "abc"], "must be a number"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
