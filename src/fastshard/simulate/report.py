"""The comparison table (rich) and the HTML report with PNG plots (matplotlib).

Plots, one PNG each:

* ``shard_load.png``   – per-shard load over time, per policy: the busiest shard, the 90th
  percentile and the median shard as a share of capacity, with the capacity line;
* ``predicted.png``    – total load predicted one step ahead (point and upper bound) by the
  predictive policy's forecaster against what arrived;
* ``events.png``       – split / isolate / resize / merge / move / drain actions per step and
  the number of shards, per policy;
* ``overload.png``     – overload exposure and steps with an overloaded shard, per policy.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from fastshard.errors import InvalidValueError
from fastshard.simulate.engine import EVENT_KINDS, SimulationResult

#: (metric, label, goal text, test of the goal or None)
GOALS: list[tuple[str, str, str]] = [
    ("imbalance_p50", "imbalance p50 (max/mean)", "<= 1.05"),
    ("imbalance_p99", "imbalance p99", "<= 1.25"),
    ("imbalance_busy_p50", "  imbalance p50, busy steps (mean util >= 30%)", "<= 1.05"),
    ("imbalance_busy_p99", "  imbalance p99, busy steps", "<= 1.25"),
    ("overload_exposure", "overload exposure", ">= 50% lower than reactive"),
    ("mitigated_before_start", "forecastable overloads mitigated before start", ">= 80%"),
    ("unnecessary_proactive", "proactive actions unnecessary in hindsight", "<= 10%"),
    ("keys_moved_max", "keys moved, worst round (excl. failure drain)", "<= 9%"),
    ("moved_vs_min", "moved load / minimum needed", "<= 1.5x"),
    ("hot_key_latency", "hot key isolated after (intervals)", "<= 1"),
    ("order_violations", "per-key order violations", "0"),
    ("lost_messages", "lost messages", "0"),
    ("plan_ms_max", "planning time, worst round (ms)", "see bench/ for 10k slices"),
]


def _fmt(metric: str, v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if metric in ("overload_exposure", "mitigated_before_start", "unnecessary_proactive", "keys_moved_max"):
        return f"{v:.1%}"
    if metric == "hot_key_latency":
        return "never" if v == -1 else str(v)
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def goal_met(metric: str, run: dict[str, Any], runs: dict[str, dict[str, Any]]) -> bool | None:
    v = run.get(metric)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if metric in ("imbalance_p50", "imbalance_busy_p50"):
        return v <= 1.05
    if metric in ("imbalance_p99", "imbalance_busy_p99"):
        return v <= 1.25
    if metric == "overload_exposure":
        ref = runs.get("reactive", {}).get("overload_exposure")
        return None if not ref else v <= 0.5 * ref
    if metric == "mitigated_before_start":
        return v >= 0.8
    if metric == "unnecessary_proactive":
        return v <= 0.10
    if metric == "keys_moved_max":
        return v <= 0.09
    if metric == "moved_vs_min":
        return v <= 1.5
    if metric == "hot_key_latency":
        return 0 <= v <= 1
    if metric in ("order_violations", "lost_messages"):
        return v == 0
    return None


def comparison_table(result: SimulationResult) -> Table:
    runs = {r.policy: r.metrics for r in result.runs}
    t = Table(title=f"fastshard simulate: {result.source} - {len(result.services)} services, "
                    f"{result.workload['steps']} steps, {result.workload['keys']} keys, "
                    f"capacity {result.capacity:.0f}/shard/step")
    t.add_column("goal")
    t.add_column("target", style="dim")
    for p in runs:
        t.add_column(p, justify="right")
    for metric, label, target in GOALS:
        cells = []
        for p, m in runs.items():
            ok = goal_met(metric, m, runs) if p != "static" else None
            mark = "" if ok is None else (" [green]ok[/]" if ok else " [red]miss[/]")
            cells.append(_fmt(metric, m.get(metric)) + mark)
        t.add_row(label, target, *cells)
    t.add_row("actions", "", *(", ".join(f"{v} {k}" for k, v in m["actions"].items() if v) or "-"
                                for m in runs.values()))
    t.add_row("shards (final / max)", "", *(f"{m['shards_final']} / {m['shards_max']}" for m in runs.values()))
    return t


def markdown_table(result: SimulationResult) -> str:
    runs = {r.policy: r.metrics for r in result.runs}
    lines = ["| goal | target | " + " | ".join(runs) + " |", "|---|---|" + "---|" * len(runs)]
    for metric, label, target in GOALS:
        cells = []
        for p, m in runs.items():
            ok = goal_met(metric, m, runs) if p != "static" else None
            cells.append(_fmt(metric, m.get(metric)) + ("" if ok is None else (" ✓" if ok else " ✗")))
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(result: SimulationResult, out_dir: str | Path) -> Path:
    """Write ``index.html`` and the PNG plots into ``out_dir``; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"--report must name a directory, {str(out)!r} is a file")
    out.mkdir(parents=True, exist_ok=True)
    runs = result.runs
    colors = {"static": "tab:gray", "reactive": "tab:orange", "predictive": "tab:blue"}

    # per-shard load over time
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.6 * len(runs)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        s = r.series
        x = range(len(s["util_max"]))
        ax.fill_between(x, s["util_min"], s["util_max"], color=colors.get(r.policy, "tab:green"), alpha=0.15,
                        label="min-max shard")
        ax.plot(x, s["util_max"], color=colors.get(r.policy, "tab:green"), lw=1.2, label="busiest shard")
        ax.plot(x, s["util_p90"], color="black", lw=0.8, ls="--", label="p90 shard")
        ax.plot(x, s["util_p50"], color="black", lw=0.8, label="median shard")
        ax.axhline(1.0, color="red", lw=1, label="capacity")
        ax.set_ylabel("load / capacity")
        ax.set_title(f"{r.policy}: per-shard load", fontsize=10)
        ax.set_ylim(0, max(2.0, min(4.0, max(s["util_max"]) * 1.05)))
        ax.legend(loc="upper right", fontsize=7, ncol=5)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out / "shard_load.png", dpi=110)
    plt.close(fig)

    # predicted vs actual
    pred = next((r for r in runs if r.policy == "predictive"), None)
    fig, ax = plt.subplots(figsize=(11, 3.2))
    base = pred or runs[0]
    ax.plot(base.series["total"], color="black", lw=1, label="actual total load")
    if pred is not None:
        ax.plot(pred.series["predicted"], color="tab:blue", lw=1, label="predicted 1 step ahead (point)")
        ax.plot(pred.series["predicted_upper"], color="tab:blue", lw=0.8, ls=":", label="predicted upper bound")
    ax.set_xlabel("step")
    ax.set_ylabel("messages per step")
    ax.set_title("predicted vs actual total load", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "predicted.png", dpi=110)
    plt.close(fig)

    # events
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.3 * len(runs)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        bottom = [0.0] * len(r.series["shards"])
        for k in EVENT_KINDS:
            vals = r.series[k]
            if any(vals):
                ax.bar(range(len(vals)), vals, bottom=bottom, label=k, width=1.0)
                bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax2 = ax.twinx()
        ax2.plot(r.series["shards"], color="black", lw=1)
        ax2.set_ylabel("shards")
        ax.set_ylabel("actions")
        ax.set_title(f"{r.policy}: actions per step (bars) and shard count (line)", fontsize=10)
        if any(any(r.series[k]) for k in EVENT_KINDS):
            ax.legend(loc="upper left", fontsize=7, ncol=6)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out / "events.png", dpi=110)
    plt.close(fig)

    # overload per policy
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
    names = [r.policy for r in runs]
    a1.bar(names, [100 * r.metrics["overload_exposure"] for r in runs], color=[colors.get(n, "tab:green") for n in names])
    a1.set_ylabel("% of load above capacity")
    a1.set_title("overload exposure", fontsize=10)
    a2.bar(names, [r.metrics["overload_steps"] for r in runs], color=[colors.get(n, "tab:green") for n in names])
    a2.set_ylabel("steps")
    a2.set_title("steps with an overloaded shard", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "overload.png", dpi=110)
    plt.close(fig)

    runs_m = {r.policy: r.metrics for r in runs}
    rows = []
    for metric, label, target in GOALS:
        cells = []
        for p, m in runs_m.items():
            ok = goal_met(metric, m, runs_m) if p != "static" else None
            cls = "" if ok is None else ("ok" if ok else "miss")
            cells.append(f'<td class="{cls}">{html.escape(_fmt(metric, m.get(metric)))}</td>')
        rows.append(f"<tr><th>{html.escape(label)}</th><td>{html.escape(target)}</td>{''.join(cells)}</tr>")
    events = []
    for r in runs:
        for step, kind, detail in r.events[:200]:
            events.append(f"<tr><td>{r.policy}</td><td>{step}</td><td>{html.escape(kind)}</td>"
                          f"<td>{html.escape(detail)}</td></tr>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fastshard simulation report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{text-align:left}}
.ok{{background:#dfd}} .miss{{background:#fdd}} img{{max-width:100%}}</style></head><body>
<h1>fastshard simulation report</h1>
<p>Source <b>{html.escape(result.source)}</b>: services {html.escape(", ".join(result.services))};
{result.workload["steps"]} steps, {result.workload["keys"]} keys (Zipf {result.workload["zipf"]}, hot set of
{result.workload["hot_set"]} rotating every {result.workload["rotate_every"]} steps), seed {result.workload["seed"]};
{result.config["shards"]} initial shards on {result.config["nodes"]} nodes, capacity {result.capacity:.0f} per shard
per step; forecast horizon {result.config["horizon"]}, upper bound q={result.config["q"]}.
Every policy saw the same traffic. Run time {result.seconds:.1f} s.</p>
<h2>Goals</h2>
<table><tr><th>goal</th><th>target</th>{"".join(f"<th>{html.escape(p)}</th>" for p in runs_m)}</tr>
{"".join(rows)}</table>
<h2>Per-shard load over time</h2><img src="shard_load.png" alt="per-shard load">
<h2>Predicted vs actual</h2><img src="predicted.png" alt="predicted vs actual">
<h2>Split / merge / move events</h2><img src="events.png" alt="events">
<h2>Overload per policy</h2><img src="overload.png" alt="overload">
<h2>Events (first 200 per policy)</h2>
<table><tr><th>policy</th><th>step</th><th>action</th><th>detail</th></tr>{"".join(events)}</table>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
