"""ALFWorld env service benchmark: reset latency and steps per second, side by side in one run.

    python -m benchmarks.alfworld_env [--episodes 64] [--cache-dir DIR]

Reset: a cold engine (load + reset: what a server without reuse pays per episode) against a
reused engine that already holds the game (reset only). Steps: the raw engine, the episode service
in-process (store, cache, idempotency), over HTTP one step per request, and over the batch route
with every episode in one request. All episodes play their expert plans; figures are medians or
totals of this run, and the ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from services.envs.alfworld import AlfworldEnvironment
from services.envs.alfworld import engine as engine_module
from services.envs.alfworld.engine import TextWorldEngine
from services.envs.episodes import EpisodeService
from services.envs.store import MemoryEpisodeStore
from shared.envs_client import EnvClient
from shared.launch import ServiceProcess
from shared.settings import EnvServiceSettings
from shared.wire import BatchStepItem, CreateEpisode, StepResult


def reset_latency(env: AlfworldEnvironment, task_ids: list[str], repeats: int) -> dict[str, float]:
    """Seconds to a first observation: a cold engine (empty memos: what every episode costs without
    reuse), a new engine on a game another engine loaded (shared parse and translation), and a
    reset of an engine that holds the game."""
    cold, shared, warm = [], [], []
    for task_id in task_ids:
        task = env.task_by_id(task_id)
        gamefile = env.games.gamefile(task.split, task.index)
        for _ in range(repeats):
            engine_module.clear_memos()
            for times in (cold, shared):
                start = time.perf_counter()
                engine = TextWorldEngine()
                engine.load(gamefile)
                engine.reset()
                times.append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.reset()
            warm.append(time.perf_counter() - start)
    return {"cold_s": statistics.median(cold), "shared_s": statistics.median(shared), "warm_s": statistics.median(warm)}


async def in_process(env: AlfworldEnvironment, tasks: list[str]) -> tuple[int, float, float]:
    """(steps, seconds of the raw engine, seconds of the service) over the same episodes."""
    service = EpisodeService({"alfworld": env}, MemoryEpisodeStore(3600, 100_000), live_cache_size=len(tasks))
    plans = {}
    ids = []
    for task_id in tasks:
        episode = await service.create("alfworld", CreateEpisode(task_id=task_id))
        ids.append(episode.episode_id)
        plans[episode.episode_id] = (await service.record(episode.episode_id)).audit["expert_plan"]
    steps = sum(len(p) for p in plans.values())
    start = time.perf_counter()
    for n in range(max(len(p) for p in plans.values())):
        for eid in ids:
            if n < len(plans[eid]):
                await service.step(eid, plans[eid][n], n)
    service_s = time.perf_counter() - start
    await service.close()  # gives the engines back to the pool, each still holding its game

    engines = []
    for task_id in tasks:
        task = env.task_by_id(task_id)
        engine = env.pool.acquire(env.games.gamefile(task.split, task.index))
        engine.load(env.games.gamefile(task.split, task.index))
        engine.reset()
        engines.append(engine)
    start = time.perf_counter()
    for n in range(max(len(p) for p in plans.values())):
        for engine, eid in zip(engines, ids, strict=True):
            if n < len(plans[eid]):
                engine.step(plans[eid][n])
    raw_s = time.perf_counter() - start
    return steps, raw_s, service_s


def over_http(url: str, tasks: list[str], batch: bool) -> tuple[int, float]:
    with EnvClient(url) as client:
        episodes = [client.create("alfworld", task_id=t) for t in tasks]
        plans = {e.episode_id: client.record(e.episode_id).audit["expert_plan"] for e in episodes}
        steps = sum(len(p) for p in plans.values())
        start = time.perf_counter()
        for n in range(max(len(p) for p in plans.values())):
            due = [e.episode_id for e in episodes if n < len(plans[e.episode_id])]
            if batch:
                results = client.step_many([BatchStepItem(episode_id=eid, action=plans[eid][n], step=n) for eid in due])
                assert all(isinstance(r, StepResult) for r in results), results
            else:
                for eid in due:
                    client.step(eid, plans[eid][n], n)
        return steps, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--games", type=int, default=16, help="distinct valid_seen games the episodes cycle over")
    parser.add_argument("--cache-dir", type=Path, default=EnvServiceSettings().cache_dir)
    args = parser.parse_args()
    settings = EnvServiceSettings(envs=["alfworld"], cache_dir=args.cache_dir, live_cache_size=args.episodes)
    env = AlfworldEnvironment.from_settings(settings)
    games = [f"alfworld/valid_seen/{i}" for i in range(args.games)]
    print(f"preparing {len(games)} games ...", flush=True)
    for task_id in games:
        task = env.task_by_id(task_id)
        env.games.gamefile(task.split, task.index)
    tasks = [games[i % len(games)] for i in range(args.episodes)]

    reset = reset_latency(env, games[:6], repeats=2)
    steps, raw_s, service_s = asyncio.run(in_process(env, tasks))
    server_args = ["--envs", "alfworld", "--cache-dir", str(args.cache_dir), "--live-cache-size", str(args.episodes)]
    with ServiceProcess("services.envs", server_args) as server:
        http_steps, http_s = over_http(server.url, tasks, batch=False)
        batch_steps, batch_s = over_http(server.url, tasks, batch=True)
    rows = [
        ("engine, in-process", steps / raw_s),
        ("episode service, in-process", steps / service_s),
        ("HTTP, one step per request", http_steps / http_s),
        (f"HTTP, batch route ({args.episodes} episodes a request)", batch_steps / batch_s),
    ]
    print(f"\nreset latency, median of {len(games[:6]) * 2}:\n| engine | ms | vs cold |\n|---|---|---|")
    for name, key in (
        ("cold (nothing reused)", "cold_s"),
        ("new, game parsed before", "shared_s"),
        ("reused, holding the game", "warm_s"),
    ):
        print(f"| {name} | {reset[key] * 1000:.0f} | {reset['cold_s'] / reset[key]:.1f}x |")
    print("\n| path | steps/s | vs engine |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / rows[0][1]:.2f} |")


if __name__ == "__main__":
    main()
