"""ALFWorld's two engines side by side in one run: `native` against `textworld` (the real engine).

    python -m benchmarks.alfworld_env [--episodes 64] [--games 16] [--cache-dir DIR] [--skip-http]

In process, per backend: reset latency (a cold engine, nothing parsed or memoised; and an engine that
holds its game), step latency and steps/s over every game's expert plan, and the memory a live
episode holds (resident-set growth per live episode). Over HTTP, per backend, a real server process:
one step per request, and the batch route with every episode in one request; beside them the same
batch route with the no-cost `counter` env, the route's own limit. The transcripts of both backends
are compared (they must be identical). Ratios within a run are what to compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from pathlib import Path
from typing import Any

from services.envs.alfworld import AlfworldEnvironment, native
from services.envs.alfworld import engine as engine_module
from services.envs.alfworld.engine import NativeEngine, TextWorldEngine
from services.envs.episodes import EpisodeService
from services.envs.store import MemoryEpisodeStore
from shared.envs_client import EnvClient
from shared.launch import ServiceProcess
from shared.settings import EnvServiceSettings
from shared.wire import BatchStepItem, CreateEpisode, StepResult

BACKENDS = ("textworld", "native")
GROUP = 4  # episodes of each game in process (a GRPO group plays one game several times)


def new_engine(backend: str) -> TextWorldEngine | NativeEngine:
    return TextWorldEngine() if backend == "textworld" else NativeEngine()


def clear(backend: str) -> None:
    if backend == "textworld":
        engine_module.clear_memos()
    else:
        native._load_game.cache_clear()


async def expert_plans(env: AlfworldEnvironment, tasks: list[str]) -> dict[str, list[str]]:
    service = EpisodeService({"alfworld": env}, MemoryEpisodeStore(3600, 1000))
    plans = {}
    for task_id in tasks:
        episode = await service.create("alfworld", CreateEpisode(task_id=task_id))
        plans[task_id] = (await service.record(episode.episode_id)).audit["expert_plan"]
    await service.close()
    return plans


def reset_latency(backend: str, gamefiles: list[Path], repeats: int) -> tuple[float, float]:
    """Median seconds to a first observation: cold (a new engine, nothing parsed), and warm (a reset
    of an engine holding its game)."""
    cold, warm = [], []
    for gamefile in gamefiles:
        for _ in range(repeats):
            clear(backend)
            start = time.perf_counter()
            engine = new_engine(backend)
            engine.load(gamefile)
            engine.reset()
            cold.append(time.perf_counter() - start)
            for _ in range(3):
                start = time.perf_counter()
                engine.reset()
                warm.append(time.perf_counter() - start)
    return statistics.median(cold), statistics.median(warm)


def play(
    backend: str, gamefiles: list[Path], plans: list[list[str]], episodes: int
) -> tuple[list[float], int, list[Any]]:
    """(seconds stepping the n-th episode of every game, steps per round, first round's transcript):
    each game's plan played `episodes` times, as a GRPO group plays one game."""
    seconds, steps, transcript = [0.0] * episodes, 0, []
    for gamefile, plan in zip(gamefiles, plans, strict=True):
        for n in range(episodes):
            engine = new_engine(backend)
            engine.load(gamefile)
            state = engine.reset()
            if n == 0:
                transcript.append((state.feedback, list(state["admissible_commands"])))
            start = time.perf_counter()
            for command in plan:
                state, score, done = engine.step(command)
                if n == 0:
                    transcript.append(
                        (state.feedback, list(state["admissible_commands"]), score, done, bool(state["won"]))
                    )
            seconds[n] += time.perf_counter() - start
        steps += len(plan)
    return seconds, steps, transcript


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def memory_per_episode(backend: str, gamefiles: list[Path], n: int) -> float:
    """Resident-set growth per live episode: `n` engines, each reset on a game (cycling `gamefiles`),
    after one engine of each game was loaded before (parsed games are shared, not per episode)."""
    for gamefile in gamefiles:
        warmup = new_engine(backend)
        warmup.load(gamefile)
        warmup.reset()
    gc.collect()
    before = rss_bytes()
    live = []
    for i in range(n):
        engine = new_engine(backend)
        engine.load(gamefiles[i % len(gamefiles)])
        engine.reset()
        engine.step("look")
        live.append(engine)
    gc.collect()
    return (rss_bytes() - before) / n


def over_http(url: str, env: str, tasks: list[str], batch: bool) -> tuple[int, float]:
    with EnvClient(url) as client:
        episodes = [client.create(env, task_id=t) for t in tasks]
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
    parser.add_argument("--skip-http", action="store_true", help="in-process figures only")
    args = parser.parse_args()
    settings = EnvServiceSettings(envs=["alfworld"], cache_dir=args.cache_dir, live_cache_size=args.episodes)
    env = AlfworldEnvironment.from_settings(settings)
    games = [f"alfworld/valid_seen/{i}" for i in range(args.games)]
    print(f"preparing {len(games)} games ...", flush=True)
    gamefiles = [env.games.gamefile(env.task_by_id(t).split, env.task_by_id(t).index) for t in games]
    plans = asyncio.run(expert_plans(env, games))

    figures: dict[str, dict[str, float]] = {}
    transcripts = {}
    for backend in BACKENDS:
        cold, warm = reset_latency(backend, gamefiles[:6], repeats=2)
        seconds, steps, transcripts[backend] = play(backend, gamefiles, [plans[t] for t in games], GROUP)
        memory = memory_per_episode(backend, gamefiles[:4], 16 if backend == "textworld" else 1024)
        later = statistics.median(seconds[1:])
        figures[backend] = {
            "cold": cold,
            "warm": warm,
            "first": seconds[0] / steps,
            "step": later / steps,
            "memory": memory,
        }
    assert transcripts["native"] == transcripts["textworld"], "the backends' transcripts differ"
    tw, nat = figures["textworld"], figures["native"]
    print(f"\n{len(games)} games x {GROUP} episodes, {steps} expert steps a round; transcripts identical\n")
    print("| in process | textworld | native | native speed-up |\n|---|---|---|---|")
    for label, key, unit in (
        ("reset, cold (nothing parsed)", "cold", 1),
        ("reset, engine holding its game", "warm", 3),
        ("step, a game's first episode", "first", 3),
        ("step, its later episodes (median)", "step", 3),
    ):
        slow, fast = tw[key] * 1e3, nat[key] * 1e3
        print(f"| {label} | {slow:.1f} ms | {fast:.{unit}f} ms | {slow / fast:.0f}x |")
    print(f"| steps/s | {1 / tw['step']:.1f} | {1 / nat['step']:.0f} | |")
    print(f"| memory per live episode | {tw['memory'] / 2**20:.1f} MiB | {nat['memory'] / 2**10:.0f} KiB | |")
    if args.skip_http:
        return

    tasks = [games[i % len(games)] for i in range(args.episodes)]
    rows = []
    for backend in BACKENDS:
        server_args = [
            "--envs",
            "alfworld",
            "--cache-dir",
            str(args.cache_dir),
            "--live-cache-size",
            str(args.episodes),
        ]
        with ServiceProcess("services.envs", [*server_args, "--alfworld-backend", backend]) as server:
            single = over_http(server.url, "alfworld", tasks, batch=False)
            batch = over_http(server.url, "alfworld", tasks, batch=True)
        rows.append((backend, single[0] / single[1], batch[0] / batch[1]))
    with ServiceProcess("services.envs", ["--envs", "counter", "--live-cache-size", str(args.episodes)]) as server:
        counter_tasks = [f"counter/train/{6 + 7 * i}" for i in range(args.episodes)]  # 7 steps each
        limit = over_http(server.url, "counter", counter_tasks, batch=True)
    print(f"\n| over HTTP, one replica, {args.episodes} episodes | one step per request | batch route |\n|---|---|---|")
    for backend, single_rate, batch_rate in rows:
        print(f"| {backend} | {single_rate:.1f} steps/s | {batch_rate:.1f} steps/s |")
    print(f"| the batch route's limit (`counter`, no engine cost) | | {limit[0] / limit[1]:.0f} steps/s |")


if __name__ == "__main__":
    main()
