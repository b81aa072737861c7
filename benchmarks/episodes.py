"""Timing helpers the env benchmarks share."""

from __future__ import annotations

import time

from services.envs.base import Environment
from services.envs.episodes import EpisodeService
from services.envs.store import MemoryEpisodeStore
from shared.wire import CreateEpisode


async def service_rate(
    env: Environment, scripts: dict[str, list[str]], max_steps: int | None = None
) -> tuple[int, float]:
    """(steps, seconds) of playing every task's script through the episode service in-process
    (store, live cache, idempotency checks; no HTTP)."""
    service = EpisodeService({env.name: env}, MemoryEpisodeStore(3600, 100_000), live_cache_size=len(scripts))
    created = [await service.create(env.name, CreateEpisode(task_id=t, max_steps=max_steps)) for t in scripts]
    start = time.perf_counter()
    for episode, script in zip(created, scripts.values(), strict=True):
        for n, action in enumerate(script):
            await service.step(episode.episode_id, action, n)
    elapsed = time.perf_counter() - start
    await service.close()
    return sum(len(s) for s in scripts.values()), elapsed
