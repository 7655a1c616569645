"""The slice algebra under ShardMap: immutable states, range painting, owner changes, diffs.

Pure functions over tuples, no locking and no compiled code: :mod:`fastshard.shardmap` builds
every new epoch from these and compiles it into a lookup table.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastshard.errors import InvalidTypeError, InvalidValueError

__all__ = ["HASH_SPACE", "FORMAT", "Slice", "SliceChange"]

HASH_SPACE = 1 << 64
#: version of the ``to_dict`` layout
FORMAT = 1
_MAX_SAFE_JSON_INT = 1 << 53
_SHARD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$")
_AUTO_ID_RE = re.compile(r"^s(\d+)$")

# one recorded owner change: (start, end, old_shard, new_shard, old_node, new_node)
_Change = tuple[int, int, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Slice:
    """Hashes ``[start, end)`` belong to ``shard`` (``end`` may be ``2**64``)."""

    start: int
    end: int
    shard: str


@dataclass(frozen=True, slots=True)
class SliceChange:
    """Hashes ``[start, end)`` changed owner (shard and/or node) after the diff's base epoch.

    ``old_*`` is the owner at the base epoch, ``new_*`` the owner now, ``epoch`` the latest
    epoch at which this range changed owner. ``None`` never occurs for a map (every hash
    always has an owner); the fields are optional for consumers that describe creation or
    retirement of whole maps.
    """

    start: int
    end: int
    old_shard: str | None
    new_shard: str | None
    old_node: str | None
    new_node: str | None
    epoch: int


@dataclass(frozen=True, slots=True, eq=False)
class _State:
    """One immutable version of the assignment (the table is compiled from it)."""

    starts: tuple[int, ...]  # strictly increasing, starts[0] == 0
    owners: tuple[str, ...]  # shard of each slice; neighbours never share a shard
    placement: dict[str, str]  # shard -> node in shard order; never mutated once built
    nodes: tuple[str, ...]
    next_auto: int  # next k tried for an automatic shard id "s<k>"

    def end(self, i: int) -> int:
        return self.starts[i + 1] if i + 1 < len(self.starts) else HASH_SPACE


def _check_shard_id(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"{field} must be a str shard id, got {type(value).__name__}")
    if not _SHARD_ID_RE.match(value):
        raise InvalidValueError(
            f"{field} must be 1-200 characters of letters, digits and '._:-' starting with a "
            f"letter or digit (it names queues), got {value!r}"
        )
    return value


def _check_node(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"{field} must be a str node name, got {type(value).__name__}")
    if not 1 <= len(value) <= 200 or not value.isprintable():
        raise InvalidValueError(f"{field} must be 1-200 printable characters, got {value!r}")
    return value


def _coalesce(starts: list[int], owners: list[str]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    out_s: list[int] = []
    out_o: list[str] = []
    for s, o in zip(starts, owners, strict=True):
        if out_o and out_o[-1] == o:
            continue
        out_s.append(s)
        out_o.append(o)
    return tuple(out_s), tuple(out_o)


def _paint(st: _State, start: int, end: int, shard: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Slices after giving ``[start, end)`` to ``shard``, cutting the slices it overlaps.

    Only the overlapped slices and their two neighbours are rebuilt (the rest is spliced in
    as tuple slices), so a plan of many small ranges on a map of many slices stays cheap."""
    starts, owners = st.starts, st.owners
    i = bisect.bisect_right(starts, start) - 1  # the slice holding `start`
    j = bisect.bisect_left(starts, end)  # slices i .. j-1 overlap [start, end)
    mid_s: list[int] = []
    mid_o: list[str] = []
    if starts[i] < start:
        mid_s.append(starts[i])
        mid_o.append(owners[i])
    mid_s.append(start)
    mid_o.append(shard)
    if st.end(j - 1) > end:
        mid_s.append(end)
        mid_o.append(owners[j - 1])
    # neighbours never share a shard outside the rebuilt part: coalesce only around it
    lo = max(i - 1, 0)
    hi = min(j + 1, len(starts))
    local_s, local_o = _coalesce(list(starts[lo:i]) + mid_s + list(starts[j:hi]),
                                 list(owners[lo:i]) + mid_o + list(owners[j:hi]))
    return starts[:lo] + local_s + starts[hi:], owners[:lo] + local_o + owners[hi:]


