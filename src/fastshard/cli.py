"""The ``fastshard`` command (also ``python -m fastshard``).

Commands::

    fastshard simulate [options]          the three policies on a real-traffic workload
    fastshard replay PATH|DATASET [opts]  the same on a CSV of per-service volumes or a dataset
    fastshard report RESULT.json --out DIR   the HTML report of a saved run
    fastshard backends                    installed backend plugins and what they offer
    fastshard selftest                    quick check of the compiled core (exit 0 / 1)

Exit codes: 0 success, 1 a self-test failed, 2 bad arguments, file or data.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastshard.errors import FastshardError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def _policies(text: str) -> tuple[str, ...]:
    from fastshard.sharding.policies import POLICIES

    names = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in names if p not in POLICIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"must be a comma-separated subset of {','.join(POLICIES)}, got {text!r}")
    return names


def _add_sim_options(p: argparse.ArgumentParser) -> None:
    w = p.add_argument_group("workload")
    w.add_argument("--steps", type=_positive_int, default=336, help="steps to simulate (default 336 = 2 weeks hourly)")
    w.add_argument("--offset", type=int, default=None,
                   help="first step of the series to use; earlier steps warm the forecaster up "
                        "(default: 720, or as late as the series allows)")
    w.add_argument("--keys", type=_positive_int, default=20_000, help="distinct keys (default 20000)")
    w.add_argument("--zipf", type=_fraction, default=1.05, help="Zipf exponent of key popularity (default 1.05)")
    w.add_argument("--rotate-every", type=_positive_int, default=24, help="steps between hot-set rotations (default 24)")
    w.add_argument("--hot-set", type=int, default=50, help="keys in the rotating hot set per service (default 50)")
    w.add_argument("--scale", type=_fraction, default=10.0, help="messages per unit of the series (default 10)")
    w.add_argument("--hot-key", type=_fraction, default=0.5,
                   help="load of the injected hot key as a share of shard capacity (default 0.5; 0: none)")
    w.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s = p.add_argument_group("system")
    s.add_argument("--shards", type=_positive_int, default=8, help="initial shards (default 8)")
    s.add_argument("--nodes", type=_positive_int, default=4, help="nodes (default 4)")
    s.add_argument("--headroom", type=_fraction, default=0.8,
                   help="capacity = p90 total load / (shards x headroom) (default 0.8)")
    s.add_argument("--horizon", type=_positive_int, default=2, help="forecast horizon in steps (default 2)")
    s.add_argument("--q", type=_fraction, default=0.9, help="upper-bound quantile the predictive policy protects (default 0.9)")
    s.add_argument("--policies", type=_policies, default=("static", "reactive", "predictive"),
                   help="comma-separated policies to compare (default static,reactive,predictive)")
    s.add_argument("--no-failure", action="store_true", help="do not inject a shard failure at 80%% of the run")
    o = p.add_argument_group("output")
    o.add_argument("--report", metavar="DIR", help="write an HTML report with PNG plots into DIR")
    o.add_argument("--json", metavar="PATH", help="save the full result as JSON (for `fastshard report`)")
    o.add_argument("--markdown", action="store_true", help="also print the goal table as Markdown")
    o.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from fastshard.simulate.workload import DATASETS

    parser = argparse.ArgumentParser(
        prog="fastshard",
        description="Predictive, dynamic sharding and routing. Run the simulator, replay traffic, "
                    "render reports, list backends, or self-test the installation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("simulate", help="compare static / reactive / predictive sharding on a real-traffic workload",
                       description="Drive telemetry -> forecasts -> manager -> routing -> health on the in-memory "
                                   "backend for each policy on the same workload and print a comparison table.")
    p.add_argument("--dataset", choices=DATASETS, default="pedestrian",
                   help="real traffic series to use (default pedestrian: 4 hourly sensors = 4 services)")
    _add_sim_options(p)
    p = sub.add_parser("replay", help="the simulation on a CSV of per-service volumes or a named dataset",
                       description="SOURCE is a dataset name (" + ", ".join(DATASETS) + ") or a CSV file: "
                                   "a header row, then one row per step; first column a timestamp or label, "
                                   "every other column one service's volume (>= 0, empty = previous value).")
    p.add_argument("source", metavar="PATH|DATASET")
    _add_sim_options(p)
    p = sub.add_parser("report", help="render the HTML report (and table) of a run saved with --json")
    p.add_argument("result", metavar="RESULT.json")
    p.add_argument("--out", metavar="DIR", required=True, help="directory for index.html and the PNG plots")
    sub.add_parser("backends", help="list installed backend plugins and their capabilities")
    sub.add_parser("selftest", help="check the compiled core and the memory backend (exit 0 ok, 1 failed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("simulate", "replay"):
            return _simulate(args, args.dataset if args.command == "simulate" else args.source)
        if args.command == "report":
            return _report(args)
        if args.command == "backends":
            return _backends()
        return _selftest()
    except (FastshardError, OSError) as exc:
        # plain text, one line: scripts grep it and terminals must not wrap it
        print(f"fastshard {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _simulate(args: argparse.Namespace, source: str) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fastshard.simulate import SimConfig, WorkloadConfig, simulate
    from fastshard.simulate.report import comparison_table, markdown_table, write_report
    from fastshard.simulate.workload import DATASETS, Workload, load_csv, load_dataset

    console = Console()
    if source in DATASETS:
        names, vols, season = load_dataset(source)
    else:
        names, vols = load_csv(source)
        season = 24
    n = vols.shape[0]
    if args.steps > n:
        raise _usage(f"--steps must be <= {n} (the series has {n} steps), got {args.steps}")
    offset = args.offset if args.offset is not None else max(0, min(720, n - args.steps))
    if offset < 0 or offset + args.steps > n:
        raise _usage(f"--offset must be in [0, {n - args.steps}] for {args.steps} steps, got {offset}")
    wcfg = WorkloadConfig(steps=args.steps, offset=offset, keys=args.keys, zipf=args.zipf,
                          rotate_every=args.rotate_every, hot_set=min(args.hot_set, args.keys),
                          scale=args.scale, hot_key_fraction=args.hot_key, seed=args.seed)
    workload = Workload(names, vols, wcfg, season)
    cfg = SimConfig(shards=args.shards, nodes=args.nodes, headroom=args.headroom, horizon=args.horizon,
                    q=args.q, policies=args.policies, fail_step=None if args.no_failure else -1)
    with Progress(TextColumn("{task.description:<11}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=args.quiet, transient=False) as progress:
        tasks = {p: progress.add_task(p, total=args.steps) for p in cfg.policies}
        result = simulate(workload, cfg, source=source, on_step=lambda p: progress.advance(tasks[p]))
    console.print(comparison_table(result))
    if args.markdown:
        print(markdown_table(result))  # plain: meant to be pasted, never wrapped
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), default=_json_default), encoding="utf-8")
        console.print(f"result saved to {args.json}")
    if args.report:
        path = write_report(result, args.report)
        console.print(f"report written to {path}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fastshard.simulate import SimulationResult
    from fastshard.simulate.report import comparison_table, write_report

    p = Path(args.result)
    if not p.is_file():
        raise _usage(f"RESULT.json must be an existing file saved by `fastshard simulate --json`, got {str(p)!r}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _usage(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _usage(f"{p} is not a fastshard simulation result")
    result = SimulationResult.from_dict(data)
    Console().print(comparison_table(result))
    Console().print(f"report written to {write_report(result, args.out)}")
    return EXIT_OK


def _backends() -> int:
    from rich.console import Console
    from rich.table import Table

    from fastshard.backends.plugins import backend_classes

    t = Table(title="installed fastshard backends")
    t.add_column("name")
    t.add_column("capabilities")
    t.add_column("class")
    for name, cls in sorted(backend_classes().items()):
        t.add_row(name, ", ".join(sorted(cls.capabilities)), f"{cls.__module__}.{cls.__qualname__}")
    Console().print(t)
    return EXIT_OK


def _selftest() -> int:
    """Each check prints one line; any failure makes the exit code 1."""
    checks: list[tuple[str, Any]] = [
        ("hash_key equals XXH3-64 (xxhash) on sample keys", _check_hash),
        ("Ring places keys consistently (single and batch)", _check_ring),
        ("ShardMap places keys consistently (single and batch)", _check_shardmap),
        ("memory backend: publish / consume / ack / kv_cas round trip", _check_memory),
    ]
    failed = 0
    for label, fn in checks:
        try:
            fn()
            print(f"ok    {label}")
        except Exception as exc:  # noqa: BLE001 - a self-test reports every failure
            failed += 1
            print(f"FAIL  {label}: {type(exc).__name__}: {exc}")
    print("selftest passed" if not failed else f"selftest FAILED ({failed} of {len(checks)} checks)")
    return EXIT_OK if not failed else EXIT_FAILED


_SAMPLE_KEYS: list[Any] = ["", "a", "user-42", "é-ü-😀", "x" * 1000, b"", b"\x00\xff", 0, 1, 2**63, -1]


def _check_hash() -> None:
    import xxhash

    from fastshard.hashing import hash_key

    for k in _SAMPLE_KEYS:
        if isinstance(k, str):
            raw = k.encode("utf-8")
        elif isinstance(k, bytes):
            raw = k
        else:
            raw = (k % 2**64).to_bytes(8, "little")
        want = xxhash.xxh3_64_intdigest(raw)
        got = hash_key(k)
        if got != want:
            raise AssertionError(f"hash_key({k!r}) = {got}, xxhash says {want}")


def _check_ring() -> None:
    import numpy as np

    from fastshard.ring import Ring

    ring = Ring(["a", "b", "c"])
    keys = [f"k{i}" for i in range(300)]
    owners = [ring.lookup(k) for k in keys]
    if set(owners) != {"a", "b", "c"}:
        raise AssertionError(f"300 keys landed on {sorted(set(owners))}, expected all of a, b, c")
    batch = [ring.nodes[i] for i in np.asarray(ring.lookup_many(keys))]
    if batch != owners:
        raise AssertionError("lookup and lookup_many disagree")
    ring.remove("c")
    moved = [k for k, o in zip(keys, owners, strict=True) if o != "c" and ring.lookup(k) != o]
    if moved:
        raise AssertionError(f"removing c moved {len(moved)} keys that were not on c")


def _check_shardmap() -> None:
    import numpy as np

    from fastshard.shardmap import ShardMap

    m = ShardMap(4, ["n0", "n1"])
    keys = [f"k{i}" for i in range(500)]
    single = [m.shard_for(k) for k in keys]
    batch = [m.shards[i] for i in np.asarray(m.shards_for_many(keys))]
    if single != batch:
        raise AssertionError("shard_for and shards_for_many disagree")
    if set(single) != set(m.shards):
        raise AssertionError(f"500 keys landed on {sorted(set(single))} of {m.shards}")
    new = m.split("s0")
    if new not in m.shards or m.epoch != 2:
        raise AssertionError("split did not add a shard at epoch 2")


def _check_memory() -> None:
    from fastshard import backends

    b = backends.get("memory")
    b.create_queue("selftest")
    mid = b.publish("selftest", "k", "v", epoch=3)
    [msg] = b.consume("selftest", "g")
    if (msg.id, msg.value, msg.epoch) != (mid, b"v", 3):
        raise AssertionError(f"consumed {msg!r}, expected id {mid} value b'v' epoch 3")
    if b.ack("selftest", "g", [mid]) != 1 or b.backlog("selftest", "g") != 0:
        raise AssertionError("ack did not clear the backlog")
    if b.kv_cas("k", "1", 0) != 1 or b.kv_cas("k", "2", 0) is not None:
        raise AssertionError("kv_cas did not enforce the expected version")


def _usage(msg: str) -> FastshardError:
    from fastshard.errors import InvalidValueError

    return InvalidValueError(msg)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
