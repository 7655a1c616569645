"""Sharing one shard map between many processes through a backend's versioned key-value store.

The map is stored under ``shardmap/<name>`` as compact JSON of :meth:`ShardMap.to_dict`.
A change is a compare-and-set from the stored epoch N to the writer's newer epoch (exactly one
of several concurrent writers that started from N wins), followed by a notification on the
channel ``shardmap.<name>``. Routers learn a newer epoch from the notification, by polling,
or when they see a message stamped with an epoch newer than their own
(:meth:`ShardMapStore.ensure_epoch`), and can then ask the new map ``diff(old_epoch)``.

Works on any backend with the ``kv`` capability (memory, Redis, PostgreSQL, ...), using only
the public :class:`fastshard.backends.Backend` API.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fastshard.backends.base import (
    KV,
    Backend,
    Subscription,
    UnsupportedOperationError,
    validate_name,
)
from fastshard.errors import (
    BackendError,
    FastshardError,
    InvalidTypeError,
    InvalidValueError,
    StaleEpochError,
    check_finite,
    check_int,
)
from fastshard.shardmap import ShardMap
from fastshard.shardmap_slices import _dec

__all__ = ["ShardMapStore", "ShardMapWatcher"]

log = logging.getLogger(__name__)


class ShardMapStore:
    """The shard map called ``name`` on ``backend``.

    ``history`` caps how many epochs of change records each published map carries (all the
    map keeps by default, at most its ``history_limit``); routers further behind than that
    take the whole new map instead of a diff.
    """

    def __init__(self, backend: Backend, name: str, *, history: int | None = None) -> None:
        if not isinstance(backend, Backend):
            raise InvalidTypeError(f"backend must be a fastshard Backend, got {type(backend).__name__}")
        if KV not in backend.capabilities:
            raise UnsupportedOperationError(
                f"backend {backend.name!r} offers {sorted(backend.capabilities)}; a shard map store "
                "needs 'kv' (use e.g. Redis or PostgreSQL for metadata)"
            )
        self.backend = backend
        self.name = validate_name("name", name)
        self.key = f"shardmap/{name}"
        self.channel = validate_name("name", f"shardmap.{name}")
        self.history = None if history is None else check_int("history", history, 0, 1_000_000)

    def __repr__(self) -> str:
        return f"ShardMapStore({self.backend.name!r}, {self.name!r})"

    # ------------------------------------------------------------------ reading
    def _read(self) -> tuple[Any, int, int]:
        """``(parsed JSON, its epoch, kv version)`` of the stored map; ``(None, 0, 0)`` if none.

        Only the JSON is parsed here: building the ``ShardMap`` (slices, compiled lookup,
        history) costs ~0.5 ms for a 64-shard map, and the callers that only compare epochs
        (``epoch``, ``publish``, ``refresh`` of a map that is up to date) run often, e.g.
        every ``Router.sync``."""
        entry = self.backend.kv_get(self.key)
        if entry is None:
            return None, 0, 0
        try:
            data = json.loads(entry.value)
            return data, _dec("epoch", data["epoch"], 1, 2**63 - 1), entry.version
        except (ValueError, KeyError, TypeError, FastshardError) as exc:
            raise self._invalid(entry.version, exc) from exc

    def _build(self, data: Any, version: int) -> ShardMap:
        try:
            return ShardMap.from_dict(data)
        except (ValueError, FastshardError) as exc:
            raise self._invalid(version, exc) from exc

    def _invalid(self, version: int, exc: Exception) -> BackendError:
        return BackendError(f"stored shard map {self.name!r} (key {self.key!r}, version {version}) "
                            f"is not a valid map: {exc!r}")

    def load(self) -> ShardMap | None:
        """The stored map, or ``None`` if nothing was published yet."""
        data, _, version = self._read()
        return None if data is None else self._build(data, version)

    def epoch(self) -> int:
        """The stored epoch (0 if nothing was published yet); reads it without building the map."""
        return self._read()[1]

    def newer_than(self, epoch: int) -> ShardMap | None:
        """The stored map if its epoch is above ``epoch`` (built only then), else ``None``."""
        data, stored, version = self._read()
        return self._build(data, version) if data is not None and stored > epoch else None

    # ------------------------------------------------------------------ writing
    def publish(self, new_map: ShardMap, expected_epoch: int) -> bool:
        """Store ``new_map`` if the stored epoch is still ``expected_epoch`` (0: none stored).

        Returns ``False`` when another writer got there first (load, re-plan, retry).
        ``new_map.epoch`` must be newer than ``expected_epoch``. After a successful write the
        new epoch is announced on :attr:`channel`; a failed announcement is logged, not raised
        (the write stands, and pollers still find it).
        """
        if not isinstance(new_map, ShardMap):
            raise InvalidTypeError(f"new_map must be a ShardMap, got {type(new_map).__name__}")
        expected = check_int("expected_epoch", expected_epoch, 0, 2**63 - 1)
        if new_map.epoch <= expected:
            raise InvalidValueError(
                f"new_map.epoch must be > expected_epoch ({expected}), got {new_map.epoch}")
        payload = json.dumps(new_map.to_dict(history=self.history), separators=(",", ":"))
        _, stored_epoch, version = self._read()
        if stored_epoch != expected:
            return False
        # kv_cas on the entry's version: exactly one of the writers that read `version` wins
        if self.backend.kv_cas(self.key, payload, version) is None:
            return False
        note = json.dumps({"name": self.name, "epoch": new_map.epoch}, separators=(",", ":"))
        try:
            self.backend.notify(self.channel, note)
        except BackendError as exc:
            log.warning("shard map %r epoch %d stored but not announced: %s",
                        self.name, new_map.epoch, exc)
        return True

    # ------------------------------------------------------------------ following
    def refresh(self, local_map: ShardMap) -> ShardMap:
        """The stored map if it is newer than ``local_map``, else ``local_map`` itself."""
        if not isinstance(local_map, ShardMap):
            raise InvalidTypeError(f"local_map must be a ShardMap, got {type(local_map).__name__}")
        return self.newer_than(local_map.epoch) or local_map

    def ensure_epoch(self, local_map: ShardMap, epoch: int, *, timeout: float = 1.0) -> ShardMap:
        """A map at ``epoch`` or newer, for a router that saw a message stamped ``epoch``.

        Returns ``local_map`` if it is new enough; otherwise reloads, polling for up to
        ``timeout`` seconds (a reader can race the write it heard about), then raises
        :class:`StaleEpochError`.
        """
        want = check_int("epoch", epoch, 0, 2**63 - 1)
        wait = check_finite("timeout", timeout)
        if wait < 0:
            raise InvalidValueError(f"timeout must be >= 0 seconds, got {timeout}")
        if local_map.epoch >= want:
            return local_map
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            m = self.refresh(local_map)
            if m.epoch >= want:
                return m
            if time.monotonic() >= deadline:
                raise StaleEpochError(
                    f"shard map {self.name!r} is stored at epoch {m.epoch}, but epoch {want} "
                    f"was seen; it did not appear within {wait} s")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.2)

    def watch(self, local_map: ShardMap | None = None, *, poll_interval: float = 5.0) -> ShardMapWatcher:
        """Follow the stored map: see :class:`ShardMapWatcher`."""
        return ShardMapWatcher(self, local_map, poll_interval)


class ShardMapWatcher:
    """Learns newer epochs of a stored map by notification, and by polling as a safety net.

    Subscribes before its first load, so no epoch published after ``watch()`` is missed;
    notifications are at most once, so it also reloads every ``poll_interval`` seconds.

    >>> with store.watch(local) as w:
    ...     newer = w.poll(timeout=1.0)           # None if nothing new within 1 s
    ...     if newer: moved = newer.diff(local.epoch)
    """

    def __init__(self, store: ShardMapStore, local_map: ShardMap | None, poll_interval: float) -> None:
        interval = check_finite("poll_interval", poll_interval)
        if not 0.001 <= interval <= 3600:
            raise InvalidValueError(f"poll_interval must be in [0.001, 3600] seconds, got {poll_interval}")
        if local_map is not None and not isinstance(local_map, ShardMap):
            raise InvalidTypeError(f"local_map must be a ShardMap or None, got {type(local_map).__name__}")
        self.store = store
        self.poll_interval = interval
        self._sub: Subscription = store.backend.subscribe(store.channel)
        try:
            stored = store.load()
        except BaseException:
            self._sub.close()
            raise
        self._last_poll = time.monotonic()
        #: the newest map known to this watcher (``None`` until one is published)
        self.current: ShardMap | None = local_map
        if stored is not None and (local_map is None or stored.epoch > local_map.epoch):
            self.current = stored

    @property
    def epoch(self) -> int:
        return 0 if self.current is None else self.current.epoch

    def poll(self, timeout: float = 0.0) -> ShardMap | None:
        """Wait up to ``timeout`` s for a newer epoch; return the newer map (also kept as
        :attr:`current`) or ``None``."""
        wait = check_finite("timeout", timeout)
        if wait < 0:
            raise InvalidValueError(f"timeout must be >= 0 seconds, got {timeout}")
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            if now - self._last_poll >= self.poll_interval:
                newer = self._reload()
                if newer is not None:
                    return newer
            now = time.monotonic()
            remaining = deadline - now
            next_poll = self._last_poll + self.poll_interval - now
            note = self._sub.get(timeout=max(0.0, min(remaining, next_poll)))
            if note is not None and _announced_epoch(note) > self.epoch:
                newer = self._reload()
                if newer is not None:
                    return newer
            if time.monotonic() >= deadline and note is None:
                return None

    def _reload(self) -> ShardMap | None:
        self._last_poll = time.monotonic()
        stored = self.store.newer_than(self.epoch)
        if stored is not None:
            self.current = stored
        return stored

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> ShardMapWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _announced_epoch(note: bytes) -> int:
    # A notification we cannot read still means "something changed": treat it as newer.
    try:
        data: Any = json.loads(note)
        return int(data["epoch"])
    except (ValueError, KeyError, TypeError):
        return 2**63 - 1