def _owner_changes(old: _State, new: _State) -> list[_Change]:
    """Maximal ranges whose (shard, node) differs between two states, in hash order."""
    bounds = sorted(set(old.starts) | set(new.starts))
    out: list[_Change] = []
    i = j = 0
    for k, s in enumerate(bounds):
        e = bounds[k + 1] if k + 1 < len(bounds) else HASH_SPACE
        while i + 1 < len(old.starts) and old.starts[i + 1] <= s:
            i += 1
        while j + 1 < len(new.starts) and new.starts[j + 1] <= s:
            j += 1
        os_, ns = old.owners[i], new.owners[j]
        on, nn = old.placement[os_], new.placement[ns]
        if os_ == ns and on == nn:
            continue
        if out and out[-1][1] == s and out[-1][2:] == (os_, ns, on, nn):
            out[-1] = (out[-1][0], e, os_, ns, on, nn)
        else:
            out.append((s, e, os_, ns, on, nn))
    return out


def _enc(v: int) -> int | str:
    """JSON-safe int: a decimal string once it exceeds what a double holds exactly."""
    return v if -_MAX_SAFE_JSON_INT <= v <= _MAX_SAFE_JSON_INT else str(v)


def _dec(field: str, v: Any, lo: int = 0, hi: int = HASH_SPACE) -> int:
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidValueError(f"{field} must be an int or decimal string, got {v!r}")
    if not lo <= v <= hi:
        raise InvalidValueError(f"{field} must be in [{lo}, {hi}], got {v}")
    return v


def _dec_change(c: Any) -> _Change:
    if not isinstance(c, list | tuple) or len(c) != 6 or not all(isinstance(x, str) for x in c[2:]):
        raise InvalidValueError(
            f"history change must be [start, end, old_shard, new_shard, old_node, new_node], got {c!r}")
    return (_dec("history start", c[0], 0, HASH_SPACE - 1), _dec("history end", c[1], 1, HASH_SPACE),
            c[2], c[3], c[4], c[5])


def _with_node(nodes: tuple[str, ...], node: str) -> tuple[str, ...]:
    return nodes if node in nodes else nodes + (node,)


def _next_auto_after(ids: Sequence[str], current: int) -> int:
    # Automatic ids never reuse a number an explicit "s<k>" id has taken.
    k = current
    for sid in ids:
        m = _AUTO_ID_RE.match(sid)
        if m:
            k = max(k, int(m.group(1)) + 1)
    return k


def _compose(records: list[tuple[int, list[_Change]]]) -> list[SliceChange]:
    """Net owner changes over consecutive epochs' change records.

    Each elementary range keeps the owner before its first change and after its last;
    ranges that came back to their original owner are dropped.
    """
    if not records:
        return []
    bounds = sorted({b for _, ch in records for c in ch for b in (c[0], c[1])})
    first: list[tuple[str, str] | None] = [None] * len(bounds)
    last: list[tuple[str, str] | None] = [None] * len(bounds)
    when = [0] * len(bounds)
    for ep, ch in records:
        for s, e, os_, ns, on, nn in ch:
            for k in range(bisect.bisect_left(bounds, s), bisect.bisect_left(bounds, e)):
                if first[k] is None:
                    first[k] = (os_, on)
                last[k] = (ns, nn)
                when[k] = ep
    out: list[SliceChange] = []
    for k in range(len(bounds) - 1):
        f, la = first[k], last[k]
        if f is None or la is None or f == la:
            continue
        s, e = bounds[k], bounds[k + 1]
        prev = out[-1] if out else None
        if (prev is not None and prev.end == s and prev.epoch == when[k]
                and (prev.old_shard, prev.old_node, prev.new_shard, prev.new_node)
                == (f[0], f[1], la[0], la[1])):
            out[-1] = SliceChange(prev.start, e, f[0], la[0], f[1], la[1], when[k])
        else:
            out.append(SliceChange(s, e, f[0], la[0], f[1], la[1], when[k]))
    return out
