"""The episode service never leaks a live simulator: one taken from the cache for a step is put
back or closed, whether the step succeeds, the simulator raises, or the store's append fails."""

from __future__ import annotations

from typing import Any

import pytest

from services.envs.base import Simulator, Task, Transition
from services.envs.counter import CounterEnvironment, CounterSimulator
from services.envs.episodes import EpisodeService
from services.envs.store import Appended, MemoryEpisodeStore
from shared.wire import CreateEpisode


class Counted(CounterSimulator):
    alive = 0

    def __init__(self, target: int) -> None:
        super().__init__(target)
        Counted.alive += 1

    def step(self, action: str) -> Transition:
        if action == "boom":
            raise RuntimeError("the simulator broke")
        return super().step(action)

    def close(self) -> None:
        Counted.alive -= 1


class CountedEnvironment(CounterEnvironment):
    def open(self, task: Task) -> Simulator:
        super().open(task)  # the same checks
        return Counted(task.index % 7 + 1)


class FlakyStore(MemoryEpisodeStore):
    """The episode store, with its next append failing as an unreachable Redis does."""

    fail_next = False

    async def append(self, episode_id: str, expected_step: int, step: dict[str, Any], done: bool) -> Appended:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("store unreachable")
        return await super().append(episode_id, expected_step, step, done)


async def test_a_failed_step_or_append_closes_the_simulator_it_took() -> None:
    Counted.alive = 0
    store = FlakyStore(ttl_s=60, capacity=100)
    service = EpisodeService({"counter": CountedEnvironment()}, store)
    episode = await service.create("counter", CreateEpisode(task_id="counter/test/3"))
    cache = service.caches["counter"]
    assert Counted.alive == len(cache) == 1

    with pytest.raises(RuntimeError, match="broke"):
        await service.step(episode.episode_id, "boom", 0)
    assert Counted.alive == len(cache) == 0  # closed, not leaked

    store.fail_next = True
    with pytest.raises(ConnectionError):
        await service.step(episode.episode_id, "inc", 0)  # rebuilt by replay, stepped, then the store failed
    assert Counted.alive == len(cache) == 0

    result = await service.step(episode.episode_id, "inc", 0)  # the record is intact: the step applies once
    assert result.step == 1 and result.observation == "The counter shows 1."
    assert Counted.alive == len(cache) == 1
    await service.close()
    assert Counted.alive == 0
