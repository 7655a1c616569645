"""The versioned shard map: hash-space slices -> shards -> nodes, one epoch per change.

The 64-bit hash space ``[0, 2**64)`` is cut into contiguous slices; each slice belongs to a
shard and each shard is placed on a node. Lookups (``shard_for``, ``shards_for_many``...) run
in the compiled :mod:`fastshard._shardmap` table, which :class:`ShardMap` inherits from.

Every successful mutating call validates everything first, then builds the next immutable
state and a new compiled table and swaps them in, bumping the epoch by exactly one (a
:meth:`ShardMap.batch` commits all its changes as one epoch). The change of owner of every
hash range is recorded per epoch, so :meth:`ShardMap.diff` tells a router what moved.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from fastshard._shardmap import ShardMapCore, SliceTable
from fastshard.errors import (
    DuplicateNodeError,
    InvalidTypeError,
    InvalidValueError,
    StaleEpochError,
    UnknownNodeError,
    check_int,
)
from fastshard.shardmap_load import LoadReservoir
from fastshard.shardmap_slices import (
    FORMAT,
    HASH_SPACE,
    Slice,
    SliceChange,
    _Change,
    _check_node,
    _check_shard_id,
    _coalesce,
    _compose,
    _dec,
    _dec_change,
    _enc,
    _next_auto_after,
    _owner_changes,
    _paint,
    _State,
    _with_node,
)

__all__ = ["HASH_SPACE", "FORMAT", "Slice", "SliceChange", "ShardMap", "ShardMaps"]


class ShardMap(ShardMapCore):
    """The versioned assignment of hash-space slices to shards and of shards to nodes.

    ``ShardMap(4, ["a", "b"])`` cuts the hash space into 4 equal slices ``s0..s3`` placed
    round-robin on nodes ``a`` and ``b`` at epoch 1. Lookups hash keys with XXH3-64
    (:func:`fastshard.hash_key`). Safe to read from any number of threads while one thread
    (or several, serialised by an internal lock) changes it.
    """

    def __init__(
        self,
        shards: int | Sequence[str] = 1,
        nodes: Sequence[str] = ("node-0",),
        *,
        name: str = "default",
        history_limit: int = 1024,
        load_samples: int = 65536,
    ) -> None:
        name = _check_shard_id("name", name)
        check_int("history_limit", history_limit, 1000, 1_000_000)
        check_int("load_samples", load_samples, 16, 1 << 24)
        if isinstance(nodes, str) or not isinstance(nodes, Sequence):
            raise InvalidTypeError(f"nodes must be a sequence of str, got {type(nodes).__name__}")
        node_list = tuple(_check_node(f"nodes[{i}]", n) for i, n in enumerate(nodes))
        if not node_list:
            raise InvalidValueError("nodes must name at least 1 node, got 0")
        if len(set(node_list)) != len(node_list):
            raise DuplicateNodeError(f"nodes must be unique, got {list(node_list)}")
        if isinstance(shards, int) and not isinstance(shards, bool):
            check_int("shards", shards, 1, 1 << 20)
            ids = tuple(f"s{i}" for i in range(shards))
        elif isinstance(shards, Sequence) and not isinstance(shards, str):
            ids = tuple(_check_shard_id(f"shards[{i}]", s) for i, s in enumerate(shards))
            if not ids:
                raise InvalidValueError("shards must name at least 1 shard, got 0")
            if len(set(ids)) != len(ids):
                raise DuplicateNodeError(f"shards must be unique, got {list(ids)}")
        else:
            raise InvalidTypeError(
                f"shards must be an int in [1, 2**20] or a sequence of shard ids, "
                f"got {type(shards).__name__}"
            )
        n = len(ids)
        state = _State(
            starts=tuple((i * HASH_SPACE) // n for i in range(n)),
            owners=ids,
            placement={s: node_list[i % len(node_list)] for i, s in enumerate(ids)},
            nodes=node_list,
            next_auto=_next_auto_after(ids, 0),
        )
        self._setup(name, state, 1, history_limit, load_samples)

    def _setup(
        self, name: str, state: _State, epoch: int, history_limit: int, load_samples: int
    ) -> None:
        self.name = name
        self._lock = threading.RLock()
        self._state = state
        self._history: deque[tuple[int, list[_Change]]] = deque()
        self._history_limit = history_limit
        self._history_base = epoch  # oldest epoch diff() can start from
        self._batch_depth = 0
        self._batch_owner = 0
        self._batch_start: _State | None = None
        self._batch_ops = 0
        self._work: _State | None = None
        self._load = LoadReservoir(load_samples)
        self._install_table(_compile(state, epoch))

    # ------------------------------------------------------------------ reading
    def _view(self) -> _State:
        # Inside a batch, the thread running it sees its pending changes; others the commit.
        work = self._work
        if work is not None and self._batch_owner == threading.get_ident():
            return work
        return self._state

    @property
    def shards(self) -> list[str]:
        """Shard ids in creation order; index ``i`` is what ``shards_for_many`` returns."""
        return list(self._view().placement)

    @property
    def slices(self) -> list[Slice]:
        st = self._view()
        return [Slice(s, st.end(i), o) for i, (s, o) in enumerate(zip(st.starts, st.owners, strict=True))]

    @property
    def nodes(self) -> list[str]:
        return list(self._view().nodes)

    def node_of(self, shard: str) -> str:
        st = self._view()
        try:
            return st.placement[shard]
        except (KeyError, TypeError):
            raise UnknownNodeError(f"shard must be one of {list(st.placement)}, got {shard!r}") from None

    def slices_of(self, shard: str) -> list[Slice]:
        self.node_of(shard)
        return [s for s in self.slices if s.shard == shard]

    def placement(self) -> dict[str, str]:
        """``{shard: node}`` for every shard."""
        return dict(self._view().placement)

    def __repr__(self) -> str:
        st = self._view()
        return (
            f"ShardMap(name={self.name!r}, epoch={self.epoch}, shards={len(st.placement)}, "
            f"slices={len(st.starts)}, nodes={len(st.nodes)})"
        )

    # ------------------------------------------------------------------ load samples
    def record_load(self, hashes: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add observed key hashes (optionally weighted, e.g. bytes or cost) to the sample.

        A bounded uniform reservoir of ``load_samples`` entries is kept; ``split`` cuts at its
        weighted median and picks a shard's most loaded slice from it.
        """
        self._load.add(hashes, weights)

    def clear_load(self) -> None:
        self._load.clear()

    def load_by_slice(self) -> np.ndarray:
        """Estimated share of recorded load per slice (float64, sums to 1, zeros if none)."""
        st = self._view()
        h, w = self._load.snapshot()
        out = np.zeros(len(st.starts), dtype=np.float64)
        if h.size and w.sum() > 0:
            idx = np.searchsorted(np.array(st.starts, dtype=np.uint64), h, side="right") - 1
            out = np.bincount(idx, weights=w, minlength=len(st.starts)) / w.sum()
        return out

    # ------------------------------------------------------------------ changing
    def split(
        self,
        target: str | int,
        at: int | None = None,
        *,
        new_shard: str | None = None,
        node: str | None = None,
    ) -> str:
        """Cut a slice in two; ``[at, end)`` goes to a new shard. Returns the new shard id.

        ``target`` is a shard id or a slice index. Without ``at`` the shard's most loaded
        slice (else its widest) is cut at the weighted median of recorded load (else the
        midpoint). The new shard goes on ``node`` (default: the target's node).
        """
        with self._lock:
            st = self._working()
            i = self._split_slice_index(st, target, at)
            s, e = st.starts[i], st.end(i)
            if at is None:
                cut = self._default_cut(s, e)
            else:
                cut = check_int("at", at, 0, HASH_SPACE)
                if not s < cut < e:
                    raise InvalidValueError(
                        f"at must be strictly inside slice {i} ({s}, {e}), got {cut}")
            shard_id, next_auto = self._new_shard_id(st, new_shard)
            dest = st.placement[st.owners[i]] if node is None else _check_node("node", node)
            starts, owners = _paint(st, cut, e, shard_id)
            self._apply(_State(starts, owners, {**st.placement, shard_id: dest},
                               _with_node(st.nodes, dest), next_auto))
            return shard_id

    def merge(self, a: str, b: str) -> str:
        """Give every slice of ``b`` to its neighbour ``a`` and retire ``b``. Returns ``a``."""
        with self._lock:
            st = self._working()
            self._require_shard(st, "a", a)
            self._require_shard(st, "b", b)
            if a == b:
                raise InvalidValueError(f"a and b must be different shards, got {a!r} twice")
            o = st.owners
            if not any(
                o[i] == b and ((i > 0 and o[i - 1] == a) or (i + 1 < len(o) and o[i + 1] == a))
                for i in range(len(o))
            ):
                raise InvalidValueError(
                    f"shards {a!r} and {b!r} must be neighbours (a slice of one adjacent to a "
                    "slice of the other) to merge")
            starts, owners = _coalesce(list(st.starts), [a if x == b else x for x in o])
            placement = {k: v for k, v in st.placement.items() if k != b}
            self._apply(_State(starts, owners, placement, st.nodes, st.next_auto))
            return a

    def move(self, shard: str, node: str) -> None:
        """Place ``shard`` on ``node`` (added to the node list if new)."""
        with self._lock:
            st = self._working()
            self._require_shard(st, "shard", shard)
            node = _check_node("node", node)
            self._apply(_State(st.starts, st.owners, {**st.placement, shard: node},
                               _with_node(st.nodes, node), st.next_auto))

    def assign_range(self, start: int, end: int, shard: str, *, node: str | None = None) -> None:
        """Give hashes ``[start, end)`` to ``shard`` (created on ``node`` if new).

        ``assign_range(h, h + 1, "hot-1")`` isolates the key hashing to ``h``. A shard left
        with no slice is retired. For an existing shard ``node`` must be omitted or equal
        its node (use :meth:`move` to move it).
        """
        with self._lock:
            st = self._working()
            start = check_int("start", start, 0, HASH_SPACE - 1)
            end = check_int("end", end, 1, HASH_SPACE)
            if start >= end:
                raise InvalidValueError(f"start must be < end, got [{start}, {end})")
            shard = _check_shard_id("shard", shard)
            next_auto = st.next_auto
            if shard in st.placement:
                dest = st.placement[shard]
                if node is not None and node != dest:
                    raise InvalidValueError(
                        f"node must be omitted or {dest!r} for existing shard {shard!r}, "
                        f"got {node!r} (use move)")
            else:
                owner_at_start = st.owners[bisect.bisect_right(st.starts, start) - 1]
                dest = st.placement[owner_at_start] if node is None else _check_node("node", node)
                next_auto = _next_auto_after([shard], next_auto)
            starts, owners = _paint(st, start, end, shard)
            alive = set(owners)
            placement = {k: v for k, v in {**st.placement, shard: dest}.items() if k in alive}
            self._apply(_State(starts, owners, placement, _with_node(st.nodes, dest), next_auto))

    def add_node(self, node: str) -> None:
        with self._lock:
            st = self._working()
            node = _check_node("node", node)
            if node in st.nodes:
                raise DuplicateNodeError(f"node {node!r} is already in {list(st.nodes)}")
            self._apply(_State(st.starts, st.owners, st.placement, st.nodes + (node,),
                               st.next_auto))

    def remove_node(self, node: str) -> None:
        """Drop a node that holds no shard (move its shards away first)."""
        with self._lock:
            st = self._working()
            if node not in st.nodes:
                raise UnknownNodeError(f"node must be one of {list(st.nodes)}, got {node!r}")
            held = [s for s, n in st.placement.items() if n == node]
            if held:
                raise InvalidValueError(
                    f"node {node!r} must hold no shard to be removed; it holds {held}")
            self._apply(_State(st.starts, st.owners, st.placement,
                               tuple(n for n in st.nodes if n != node), st.next_auto))

    @contextmanager
    def batch(self) -> Iterator[ShardMap]:
        """Commit every change made inside as ONE new epoch at exit, or none on exception.

        Other threads keep seeing (and looking up in) the previous epoch until the exit;
        other writers wait. Batches nest: an inner batch that fails is undone alone.
        """
        with self._lock:
            outer = self._batch_depth == 0
            if outer:
                self._batch_start = self._work = self._state
                self._batch_owner = threading.get_ident()
                self._batch_ops = 0
            undo_to = self._work
            self._batch_depth += 1
            ok = False
            try:
                yield self
                ok = True
            finally:
                self._batch_depth -= 1
                if not ok:
                    self._work = undo_to
                if outer:
                    start, work, ops = self._batch_start, self._work, self._batch_ops
                    self._work = self._batch_start = None
                    self._batch_owner = 0
                    if ok and ops and start is not None and work is not None:
                        self._commit(start, work)

    # ------------------------------------------------------------------ diffs and history
    def diff(self, since_epoch: int) -> list[SliceChange]:
        """Hash ranges whose owner (shard or node) changed after ``since_epoch``.

        Raises :class:`StaleEpochError` once ``since_epoch`` is older than the kept history
        (``history_limit`` epochs; take the whole map then).
        """
        with self._lock:
            epoch = self.epoch
            since = check_int("since_epoch", since_epoch, 0, epoch)
            if since < self._history_base:
                raise StaleEpochError(
                    f"since_epoch {since} is older than the oldest epoch kept "
                    f"({self._history_base}); reload the whole map")
            records = [r for r in self._history if r[0] > since]
        return _compose(records)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, *, history: int | None = None) -> dict[str, Any]:
        """The committed map as JSON-safe data (format 1), with up to ``history`` epochs of
        change records (all kept ones by default) so a receiver can answer ``diff``."""
        with self._lock:
            st, epoch = self._state, self.epoch
            records = list(self._history)
            base = self._history_base
        if history is not None:
            check_int("history", history, 0, 1 << 30)
            base = max(base, epoch - history)
            records = [r for r in records if r[0] > base]
        return {
            "format": FORMAT,
            "name": self.name,
            "epoch": _enc(epoch),
            "nodes": list(st.nodes),
            "shards": [[s, n] for s, n in st.placement.items()],
            "slices": [[_enc(s), o] for s, o in zip(st.starts, st.owners, strict=True)],
            "next_auto": st.next_auto,
            "history_limit": self._history_limit,
            "history_base": _enc(base),
            "history": [[_enc(ep), [[_enc(c[0]), _enc(c[1]), *c[2:]] for c in ch]]
                        for ep, ch in records],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardMap:
        """Rebuild a map written by :meth:`to_dict` (validated; errors name the field)."""
        if not isinstance(d, dict):
            raise InvalidTypeError(f"d must be a dict from ShardMap.to_dict, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise InvalidValueError(f"format must be {FORMAT}, got {d.get('format')!r}")
        try:
            name = _check_shard_id("name", d["name"])
            epoch = _dec("epoch", d["epoch"], 1, 2**63 - 1)
            nodes = tuple(_check_node(f"nodes[{i}]", n) for i, n in enumerate(d["nodes"]))
            placement: dict[str, str] = {}
            for i, (sid, node) in enumerate(d["shards"]):
                placement[_check_shard_id(f"shards[{i}]", sid)] = _check_node(f"shards[{i}]", node)
                if node not in nodes:
                    raise UnknownNodeError(f"shards[{i}] is on node {node!r}, not in nodes")
            starts = tuple(_dec(f"slices[{i}]", sl[0], 0, HASH_SPACE - 1)
                           for i, sl in enumerate(d["slices"]))
            owners = tuple(sl[1] for sl in d["slices"])
            limit = check_int("history_limit", d["history_limit"], 1000, 1_000_000)
            base = _dec("history_base", d["history_base"], 0, epoch)
            records: list[tuple[int, list[_Change]]] = []
            for ep, changes in d["history"]:
                records.append((_dec("history epoch", ep, base + 1, epoch),
                                [_dec_change(c) for c in changes]))
            next_auto = check_int("next_auto", d["next_auto"], 0)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            if isinstance(exc, InvalidValueError | InvalidTypeError):
                raise
            raise InvalidValueError(f"d is not a valid ShardMap dict: {exc!r}") from None
        if len(set(nodes)) != len(nodes) or len(placement) != len(d["shards"]):
            raise InvalidValueError("nodes and shards must be unique")
        if not starts or starts[0] != 0 or any(a >= b for a, b in zip(starts, starts[1:], strict=False)):
            raise InvalidValueError("slices must start at 0 with strictly increasing starts")
        if set(owners) != set(placement):
            raise InvalidValueError("every shard must own a slice and every slice a known shard")
        if any(a == b for a, b in zip(owners, owners[1:], strict=False)):
            raise InvalidValueError("slices must not have a neighbour of the same shard")
        if [r[0] for r in records] != list(range(base + 1, epoch + 1)):
            raise InvalidValueError(f"history must hold epochs {base + 1}..{epoch} in order")
        state = _State(starts, owners, placement, nodes, next_auto)
        m = cls.__new__(cls)
        m._setup(name, state, epoch, limit, 65536)
        m._history.extend(records)
        m._history_base = base
        return m

    def copy(self) -> ShardMap:
        """An independent map with the same state, epoch, history and load sample."""
        m = type(self).from_dict(self.to_dict())
        m._load = self._load.copy()
        return m

    # ------------------------------------------------------------------ internals
    def _working(self) -> _State:
        work = self._work
        return work if self._batch_depth and work is not None else self._state

    def _apply(self, new: _State) -> None:
        if self._batch_depth:
            self._work = new
            self._batch_ops += 1
        else:
            self._commit(self._state, new)

    def _commit(self, old: _State, new: _State) -> None:
        epoch = self.epoch + 1
        table = _compile(new, epoch)
        self._history.append((epoch, _owner_changes(old, new)))
        while len(self._history) > self._history_limit:
            self._history_base = self._history.popleft()[0]
        self._state = new
        self._install_table(table)

    @staticmethod
    def _require_shard(st: _State, field: str, shard: Any) -> None:
        if not isinstance(shard, str) or shard not in st.placement:
            raise UnknownNodeError(f"{field} must be one of {list(st.placement)}, got {shard!r}")

    def _split_slice_index(self, st: _State, target: Any, at: Any) -> int:
        if isinstance(target, str):
            self._require_shard(st, "target", target)
            mine = [i for i, o in enumerate(st.owners) if o == target]
            if at is not None:
                h = check_int("at", at, 0, HASH_SPACE - 1)
                i = bisect.bisect_right(st.starts, h) - 1
                if st.owners[i] != target:
                    raise InvalidValueError(
                        f"at must lie inside a slice of shard {target!r} "
                        f"({[(st.starts[j], st.end(j)) for j in mine]}), got {h}")
                return i
            loads = self.load_by_slice() if self._view() is st else np.zeros(len(st.starts))
            if len(loads) == len(st.starts) and loads[mine].max() > 0:
                return max(mine, key=lambda j: loads[j])
            return max(mine, key=lambda j: st.end(j) - st.starts[j])
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
            raise InvalidTypeError(
                f"target must be a shard id (str) or a slice index (int), got {type(target).__name__}")
        return check_int("target", int(target), 0, len(st.starts) - 1)

    def _default_cut(self, s: int, e: int) -> int:
        if e - s < 2:
            raise InvalidValueError(f"slice [{s}, {e}) is one hash wide and cannot be split")
        cut = self._load.weighted_median(s, e)
        if cut is None:
            return s + (e - s) // 2
        return min(max(cut, s + 1), e - 1)

    @staticmethod
    def _new_shard_id(st: _State, new_shard: Any) -> tuple[str, int]:
        if new_shard is not None:
            sid = _check_shard_id("new_shard", new_shard)
            if sid in st.placement:
                raise DuplicateNodeError(f"new_shard {sid!r} already exists")
            return sid, _next_auto_after([sid], st.next_auto)
        k = st.next_auto
        while f"s{k}" in st.placement:
            k += 1
        return f"s{k}", k + 1


def _compile(st: _State, epoch: int) -> SliceTable:
    index = {s: i for i, s in enumerate(st.placement)}
    return SliceTable(
        np.array(st.starts, dtype=np.uint64),
        np.array([index[o] for o in st.owners], dtype=np.int32),
        tuple(st.placement),
        epoch,
    )



_DIM_RE = re.compile(r"^[A-Za-z0-9_\-]{1,60}$")


class ShardMaps:
    """One :class:`ShardMap` per combination of dimensions, created on first use.

    ``maps["billing", "transactional"]`` is the map of service ``billing``, message type
    ``transactional``; it is named ``f"{prefix}.billing.transactional"``, which is also the
    name to give its :class:`fastshard.shardmap_store.ShardMapStore`, so every map of the
    collection lives under one store prefix with its own epoch.
    """

    def __init__(
        self,
        *,
        dimensions: Sequence[str] = ("service", "message_type"),
        shards: int | Sequence[str] = 1,
        nodes: Sequence[str] = ("node-0",),
        prefix: str = "shardmaps",
        factory: Callable[[str], ShardMap] | None = None,
    ) -> None:
        if isinstance(dimensions, str) or not dimensions:
            raise InvalidValueError(f"dimensions must be a non-empty sequence of names, got {dimensions!r}")
        self.dimensions = tuple(str(d) for d in dimensions)
        self.prefix = _check_shard_id("prefix", prefix)
        ShardMap(shards, nodes)  # validate the defaults now, not at first use
        self._factory = factory or (lambda name: ShardMap(shards, nodes, name=name))
        self._maps: dict[tuple[str, ...], ShardMap] = {}
        self._lock = threading.Lock()

    def _key(self, dims: Any) -> tuple[str, ...]:
        key = dims if isinstance(dims, tuple) else (dims,)
        if len(key) != len(self.dimensions):
            raise InvalidValueError(
                f"key must have {len(self.dimensions)} dimensions {self.dimensions}, got {dims!r}")
        for field, v in zip(self.dimensions, key, strict=True):
            if not isinstance(v, str) or not _DIM_RE.match(v):
                raise InvalidValueError(
                    f"{field} must be 1-60 letters, digits, '_' or '-', got {v!r}")
        return key

    def name_for(self, dims: Any) -> str:
        return ".".join((self.prefix, *self._key(dims)))

    def __getitem__(self, dims: Any) -> ShardMap:
        key = self._key(dims)
        m = self._maps.get(key)
        if m is None:
            with self._lock:
                m = self._maps.get(key)
                if m is None:
                    m = self._maps[key] = self._factory(self.name_for(key))
        return m

    def get(self, dims: Any) -> ShardMap | None:
        """The map for ``dims`` if it was created, without creating it."""
        return self._maps.get(self._key(dims))

    def __contains__(self, dims: Any) -> bool:
        try:
            return self._key(dims) in self._maps
        except InvalidValueError:
            return False

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iter(list(self._maps))

    def __len__(self) -> int:
        return len(self._maps)

    def items(self) -> list[tuple[tuple[str, ...], ShardMap]]:
        return list(self._maps.items())
