"""Learning, shown: the "one side" task (`tests/one_side.py`), which a tiny model learns on this CPU
under `grpo` and `sdar`, seeded; the mean reward of the last steps beats the first steps' by a margin
that the same run with a model that never learns does not reach.

The samples go through the real path: the in-process generation engine, `GroupRecord`s, the learner
with its reference model and, for SDAR, the teacher's scoring core in process with the Search-QA
skills.
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from shared.model_specs import TINY
from tests.one_side import model_and_prompts, play, target_set
from trainer.algorithms import make
from trainer.engine import HFGenerator
from trainer.generation import Sampling
from trainer.learner import Learner, LearnerConfig
from trainer.teacher import LocalTeacher

STEPS, GROUPS, GROUP_SIZE, TOKENS, WINDOW = 10, 4, 16, 8, 3
MARGIN = 0.08


def train(algorithm: str, lr: float | None, seed: int = 0) -> list[float]:
    """Mean reward of each step's rollouts; `lr=None` plays the same steps without learning."""
    model, tokenizer, prompts = model_and_prompts(seed, GROUPS)
    target = target_set(model)
    alg = make({"type": algorithm, "kl_coef": 0.001})
    teacher = LocalTeacher(model, tokenizer, TINY) if alg.needs_teacher else None
    config = LearnerConfig(lr=lr or 1.0, seed=seed)
    learner = Learner(model, alg, config, ref_model=copy.deepcopy(model), teacher=teacher)
    generator = HFGenerator(model, tokenizer, Sampling(1.0, 1.0, TOKENS), seed=seed, max_concurrency=32)

    async def loop() -> list[float]:
        rewards = []
        try:
            for step in range(STEPS):
                groups = await play(generator, prompts, target, GROUP_SIZE, TOKENS)
                rewards.append(sum(e.env_reward for g in groups for e in g.episodes) / (GROUPS * GROUP_SIZE))
                if lr is not None:
                    await asyncio.to_thread(learner.step, groups, step)
                generator.policy_version = step + 1
        finally:
            await generator.aclose()
        return rewards

    return asyncio.run(loop())


def gain(rewards: list[float]) -> float:
    return sum(rewards[-WINDOW:]) / WINDOW - sum(rewards[:WINDOW]) / WINDOW


@pytest.mark.parametrize("algorithm", ["grpo", "sdar"])
def test_the_tiny_model_learns_the_task(algorithm: str) -> None:
    rewards = train(algorithm, lr=2e-3)
    assert gain(rewards) > MARGIN, rewards


def test_the_margin_is_one_a_run_that_does_not_learn_fails() -> None:
    rewards = train("grpo", lr=None)  # the same seeded rollouts from a model that never changes
    assert gain(rewards) < MARGIN, rewards


if __name__ == "__main__":  # the curves behind EXPERIMENTS.md: python -m tests.learning.test_learning
    for name, lr in (("grpo", 2e-3), ("sdar", 2e-3), ("grpo", None)):
        curve = train(name, lr)
        print(f"{name} lr={lr}: gain {gain(curve):+.3f}; " + " ".join(f"{r:.2f}" for r in curve), flush=True)
