"""Forecasters: speed at 10,000 series and accuracy on real series, peers in the same run.

Speed (pytest-benchmark medians):
* ``update`` of 10,000 series, one step, steady state (every series past its warm-up) and
  during warm-up, with the default bank of models and with the lean configuration (one
  Holt-Winters set, no AR); peer: river ``HoltWinters.learn_one`` on one series (x 10,000 =
  one step).
* ``predict(12)`` for 10,000 series; peer: river ``HoltWinters.forecast(12)`` on one series.

Accuracy (rolling origin, MASE; see ``forecast_eval.py``) on fpp3 pedestrian counts and bank
calls (``forecast_data.py``): fastshard vs weekly seasonal naive vs river HoltWinters vs
statsforecast AutoETS and MSTL. Quick by default (few series, few statsforecast fits) so
``--benchmark-disable`` finishes in well under a minute; the full evaluation:

    FASTSHARD_BENCH_FULL=1 .venv/bin/pytest bench/test_bench_forecast.py -s \
        --benchmark-columns=median,iqr,rounds
    .venv/bin/pytest bench/test_bench_forecast.py --benchmark-disable   # quick (CI)

The accuracy table is printed (rich) and written with a plot to ``reports/forecast_*``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import forecast_data as data  # noqa: E402
import forecast_eval as ev  # noqa: E402

from fastshard.forecast import DEFAULT_HW_SETS, Forecaster  # noqa: E402

river_ts = pytest.importorskip("river.time_series", reason="peer: pip install fastshard[bench]")
statsforecast_models = pytest.importorskip(
    "statsforecast.models", reason="peer: pip install fastshard[bench]"
)
pytest.importorskip("tsdata", reason="real data: pip install fastshard[data]")

FULL = os.environ.get("FASTSHARD_BENCH_FULL") == "1"
N_SPEED = 10_000
H = 12
REPORTS = Path(__file__).resolve().parent.parent / "reports"
# medians collected across this module's benchmarks, for same-run ratios
MEDIANS: dict[str, float] = {}


def _median(benchmark, name: str) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        MEDIANS[name] = stats.stats.median


# ------------------------------------------------------------------------------ speed
LEAN = {"model": "holtwinters", "hw_sets": [DEFAULT_HW_SETS[1]]}


def _steady(n_series: int, **kwargs):
    rng = np.random.default_rng(0)
    ped = data.pedestrian_windows(200)
    pick = rng.integers(0, len(ped), n_series)
    gain = rng.uniform(0.5, 2.0, n_series)
    f = Forecaster(n_series, data.PED_SEASONS, **kwargs)
    for t in range(336):
        f.update(ped[pick, t] * gain)
    f._a["n_obs"] += 100_000
    return f, ped[pick, 336] * gain


@pytest.fixture(scope="module")
def lean_forecaster():
    """One Holt-Winters parameter set and no AR: the cheapest configuration."""
    return _steady(N_SPEED, **LEAN)


@pytest.fixture(scope="module")
def steady_forecaster():
    """10,000 series fed 2 weeks of hourly data, then marked as past warm-up, as after the
    3,360 steps (20 weeks) the slowest parameter set needs; feeding those would take the
    benchmark minutes."""
    return _steady(N_SPEED)


@pytest.mark.benchmark(group="forecast-update-10k")
def test_update_10k_steady(benchmark, steady_forecaster):
    f, y = steady_forecaster
    benchmark(f.update, y)
    _median(benchmark, "update_steady")


@pytest.mark.benchmark(group="forecast-update-10k")
def test_update_10k_lean(benchmark, lean_forecaster):
    f, y = lean_forecaster
    benchmark(f.update, y)
    _median(benchmark, "update_lean")


@pytest.mark.benchmark(group="forecast-update-10k")
def test_update_10k_warmup(benchmark):
    rng = np.random.default_rng(1)
    f = Forecaster(N_SPEED, data.PED_SEASONS)
    y = rng.gamma(4, 50, N_SPEED)
    for _ in range(30):
        f.update(y)
    benchmark(f.update, y)
    _median(benchmark, "update_warmup")


@pytest.mark.benchmark(group="forecast-update-10k")
def test_update_river_one_series(benchmark):
    """Peer: one river HoltWinters update; x 10,000 is one step of 10,000 series."""
    m = river_ts.HoltWinters(seasonality=24, **ev.RIVER_PARAMS)
    for v in data.pedestrian_windows(1)[0][:336]:
        m.learn_one(float(v))
    benchmark(m.learn_one, 500.0)
    _median(benchmark, "river_update_one")


@pytest.mark.benchmark(group="forecast-predict12-10k")
def test_predict12_10k(benchmark, steady_forecaster):
    f, _ = steady_forecaster
    out = benchmark(f.predict, H)
    assert out.shape == (N_SPEED, H) and np.isfinite(out).all()
    _median(benchmark, "predict12")


@pytest.mark.benchmark(group="forecast-predict12-10k")
def test_predict12_10k_select(benchmark, steady_forecaster):
    """``model="select"``: one model per series instead of the weighted combination."""
    f, _ = steady_forecaster
    g = Forecaster.from_state_dict({**f.state_dict(), "config": {**f.state_dict()["config"],
                                                                 "model": "select"}})
    benchmark(g.predict, H)
    _median(benchmark, "predict12_select")


@pytest.mark.benchmark(group="forecast-predict12-10k")
def test_predict12_10k_lean(benchmark, lean_forecaster):
    f, _ = lean_forecaster
    benchmark(f.predict, H)
    _median(benchmark, "predict12_lean")


@pytest.mark.benchmark(group="forecast-predict12-10k")
def test_predict12_river_one_series(benchmark):
    m = river_ts.HoltWinters(seasonality=24, **ev.RIVER_PARAMS)
    for v in data.pedestrian_windows(1)[0][:336]:
        m.learn_one(float(v))
    benchmark(m.forecast, H)
    _median(benchmark, "river_predict_one")


def test_speed_ratios(record_property):
    """Same-run ratios (printed and recorded); empty under --benchmark-disable."""
    if "update_steady" not in MEDIANS or "river_update_one" not in MEDIANS:
        pytest.skip("benchmarks disabled: no medians to compare")
    river_step = MEDIANS["river_update_one"] * N_SPEED
    river_pred = MEDIANS.get("river_predict_one", float("nan")) * N_SPEED
    rows = {
        "update_10k_steady_us": MEDIANS["update_steady"] * 1e6,
        "update_10k_warmup_us": MEDIANS.get("update_warmup", float("nan")) * 1e6,
        "update_10k_lean_us": MEDIANS.get("update_lean", float("nan")) * 1e6,
        "river_update_x10k_us": river_step * 1e6,
        "update_speedup_vs_river": river_step / MEDIANS["update_steady"],
        "predict12_10k_ms": MEDIANS["predict12"] * 1e3,
        "predict12_10k_select_ms": MEDIANS.get("predict12_select", float("nan")) * 1e3,
        "predict12_10k_lean_ms": MEDIANS.get("predict12_lean", float("nan")) * 1e3,
        "river_predict12_x10k_ms": river_pred * 1e3,
        "predict_speedup_vs_river": river_pred / MEDIANS["predict12"],
    }
    for k, v in rows.items():
        record_property(k, v)
    print("\n" + json.dumps(rows, indent=2))
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "forecast_speed.json").write_text(json.dumps(rows, indent=2))


# ------------------------------------------------------------------------------ accuracy
def _pedestrian_results() -> list[ev.Result]:
    n = 200 if FULL else 8
    n_sf = 50 if FULL else 2
    Y = data.pedestrian_windows(n)
    first, T = 336, Y.shape[1]
    origins = list(range(first, T - H + 1, H))  # 14 origins covering the last week
    scale = ev.mase_scale(Y, first, 24)
    out = []
    err, secs, steps = ev.eval_fastshard(Y, data.PED_SEASONS, origins, H)
    m, per = ev.score(err, scale)
    out.append(ev.Result("fastshard auto", m, len(Y), len(origins), secs, "per series-update",
                         secs / (steps * len(Y)) * 1e6, per_series=per))
    err, secs, _ = ev.eval_fastshard(Y, data.PED_SEASONS, origins, H, model="select")
    m, _ = ev.score(err, scale)
    out.append(ev.Result("fastshard select", m, len(Y), len(origins), secs))
    err, secs, _ = ev.eval_fastshard(Y, data.PED_SEASONS, origins, H, **LEAN)
    m, _ = ev.score(err, scale)
    out.append(ev.Result("fastshard lean (1 HW set)", m, len(Y), len(origins), secs))
    err, secs = ev.eval_seasonal_naive(Y, 168, origins, H)
    m, per_naive = ev.score(err, scale)
    out.append(ev.Result("seasonal naive (weekly)", m, len(Y), len(origins), secs,
                         per_series=per_naive))
    err, secs, per_update = ev.eval_river(Y, 24, origins, H)
    m, _ = ev.score(err, scale)
    out.append(ev.Result("river HoltWinters (24)", m, len(Y), len(origins), secs, "per update",
                         per_update * 1e6))
    # statsforecast on an evenly spaced subset; every method is also scored on that subset
    sub = np.unique(np.linspace(0, len(Y) - 1, n_sf).round().astype(int))
    sub_scale = scale[sub]
    for name, model, refit in (
        ("statsforecast AutoETS (24)", statsforecast_models.AutoETS(season_length=24), False),
        ("statsforecast MSTL (24,168)",
         statsforecast_models.MSTL(season_length=[24, 168]), True),
    ):
        err, secs, fits = ev.eval_statsforecast(Y[sub], model, origins, H, refit=refit)
        m, _ = ev.score(err, sub_scale)
        how = "refit per origin" if refit else "fit once, forward"
        out.append(ev.Result(name, m, len(sub), len(origins), secs, "per fit",
                             secs / fits * 1e6, notes=how))
    for r in out:
        if r.per_series.size:
            r.notes = f"on the statsforecast subset: {r.per_series[sub].mean():.3f}"
    return out


def _bank_results() -> list[ev.Result]:
    y = data.bank_calls()[None, :]
    T = y.shape[1]
    first = T - 4 * 845  # the last 4 (5-day) weeks
    origins = list(range(first, T - H + 1, H))
    n_sf = 8 if FULL else 1
    sf_step = 420
    sf_origins = [T - H - sf_step * k for k in range(n_sf - 1, -1, -1)]
    scale = ev.mase_scale(y, first, 169)
    union = sorted(set(origins) | set(sf_origins))
    pos = {t: k for k, t in enumerate(union)}
    runs = {}  # one online pass per configuration, scored on both origin sets
    for name, kwargs in (("fastshard auto", {}), ("fastshard select", {"model": "select"}),
                         ("fastshard lean (1 HW set)", LEAN)):
        err, secs, steps = ev.eval_fastshard(y, data.BANK_SEASONS, union, H, **kwargs)
        runs[name] = (err, secs, steps)
    naive_err, naive_secs = ev.eval_seasonal_naive(y, 845, union, H)
    out = []
    for label, orig in (("all", origins), ("MSTL origins", sf_origins)):
        idx = [pos[t] for t in orig]
        for name, (err, secs, steps) in runs.items():
            m, _ = ev.score(err[:, idx], scale)
            unit = secs / steps * 1e6 if name == "fastshard auto" else float("nan")
            out.append(ev.Result(f"{name} [{label}]", m, 1, len(orig), secs, "per update",
                                 unit))
        m, _ = ev.score(naive_err[:, idx], scale)
        out.append(ev.Result(f"seasonal naive (weekly) [{label}]", m, 1, len(orig), naive_secs))
    err, secs, per_update = ev.eval_river(y, 169, origins, H)
    m, _ = ev.score(err, scale)
    out.append(ev.Result("river HoltWinters (169) [all]", m, 1, len(origins), secs,
                         "per update", per_update * 1e6))
    err, secs, fits = ev.eval_statsforecast(
        y, statsforecast_models.MSTL(season_length=[169, 845]), sf_origins, H,
        refit=True, input_size=5 * 845,
    )
    m, _ = ev.score(err, scale)
    out.append(ev.Result("statsforecast MSTL (169,845) [MSTL origins]", m, 1, len(sf_origins),
                         secs, "per fit", secs / fits * 1e6,
                         notes="refit per origin on the last 5 weeks"))
    return out


def _report(name: str, results: list[ev.Result]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{name}: rolling-origin MASE, h={H} ({'full' if FULL else 'quick'})")
    for col in ("method", "MASE", "series", "origins", "CPU s", "unit cost", "notes"):
        table.add_column(col)
    lines = ["| method | MASE | series | origins | CPU s | unit cost | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        unit = "" if np.isnan(r.unit_cost_us) else f"{r.unit_cost_us:,.2f} us {r.per}"
        cells = [r.method, f"{r.mase:.3f}", str(r.n_series), str(r.n_origins),
                 f"{r.seconds:.2f}", unit, r.notes]
        table.add_row(*(escape(c) for c in cells))
        lines.append("| " + " | ".join(cells) + " |")
    Console(width=160).print(table)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / f"forecast_{name}.md").write_text("\n".join(lines) + "\n")
    _plot(name, results)


def _plot(name: str, results: list[ev.Result]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the report extra is optional
        return
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(results)))
    names = [f"{r.method} ({r.n_series} series)" for r in results]
    vals = [r.mase for r in results]
    colors = ["tab:blue" if n.startswith("fastshard") else "tab:gray" for n in names]
    ax.barh(names, vals, color=colors)
    ax.invert_yaxis()
    ax.set_xlabel(f"MASE (rolling origin, h={H}; lower is better)")
    ax.set_title(f"{name} ({'full' if FULL else 'quick'} run)")
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.3f}", va="center")
    fig.tight_layout()
    fig.savefig(REPORTS / f"forecast_{name}.png", dpi=120)
    plt.close(fig)


@pytest.mark.benchmark(group="forecast-accuracy")
def test_accuracy_pedestrian(benchmark, record_property):
    results = benchmark.pedantic(_pedestrian_results, rounds=1, iterations=1)
    _report("pedestrian", results)
    by = {r.method: r.mase for r in results}
    for k, v in by.items():
        record_property(k, v)
        benchmark.extra_info[k] = v
    assert all(np.isfinite(v) for v in by.values())
    if FULL:  # the target: at or below the weekly seasonal naive, online only
        assert by["fastshard auto"] <= by["seasonal naive (weekly)"]


@pytest.mark.benchmark(group="forecast-accuracy")
def test_accuracy_bank_calls(benchmark, record_property):
    results = benchmark.pedantic(_bank_results, rounds=1, iterations=1)
    _report("bank_calls", results)
    by = {r.method: r.mase for r in results}
    for k, v in by.items():
        record_property(k, v)
        benchmark.extra_info[k] = v
    assert all(np.isfinite(v) for v in by.values())
