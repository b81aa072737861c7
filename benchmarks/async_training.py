"""Asynchronous training against synchronous, side by side on this machine: steps/hour and the reward
curves (issue 14 item 7).

    python -m benchmarks.async_training [--seeds 0 1 2] [--steps 10] [--tokens 8] [--main-job]

Part 1, the "one side" task (`tests/one_side.py`, the learning tests' task, at their settings) with the
project's own pieces: `trainer/pipeline.py`'s `Ahead` plays the rounds, the in-process generation engine
samples, the learner trains with the truncated-IS correction. Synchronous (`max_staleness` 0) samples
on the learner's own model; asynchronous (`max_staleness` 1) samples on a copy that gets the new weights
between two decode steps (`HFGenerator.load_weights`), as `trainer.run --max-staleness 1` does. Each
mode starts from the same seeded model; the reward of step k is that of the round trained at step k.

Part 2 (`--main-job`), the main job as processes: `trainer.run` on the counter env with the tiny model,
the env service and Redis as processes, sync against `--max-staleness 1`; steps/hour from its own
`timing_s/step_total`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.rollout_wire import GroupRecord
from tests.one_side import model_and_prompts, play, target_set
from trainer.algorithms import make
from trainer.engine import HFGenerator
from trainer.generation import Sampling
from trainer.learner import Learner, LearnerConfig
from trainer.pipeline import Ahead

GROUPS, GROUP_SIZE = 4, 16


@dataclass
class Result:
    rewards: list[float] = field(default_factory=list)
    staleness: list[float] = field(default_factory=list)
    is_weight: list[float] = field(default_factory=list)
    learn_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def steps_per_hour(self) -> float:
        return 3600 * len(self.rewards) / self.wall_s

    def gain(self, window: int = 3) -> float:
        return statistics.mean(self.rewards[-window:]) - statistics.mean(self.rewards[:window])


def train(max_staleness: int, seed: int, steps: int, tokens: int, lr: float = 2e-3) -> Result:
    model, tokenizer, prompts = model_and_prompts(seed, GROUPS)
    target = target_set(model)
    learner = Learner(
        model, make({"type": "grpo", "kl_coef": 0.001}), LearnerConfig(lr=lr, seed=seed), ref_model=copy.deepcopy(model)
    )
    sampler = model if not max_staleness else copy.deepcopy(model).requires_grad_(False)
    generator = HFGenerator(sampler, tokenizer, Sampling(1.0, 1.0, tokens), seed=seed, max_concurrency=32)
    rounds: dict[int, list[GroupRecord]] = {}
    result = Result()

    async def produce(k: int) -> None:
        rounds[k] = await play(generator, prompts, target, GROUP_SIZE, tokens)

    async def loop() -> None:
        ahead = Ahead(produce, first=0, end=steps, learned=0, max_staleness=max_staleness)
        start = time.perf_counter()
        ahead.start()
        try:
            for step in range(steps):
                await ahead.ready(step)
                groups = rounds.pop(step)
                result.rewards.append(statistics.mean(e.env_reward for g in groups for e in g.episodes))
                t = time.perf_counter()
                metrics = await asyncio.to_thread(learner.step, groups, step, step)
                result.learn_s.append(time.perf_counter() - t)
                result.staleness.append(metrics["off_policy/staleness_mean"])
                result.is_weight.append(metrics.get("off_policy/is_weight_mean", 1.0))
                if sampler is model:
                    generator.policy_version = step + 1
                else:
                    await generator.load_weights(model, step + 1)
                await ahead.learned(step + 1)
            result.wall_s = time.perf_counter() - start
        finally:
            await ahead.aclose()
            await generator.aclose()

    asyncio.run(loop())
    return result


def one_side(seeds: list[int], steps: int, tokens: int) -> None:
    print(f"## one side: {GROUPS} prompts x {GROUP_SIZE} answers of {tokens} tokens, {steps} steps, grpo lr 2e-3")
    print("| seed | mode | steps/hour | learner s/step | staleness mean | IS weight mean | gain | reward per step |")
    print("|---|---|---|---|---|---|---|---|")
    speed: dict[int, list[float]] = {0: [], 1: []}
    gains: dict[int, list[float]] = {0: [], 1: []}
    for seed in seeds:
        for staleness in (0, 1):
            r = train(staleness, seed, steps, tokens)
            speed[staleness].append(r.steps_per_hour)
            gains[staleness].append(r.gain())
            curve = " ".join(f"{x:.2f}" for x in r.rewards)
            print(
                f"| {seed} | {'async 1' if staleness else 'sync'} | {r.steps_per_hour:,.0f} | "
                f"{statistics.mean(r.learn_s):.2f} | {statistics.mean(r.staleness):.2f} | "
                f"{statistics.mean(r.is_weight):.3f} | {r.gain():+.3f} | {curve} |",
                flush=True,
            )
    ratios = [a / s for a, s in zip(speed[1], speed[0], strict=True)]
    print(
        f"\nasync/sync steps/hour, per seed: {' '.join(f'{x:.2f}' for x in ratios)} "
        f"(mean {statistics.mean(ratios):.2f}); mean gain sync {statistics.mean(gains[0]):+.3f}, "
        f"async {statistics.mean(gains[1]):+.3f}"
    )


MAIN_JOB = [
    *("--env", "counter", "--algorithm", "grpo", "--model", "tiny", "--groups", "4", "--group-size", "4"),
    *("--max-turns", "3", "--max-new-tokens", "16", "--eval-tasks", "0", "--lr", "1e-3", "--autocast", "none"),
]


def main_job(steps: int) -> None:
    print(f"\n## the main job: trainer.run {' '.join(MAIN_JOB)} --steps {steps}")
    print("| mode | steps/hour | s/step (after the first) | rollout s/step | waited s/step | staleness max |")
    print("|---|---|---|---|---|---|")
    speed = {}
    for staleness in (0, 1):
        with tempfile.TemporaryDirectory() as runs:
            args = [*MAIN_JOB, "--steps", str(steps), "--runs-dir", runs, "--max-staleness", str(staleness)]
            subprocess.run([sys.executable, "-m", "trainer.run", *args], check=True, capture_output=True, timeout=1800)
            (run,) = Path(runs).iterdir()
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        rows = [x for x in lines if "timing_s/step_total" in x][1:]  # the first step waits for a whole round
        step_s = statistics.mean(x["timing_s/step_total"] for x in rows)
        speed[staleness] = 3600 / step_s
        print(
            f"| {'async 1' if staleness else 'sync'} | {3600 / step_s:,.0f} | {step_s:.2f} | "
            f"{statistics.mean(x['timing_s/gen'] for x in rows):.2f} | "
            f"{statistics.mean(x['timing_s/wait_rollout'] for x in rows):.2f} | "
            f"{max(x['off_policy/staleness_max'] for x in rows):.0f} |",
            flush=True,
        )
    print(f"\nasync/sync steps/hour: {speed[1] / speed[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=8, help="answer length of the one-side task")
    parser.add_argument("--main-job", action="store_true", help="also time trainer.run as processes")
    parser.add_argument("--main-job-steps", type=int, default=6)
    args = parser.parse_args()
    one_side(args.seeds, args.steps, args.tokens)
    if args.main_job:
        main_job(args.main_job_steps)


if __name__ == "__main__":
    main()
