"""TextWorld's grammar parses memoised or not (`services/envs/alfworld/engine.py` `memoise_grammar`):
reset and step time of the `textworld` backend, side by side in one run, with the transcripts of both
compared (they must be identical).

    python -m benchmarks.alfworld_memo [--games 8] [--rounds 3] [--cache-dir DIR]

Each round plays every game's expert plan once with TextWorld's own parses and once with the memo,
alternating which goes first; the figures are medians over rounds of the total per mode.
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
from shared.settings import EnvServiceSettings
from shared.wire import CreateEpisode


async def expert_plans(env: AlfworldEnvironment, tasks: list[str]) -> dict[str, list[str]]:
    service = EpisodeService({"alfworld": env}, MemoryEpisodeStore(3600, 1000))
    plans = {}
    for task_id in tasks:
        episode = await service.create("alfworld", CreateEpisode(task_id=task_id))
        plans[task_id] = (await service.record(episode.episode_id)).audit["expert_plan"]
    await service.close()
    return plans


def play(env: AlfworldEnvironment, plans: dict[str, list[str]], memo: bool) -> tuple[float, float, list[object]]:
    """(reset seconds, step seconds, transcript) of every game's plan on engines holding their game."""
    engine_module.memoise_grammar(memo)
    engine_module.clear_memos()
    reset_s = step_s = 0.0
    transcript: list[object] = []
    for task_id, plan in plans.items():
        task = env.task_by_id(task_id)
        engine = TextWorldEngine()
        engine.load(env.games.gamefile(task.split, task.index))
        engine.reset()  # the first reset parses the game (shared by both modes' costs alike)
        start = time.perf_counter()
        state = engine.reset()
        reset_s += time.perf_counter() - start
        transcript.append((state.feedback, sorted(state.admissible_commands)))
        start = time.perf_counter()
        for command in plan:
            state, score, done = engine.step(command)
            transcript.append((state.feedback, list(state.admissible_commands), score, done, state.won))
        step_s += time.perf_counter() - start
    return reset_s, step_s, transcript


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=8, help="valid_seen games, from the first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=EnvServiceSettings().cache_dir)
    args = parser.parse_args()
    env = AlfworldEnvironment.from_settings(EnvServiceSettings(envs=["alfworld"], cache_dir=args.cache_dir))
    tasks = [f"alfworld/valid_seen/{i}" for i in range(args.games)]
    plans = asyncio.run(expert_plans(env, tasks))
    steps = sum(len(p) for p in plans.values())
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    transcripts = {}
    for r in range(args.rounds):
        for memo in (False, True) if r % 2 == 0 else (True, False):
            reset_s, step_s, transcripts[memo] = play(env, plans, memo)
            times[memo].append((reset_s, step_s))
    engine_module.memoise_grammar(True)
    assert transcripts[True] == transcripts[False], "the memo changed a transcript"
    own = [statistics.median(x[i] for x in times[False]) for i in (0, 1)]
    memo = [statistics.median(x[i] for x in times[True]) for i in (0, 1)]
    print(f"{len(plans)} games, {steps} expert steps, {args.rounds} rounds; transcripts identical")
    print("| textworld backend | reset ms | step ms | step speed-up |\n|---|---|---|---|")
    print(f"| TextWorld's own parses | {own[0] / len(plans) * 1000:.0f} | {own[1] / steps * 1000:.1f} | 1.00x |")
    print(
        f"| grammar parses memoised | {memo[0] / len(plans) * 1000:.0f} | {memo[1] / steps * 1000:.1f} | "
        f"{own[1] / memo[1]:.2f}x |"
    )


if __name__ == "__main__":
    main()
