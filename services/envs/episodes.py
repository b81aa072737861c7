"""Episodes over any environment: create, step (idempotent), record, close. No web code here.

The store holds the truth (`store.py`); this replica holds only a bounded cache of live simulators.
A step runs the table of DESIGN §3: `step == current` applies the action (on the cached simulator,
or on one rebuilt by replaying the recorded actions from reset); `step < current` with the recorded
action answers the recorded result; anything else is a conflict. The store's compare-and-set decides
between two replicas racing for one step; the loser drops its simulator, which has diverged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio import to_thread

from services.envs.base import EnvBusy, Environment, EnvUpstreamError, Simulator, Task, Transition, UnknownTask
from services.envs.store import EpisodeStore, StoredEpisode, StoreFull
from shared.wire import CreateEpisode, Episode, EpisodeRecord, StepResult

T = TypeVar("T")


class ServiceError(Exception):
    """A client's mistake or a refusal, with the HTTP status and error code that tell it."""

    status = 422
    code = "invalid_request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(ServiceError):
    status, code = 404, "not_found"


class StepConflict(ServiceError):
    status, code = 409, "step_conflict"


class EpisodeDone(ServiceError):
    status, code = 409, "episode_done"


class EpisodeExists(ServiceError):
    status, code = 409, "episode_exists"


class TooLarge(ServiceError):
    status, code = 413, "too_large"


class AtCapacity(ServiceError):
    status, code = 429, "at_capacity"


class VersionMismatch(ServiceError):
    status, code = 409, "version_mismatch"


class Busy(ServiceError):
    status, code = 503, "busy"


class Upstream(ServiceError):
    status, code = 502, "upstream_error"


class ReplayDiverged(ServiceError):
    status, code = 500, "replay_diverged"


@dataclass
class _Live:
    simulator: Simulator
    steps: int
    """Actions applied to this simulator since reset."""


