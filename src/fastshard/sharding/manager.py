"""ShardManager: predicted load + capacity -> Plan -> one new shard-map epoch.

``adjust_sharding`` validates a :class:`LoadForecast` (per-slice predicted load, point and
upper bound, aligned with the map's current slices), turns it into arrays and lets the
planning kernel (:mod:`fastshard.sharding.planner`) choose actions. ``apply`` then

1. refuses a plan computed against an epoch that is no longer current;
2. creates the backend queues of every new shard (so a producer never routes to a queue that
   does not exist), deleting them again if the map change fails;
3. changes the map inside ``ShardMap.batch()`` (one epoch) inside ``Router.resharding()``
   (producers paused for the switch, drain fences installed from ``diff``);
4. remembers which shards changed (cooldowns) and which queues were retired; retired queues
   are deleted by :meth:`collect_retired` once drained.

A manager can own several maps, one per message type (service): ``adjust_sharding(load,
message_type="payments")`` for a type it has never seen plans a :class:`CreateService`.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastshard.backends.base import Backend
from fastshard.errors import (
    EpochConflictError,
    InvalidTypeError,
    InvalidValueError,
    UnknownNodeError,
    check_positive,
)
from fastshard.sharding.plan import Action, CreateService, Merge, Plan, Reassign
from fastshard.sharding.planner import MapView, PlannerConfig, plan_round
from fastshard.sharding.router import Router, queue_name

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadForecast:
    """Predicted load per slice of one map epoch (same order as ``ShardMap.slices``).

    ``upper`` is the bound the planner protects against (e.g. the 90% forecast quantile, the
    largest over the next h steps); ``point`` the central forecast (its largest over the
    same steps: what triggers and sizes overload relief); ``expected`` the central forecast
    of the *next* interval, what rebalancing evens out (default: ``point``); ``measured``
    the load measured in the last interval (optional: only used to tell proactive actions
    from reactive ones).
    ``hot_hashes``/``hot_upper`` name single keys with their own predicted upper bound, for
    hot-key isolation. ``key_hashes``/``key_load`` (optional): a sample of keys with their
    measured load (e.g. ``ShardMap.record_load``'s reservoir) so cuts fall between real keys
    instead of assuming load is uniform inside a slice. For a message type the manager does
    not know yet, give one-element arrays: the service's total predicted load.
    """

    epoch: int
    upper: np.ndarray
    point: np.ndarray | None = None
    measured: np.ndarray | None = None
    expected: np.ndarray | None = None
    hot_hashes: Sequence[int] = ()
    hot_upper: np.ndarray | None = None
    key_hashes: np.ndarray | None = None
    key_load: np.ndarray | None = None

    @classmethod
    def from_array(cls, epoch: int, load: Any) -> LoadForecast:
        """One array used as point and upper bound (what the reactive policy has)."""
        arr = np.asarray(load, dtype=np.float64)
        return cls(epoch=epoch, upper=arr, point=arr)


def _check_load(field: str, arr: Any, n: int) -> np.ndarray:
    try:
        a = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{field} must be an array of numbers, got {type(arr).__name__}") from None
    if a.shape != (n,):
        raise InvalidValueError(f"{field} must have shape ({n},) (one value per slice), got {a.shape}")
    if not np.all(np.isfinite(a)) or (a < 0).any():
        raise InvalidValueError(f"{field} must be finite and >= 0 for every slice")
    return a


class _Service:
    def __init__(self, shard_map: Any, router: Router | None) -> None:
        self.map = shard_map
        self.router = router
        #: round of the last structural change (created, split from, merged, moved) per shard
        self.last_changed: dict[str, int] = {}
        self.last_split = -(10**9)  # round of the last split: no retirement starts soon after
        self.retiring: list[str] = []  # shards being emptied over several rounds
        self.ever_named: set[str] = set(shard_map.shards)


class ShardManager:
    """Plans and applies shard changes for one shard map (or one per message type).

    ``capacity``: load one shard can carry per interval — a number for every shard, a
    mapping ``{shard: capacity}`` (shards not named get ``default_capacity``), or a callable
    ``shard -> capacity``. ``health`` (a :class:`~fastshard.sharding.health.HealthMonitor`)
    scales capacity by shard health; a failed shard is drained into a neighbour. ``store``
    (a ``ShardMapStore``) makes every apply a compare-and-set on the shared map first.
    """

    def __init__(
        self,
        shard_map: Any,
        capacity: float | Mapping[str, float] | Callable[[str], float],
        *,
        backend: Backend | None = None,
        router: Router | None = None,
        config: PlannerConfig | None = None,
        health: Any = None,
        default_capacity: float | None = None,
        queue_prefix: str = "fs",
        store: Any = None,
    ) -> None:
        self.config = config or PlannerConfig()
        if not isinstance(self.config, PlannerConfig):
            raise InvalidTypeError(f"config must be a PlannerConfig, got {type(config).__name__}")
        if isinstance(capacity, (int, float)) and not isinstance(capacity, bool):
            c = check_positive("capacity", capacity)
            self._capacity: Callable[[str], float] = lambda _s: c
            default_capacity = c if default_capacity is None else default_capacity
        elif isinstance(capacity, Mapping):
            caps = {k: check_positive(f"capacity[{k!r}]", v) for k, v in capacity.items()}
            if default_capacity is None:
                raise InvalidValueError("default_capacity is required when capacity is a mapping")
            dflt = check_positive("default_capacity", default_capacity)
            self._capacity = lambda s: caps.get(s, dflt)
        elif callable(capacity):
            self._capacity = capacity
        else:
            raise InvalidTypeError(
                f"capacity must be a number, a mapping or a callable, got {type(capacity).__name__}"
            )
        self.default_capacity = check_positive(
            "default_capacity", default_capacity if default_capacity is not None else 1.0
        )
        if router is not None and router.shard_map is not shard_map:
            raise InvalidValueError("router must route the same shard_map object the manager changes")
        if router is not None and backend is None:
            backend = router.backend
        self.backend = backend
        self.health = health
        #: a fastshard.shardmap_store.ShardMapStore: when set, every apply is first published
        #: with compare-and-set (epoch N -> N+1), so of several managers only one wins a round
        self.store = store
        self.queue_prefix = queue_prefix
        self.round = 0
        self._services: dict[str | None, _Service] = {None: _Service(shard_map, router)}
        self._counter = itertools.count(1)
        self.history: list[Plan] = []  # applied plans, oldest first

    # ------------------------------------------------------------------ services
    def shard_map(self, message_type: str | None = None) -> Any:
        return self._service(message_type).map

    def router(self, message_type: str | None = None) -> Router | None:
        return self._service(message_type).router

    @property
    def message_types(self) -> list[str | None]:
        return list(self._services)

    def _service(self, message_type: str | None) -> _Service:
        try:
            return self._services[message_type]
        except KeyError:
            raise UnknownNodeError(
                f"message_type must be one of {list(self._services)}, got {message_type!r}"
            ) from None

    def capacity_of(self, shard: str) -> float:
        return float(self._capacity(shard))

    # ------------------------------------------------------------------ planning
    def adjust_sharding(self, predicted_load: LoadForecast | Any, message_type: str | None = None) -> Plan:
        """The plan for this round; nothing is changed until :meth:`apply`."""
        t0 = time.perf_counter()
        if message_type is not None and not isinstance(message_type, str):
            raise InvalidTypeError(f"message_type must be a str or None, got {type(message_type).__name__}")
        if message_type not in self._services:
            return self._plan_new_service(predicted_load, message_type, t0)
        svc = self._services[message_type]
        view = MapView.from_map(svc.map)
        if not isinstance(predicted_load, LoadForecast):
            predicted_load = LoadForecast.from_array(view.epoch, predicted_load)
        fc = predicted_load
        if fc.epoch != view.epoch:
            raise EpochConflictError(
                f"predicted_load is aligned with epoch {fc.epoch} but the map is at epoch "
                f"{view.epoch}; recompute it against the current slices"
            )
        n = view.n_slices
        upper = _check_load("predicted_load.upper", fc.upper, n)
        measured = None if fc.measured is None else _check_load("predicted_load.measured", fc.measured, n)
        point = None
        if fc.point is not None:
            point = _check_load("predicted_load.point", fc.point, n)
            if (point > upper * (1 + 1e-9) + 1e-9).any():
                raise InvalidValueError("predicted_load.point must be <= predicted_load.upper for every slice")
        expected = None if fc.expected is None else _check_load("predicted_load.expected", fc.expected, n)
        hot_upper = None
        if len(fc.hot_hashes):
            hot_upper = _check_load("predicted_load.hot_upper", fc.hot_upper, len(fc.hot_hashes))
            for h in fc.hot_hashes:
                if isinstance(h, bool) or not 0 <= int(h) < 2**64:
                    raise InvalidValueError(f"hot_hashes must be 64-bit hashes in [0, 2**64), got {h!r}")

        key_hashes = key_load = None
        if fc.key_hashes is not None:
            key_hashes = np.asarray(fc.key_hashes)
            if key_hashes.dtype != np.uint64 or key_hashes.ndim != 1:
                raise InvalidValueError("predicted_load.key_hashes must be a 1-d uint64 array of key hashes")
            key_load = _check_load("predicted_load.key_load", fc.key_load, key_hashes.size)
        capacity = np.array([self.capacity_of(s) for s in view.shards], dtype=np.float64)
        failed = np.zeros(len(view.shards), dtype=bool)
        if self.health is not None:
            factor = np.array([self.health.capacity_factor(self._queue(svc, s)) for s in view.shards])
            failed = factor <= 0.0
            capacity = capacity * np.where(failed, 1.0, factor)
        cd = self.config.cooldown_rounds
        cooling = np.array(
            [self.round - svc.last_changed.get(s, -(10**9)) < cd for s in view.shards], dtype=bool
        )
        result = plan_round(
            view, upper, capacity,
            config=self.config, cooling=cooling, failed=failed,
            new_name=lambda kind: self._fresh_name(svc, kind),
            measured=measured, point=point, expected=expected,
            hot_hashes=list(fc.hot_hashes), hot_upper=hot_upper,
            key_hashes=key_hashes, key_load=key_load,
            retiring=svc.retiring, scale_cooldown=self.round - svc.last_split < cd,
            new_capacity=self.default_capacity,
        )
        return Plan(
            message_type=message_type,
            base_epoch=view.epoch,
            actions=tuple(result.actions),
            moved_fraction=result.moved_fraction,
            moved_load=result.moved_load,
            relief_load=result.relief_load,
            min_load_needed=result.min_load_needed,
            planning_seconds=time.perf_counter() - t0,
            skipped=result.skipped,
            retiring=tuple(result.retiring),
        )

    def _plan_new_service(self, predicted_load: Any, message_type: str | None, t0: float) -> Plan:
        up = predicted_load.upper if isinstance(predicted_load, LoadForecast) else predicted_load
        total = float(np.sum(_check_load("predicted_load", np.atleast_1d(up), np.atleast_1d(up).size)))
        if message_type is None or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}", message_type):
            raise InvalidValueError(
                "message_type for a new service must be 1-64 characters of letters, digits and "
                f"'._:-', got {message_type!r}"
            )
        per_shard = self.config.target_fill * self.default_capacity
        shards = max(self.config.min_shards, math.ceil(total / per_shard) if total > 0 else 1)
        nodes = tuple(self._services[None].map.nodes)
        act = CreateService(message_type, shards, nodes, total,
                            reason=f"new service predicted at {total:.1f} load")
        return Plan(message_type, 0, (act,), planning_seconds=time.perf_counter() - t0)

    def _fresh_name(self, svc: _Service, kind: str) -> str:
        prefix = "h" if kind == "hot" else "s"
        while True:
            name = f"{prefix}{next(self._counter)}"
            if name not in svc.ever_named:
                svc.ever_named.add(name)
                return name

    def _queue(self, svc: _Service, shard: str) -> str:
        if svc.router is not None:
            return svc.router.queue_of(shard)
        return queue_name(self.queue_prefix, svc.map.name, shard)

    # ------------------------------------------------------------------ applying
    def apply(self, plan: Plan) -> int:
        """Apply ``plan`` as one new epoch of its map; returns that epoch (unchanged if empty)."""
        if not isinstance(plan, Plan):
            raise InvalidTypeError(f"plan must be a Plan, got {type(plan).__name__}")
        if plan.actions and isinstance(plan.actions[0], CreateService):
            return self._create_service(plan.actions[0])
        svc = self._service(plan.message_type)
        m = svc.map
        if plan.base_epoch != m.epoch:
            raise EpochConflictError(
                f"plan was computed against epoch {plan.base_epoch}; the map is at {m.epoch}"
            )
        self.round += 1
        svc.retiring = [x for x in plan.retiring if x in m.shards]
        if not plan.actions:
            return m.epoch
        before = set(m.shards)
        new_shards = sorted({a.to_shard for a in plan.actions if isinstance(a, Reassign)} - before)
        created: list[str] = []
        try:
            # Queues first: once the new epoch is visible (locally or through the store),
            # producers in any process may route to the new shards at once, and a message
            # published to a queue that does not exist yet could be lost.
            if self.backend is not None:
                for s in new_shards:
                    q = self._queue(svc, s)
                    self.backend.create_queue(q)
                    created.append(q)
            if self.store is not None and plan.message_type is None:
                # build the next epoch on a copy and publish it first: a lost compare-and-set
                # changes nothing here (the caller reloads, re-plans and retries)
                candidate = m.copy()
                with candidate.batch():
                    _apply_actions(plan.actions, candidate)
                if not self.store.publish(candidate, m.epoch):
                    raise EpochConflictError(
                        f"another manager published epoch {m.epoch + 1} of shard map {m.name!r} "
                        "first; reload it (ShardMapStore.refresh), re-plan and apply again"
                    )
            router = svc.router
            if router is not None:
                with router.resharding(), m.batch():
                    _apply_actions(plan.actions, m)
            else:
                with m.batch():
                    _apply_actions(plan.actions, m)
        except BaseException:
            for q in created:  # the map change did not happen: take the new queues back
                try:
                    self.backend.delete_queue(q)  # type: ignore[union-attr]
                except Exception as cleanup:  # noqa: BLE001 - the original error is re-raised
                    _log.warning("could not delete queue %r after a failed apply: %s", q, cleanup)
            raise
        for a in plan.actions:
            for s in _touched(a):
                svc.last_changed[s] = self.round
            if isinstance(a, Reassign) and a.kind == "split":
                svc.last_split = self.round
        svc.retiring = [x for x in plan.retiring if x in m.shards]
        if svc.router is None and self.backend is not None:
            # without a router there is no fence to wait for: retire at once
            for s in before - set(m.shards):
                self.backend.delete_queue(self._queue(svc, s))
        elif svc.router is not None:
            svc.router.share_open_fences()  # for routers that start after this epoch
        self.history.append(plan)
        return int(m.epoch)

    def collect_retired(self, group: str = "fastshard") -> list[str]:
        """Delete the queues of retired shards that are fully drained; returns their names."""
        done: list[str] = []
        for svc in self._services.values():
            r = svc.router
            if r is None or r.backend is None:
                continue
            for q in sorted(r.retired_queues):
                if r.drained(q, group):
                    r.backend.delete_queue(q)
                    r.retired_queues.discard(q)
                    r.fences.forget(q)
                    done.append(q)
            r.share_open_fences()
        return done

    def _create_service(self, act: CreateService) -> int:
        if act.message_type in self._services:
            raise InvalidValueError(f"message_type {act.message_type!r} already has a shard map")
        from fastshard.shardmap import ShardMap

        m = ShardMap(list(act.shard_names), list(act.nodes), name=act.message_type)
        base = self._services[None].router
        router = Router(m, self.backend, queue_prefix=base.queue_prefix if base else self.queue_prefix) \
            if self.backend is not None else None
        self._services[act.message_type] = _Service(m, router)
        return int(m.epoch)


def _apply_actions(actions: Sequence[Action], shard_map: Any) -> None:
    for a in actions:
        if isinstance(a, CreateService):
            raise InvalidValueError("a CreateService action must be the only action of its plan")
        a.apply_to(shard_map)


def _touched(action: Action) -> tuple[str, ...]:
    """Shards whose structure an action changes, for the cooldown: a shard just created
    (split, isolated key) is not retired at once, a shard being retired or merged and a
    moved shard are not changed again at once. Shards that merely give or take load
    (rebalancing, relief into an existing shard, receiving a retiring shard's ranges) do not
    count: what they carry changes, not which shards exist or where."""
    if isinstance(action, Reassign):
        if action.kind in ("split", "isolate"):
            return (action.to_shard,)
        if action.kind == "merge":
            return (action.from_shard,)
        if action.kind == "drain":
            return action.shards
        return ()
    if isinstance(action, Merge):
        return action.shards
    return getattr(action, "shards", ()) if not isinstance(action, CreateService) else ()