class SimulatorCache:
    """Live simulators by episode id, least recently used evicted (and closed) beyond `capacity`.

    Only touched from the event loop (and `Simulator.close` is quick).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._live: OrderedDict[str, _Live] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    def take(self, episode_id: str) -> _Live | None:
        """Remove and return the live simulator of an episode (the caller owns it until `put`)."""
        return self._live.pop(episode_id, None)

    def put(self, episode_id: str, live: _Live) -> list[_Live]:
        """Keep `live`; return the evicted entries, for the caller to close."""
        self._live[episode_id] = live
        self._live.move_to_end(episode_id)
        evicted = []
        while len(self._live) > self.capacity:
            _, old = self._live.popitem(last=False)
            evicted.append(old)
        return evicted

    def drain(self) -> list[_Live]:
        entries = list(self._live.values())
        self._live.clear()
        return entries


def _step_result(episode_id: str, transition: Transition, step: int, max_steps: int) -> StepResult:
    truncated = not transition.done and step >= max_steps
    return StepResult(
        episode_id=episode_id,
        observation=transition.observation,
        reward=transition.reward,
        done=transition.done or truncated,
        truncated=truncated,
        won=transition.won,
        admissible_actions=transition.admissible_actions,
        step=step,
        info=transition.info,
    )


class EpisodeService:
    """Episodes of several environments over one store."""

    def __init__(
        self,
        envs: dict[str, Environment],
        store: EpisodeStore,
        *,
        live_cache_size: int = 64,
        sim_threads: int = 8,
        max_action_bytes: int = 4096,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.envs = envs
        self.store = store
        self.max_action_bytes = max_action_bytes
        self.caches = {name: SimulatorCache(live_cache_size) for name in envs}
        self._limiter = anyio.CapacityLimiter(sim_threads)
        # Steps of one episode run one at a time on this replica; a lock lives while it is wanted.
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._on_event = on_event or (lambda env, event: None)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await to_thread.run_sync(fn, *args, limiter=self._limiter)
        except EnvBusy as e:
            raise Busy(str(e)) from None
        except EnvUpstreamError as e:
            raise Upstream(str(e)) from None

    def env(self, name: str) -> Environment:
        env = self.envs.get(name)
        if env is None:
            raise NotFound(f"no env {name!r} on this server; envs: {sorted(self.envs)}")
        return env

    def resolve_task(self, env: Environment, request: CreateEpisode) -> Task:
        try:
            if request.task_id is not None:
                if request.split is not None or request.index is not None:
                    raise ServiceError("give either task_id or split and index, not both")
                return env.task_by_id(request.task_id)
            if request.split is None or request.index is None:
                raise ServiceError("give task_id, or split and index")
            return env.task(request.split, request.index)
        except UnknownTask as e:
            raise NotFound(str(e)) from None

    # ---------------------------------------------------------------------------------------
    # create

    async def create(self, env_name: str, request: CreateEpisode) -> Episode:
        env = self.env(env_name)
        task = self.resolve_task(env, request)
        max_steps = request.max_steps or env.max_steps
        episode_id = request.episode_id or uuid.uuid4().hex
        if request.episode_id is not None:
            existing = await self.store.get(episode_id)
            if existing is not None:
                return self._existing(existing, env_name, task, max_steps)

        simulator = await self.run(env.open, task)
        try:
            opening = await self.run(simulator.reset)
        except BaseException:
            simulator.close()
            raise
        now = time.time()
        episode = Episode(
            episode_id=episode_id,
            env=env.name,
            task_id=task.task_id,
            task=opening.task,
            observation=opening.observation,
            admissible_actions=opening.admissible_actions,
            step=0,
            done=False,
            info=opening.info,
        )
        head = episode.model_dump() | {
            "split": task.split,
            "index": task.index,
            "backend": env.backend,
            "version": env.version,
            "max_steps": max_steps,
            "created_at": now,
            "audit": opening.audit,
        }
        try:
            created = await self.store.create(episode_id, head)
        except StoreFull:
            simulator.close()
            raise AtCapacity(f"the store holds {self.store.capacity} open episodes; close some or wait") from None
        except BaseException:  # the store is down, the request cancelled: the simulator goes back, never kept
            simulator.close()
            raise
        if not created:  # a concurrent create with the same client-chosen id won
            simulator.close()
            existing = await self.store.get(episode_id)
            if existing is None:
                raise NotFound(f"episode {episode_id} was closed while being created")
            return self._existing(existing, env_name, task, max_steps)
        await self._keep(env.name, episode_id, _Live(simulator, 0))
        self._on_event(env.name, "created")
        return episode

    def _existing(self, stored: StoredEpisode, env_name: str, task: Task, max_steps: int) -> Episode:
        head = stored.head
        if head["env"] != env_name or head["task_id"] != task.task_id or head["max_steps"] != max_steps:
            raise EpisodeExists(f"episode {head['episode_id']} exists with another env, task or step limit")
        return Episode.model_validate(head)

    async def _keep(self, env_name: str, episode_id: str, live: _Live) -> None:
        for old in self.caches[env_name].put(episode_id, live):
            old.simulator.close()
            self._on_event(env_name, "evicted")

    # ---------------------------------------------------------------------------------------
    # step

    def check_action(self, action: str) -> None:
        if len(action.encode()) > self.max_action_bytes:
            raise TooLarge(f"action of {len(action.encode())} bytes exceeds the limit of {self.max_action_bytes}")

    @contextlib.asynccontextmanager
    async def _episode_lock(self, episode_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(episode_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[episode_id]

    async def step(self, episode_id: str, action: str, step: int) -> StepResult:
        self.check_action(action)
        async with self._episode_lock(episode_id):
            stored = await self.store.get(episode_id)
            if stored is None:
                raise NotFound(f"no episode {episode_id} (never created, closed, or expired)")
            answer = self._recorded(stored, episode_id, action, step)
            if answer is not None:
                return answer
            return await self._apply(stored, episode_id, action, step)

    def _recorded(self, stored: StoredEpisode, episode_id: str, action: str, step: int) -> StepResult | None:
        """The step table, for every row but 'apply it'."""
        current = len(stored.steps)
        if step < current:
            recorded = stored.steps[step]
            if recorded["action"] == action:
                return StepResult.model_validate(recorded["result"])
            raise StepConflict(
                f"step {step} of episode {episode_id} was {recorded['action']!r}, not {action!r}",
                current_step=current,
            )
        if stored.done:  # any index at or past the end
            raise EpisodeDone(f"episode {episode_id} has ended after {current} steps", current_step=current)
        if step > current:
            raise StepConflict(f"episode {episode_id} is at step {current}, not {step}", current_step=current)
        return None

    async def _apply(self, stored: StoredEpisode, episode_id: str, action: str, step: int) -> StepResult:
        head = stored.head
        env = self.env(head["env"])
        if head["version"] != env.version or head["backend"] != env.backend:
            raise VersionMismatch(
                f"episode {episode_id} was made by {head['backend']} {head['version']}, "
                f"this server runs {env.backend} {env.version}"
            )
        cache = self.caches[env.name]
        live = cache.take(episode_id)
        if live is None or live.steps != step:
            if live is not None:
                live.simulator.close()
            live = await self._replay(env, stored)
        try:
            transition = await self.run(live.simulator.step, action)
            live.steps += 1
            result = _step_result(episode_id, transition, step + 1, head["max_steps"])
            entry = {"action": action, "result": result.model_dump()}
            if transition.audit:
                entry["audit"] = transition.audit
            appended = await self.store.append(episode_id, step, entry, result.done)
        except BaseException:  # the simulator is ahead of the record, or in an unknown state: never reuse it
            live.simulator.close()
            raise
        if appended.ok:
            await self._keep(env.name, episode_id, live)
            self._on_event(env.name, "step")
            return result
        # Another replica applied this step first: our simulator has diverged from the record.
        live.simulator.close()
        fresh = await self.store.get(episode_id)
        if fresh is None:
            raise NotFound(f"no episode {episode_id} (closed or expired during the step)")
        answer = self._recorded(fresh, episode_id, action, step)
        if answer is None:  # pragma: no cover - the store refused, so the table must answer
            raise StepConflict(f"episode {episode_id} changed during the step", current_step=len(fresh.steps))
        return answer

    async def _replay(self, env: Environment, stored: StoredEpisode) -> _Live:
        """Rebuild the simulator of an episode: reset, then every recorded action."""
        head = stored.head
        task = env.task_by_id(head["task_id"])
        self._on_event(env.name, "replay")

        def rebuild() -> Simulator:
            simulator = env.open(task)
            try:
                opening = simulator.reset()
                if opening.observation != head["observation"]:
                    raise ReplayDiverged(f"episode {head['episode_id']}: reset gave another observation")
                for i, recorded in enumerate(stored.steps):
                    transition = simulator.step(recorded["action"])
                    if transition.observation != recorded["result"]["observation"]:
                        raise ReplayDiverged(f"episode {head['episode_id']}: replay diverged at step {i}")
            except BaseException:
                simulator.close()
                raise
            return simulator

        return _Live(await self.run(rebuild), len(stored.steps))

    # ---------------------------------------------------------------------------------------
    # record, close

    async def record(self, episode_id: str) -> EpisodeRecord:
        stored = await self.store.get(episode_id)
        if stored is None:
            raise NotFound(f"no episode {episode_id} (never created, closed, or expired)")
        head = stored.head
        results = [StepResult.model_validate(s["result"]) for s in stored.steps]
        audit = dict(head.get("audit", {}))
        for s in stored.steps:
            audit |= s.get("audit", {})
        return EpisodeRecord.model_validate(
            head
            | audit
            | {
                "audit": audit,
                "actions": [s["action"] for s in stored.steps],
                "results": results,
                "step": len(results),
                "done": stored.done,
                "updated_at": stored.updated_at,
            }
        )

    async def delete(self, episode_id: str) -> None:
        stored = await self.store.get(episode_id)
        deleted = await self.store.delete(episode_id)
        if stored is not None:
            live = self.caches[stored.head["env"]].take(episode_id) if stored.head["env"] in self.caches else None
            if live is not None:
                live.simulator.close()
        if not deleted:
            raise NotFound(f"no episode {episode_id} (never created, closed, or expired)")

    async def close(self) -> None:
        for cache in self.caches.values():
            for live in cache.drain():
                live.simulator.close()
        for env in self.envs.values():
            env.close()
