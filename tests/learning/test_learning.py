"""Learning, shown: a task defined here that a tiny model learns on this CPU under `grpo` and `sdar`,
seeded; the mean reward of the last steps beats the first steps' by a margin that the same run with a
model that never learns does not reach.

The task, "one side": a fixed prompt per group, an 8-token answer sampled at temperature 1, reward =
the share of its tokens in a fixed half of the vocabulary, the tokens whose initial embedding points
along a seeded random direction. The random model starts near 0.5; a policy can move it towards 1 by
turning its last hidden state along that direction. (A half chosen by token id is out of its reach in
a few steps: its tied embeddings do not tell those halves apart.)

The samples go through the real path: the in-process generation engine, `GroupRecord`s, the learner
with its reference model and, for SDAR, the teacher's scoring core in process with the Search-QA
skills (the groups are labelled `searchqa`, whose reward is the env's own).
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from shared.model_specs import TINY
from shared.models import TINY_CONFIG, load_tokenizer
from shared.rollout_wire import GroupRecord, SamplingSettings, StepSample, Trajectory
from trainer.algorithms import make
from trainer.engine import HFGenerator
from trainer.generation import Sampling
from trainer.learner import Learner, LearnerConfig
from trainer.teacher import LocalTeacher

STEPS, GROUPS, GROUP_SIZE, TOKENS, WINDOW = 10, 4, 16, 8, 3
MARGIN = 0.08


def target_set(model: Any, seed: int = 0) -> frozenset[int]:
    """The tokens whose initial embedding points along a seeded random direction: half the vocabulary,
    and one a policy can favour by turning its last hidden state that way (tied embeddings)."""
    embeddings = model.get_output_embeddings().weight.detach()
    direction = torch.randn(embeddings.shape[1], generator=torch.Generator().manual_seed(seed))
    return frozenset(torch.nonzero(embeddings @ direction > 0).flatten().tolist())


def reward(token_ids: list[int], target: frozenset[int]) -> float:
    return sum(t in target for t in token_ids) / max(len(token_ids), 1)


async def play(
    generator: HFGenerator, prompts: list[list[int]], target: frozenset[int], version: int
) -> list[GroupRecord]:
    groups = []
    for prompt in prompts:
        completions = await asyncio.gather(*(generator.generate(prompt, TOKENS) for _ in range(GROUP_SIZE)))
        episodes = []
        for c in completions:
            r = reward(c.token_ids, target)
            step = StepSample(
                step=0,
                policy_version=version,
                prompt_token_ids=prompt,
                response_token_ids=c.token_ids,
                sampler_logprobs=c.logprobs,
                action="<answer> x </answer>",
                valid=True,
                env_reward=r,
                won=r == 1.0,
                done=True,
                finish_reason=c.finish_reason,
            )
            episodes.append(
                Trajectory(episode_id=uuid.uuid4().hex, steps=[step], end="done", won=r == 1.0, env_reward=r)
            )
        groups.append(
            GroupRecord(
                group_id=uuid.uuid4().hex,
                env="searchqa",
                task_id="searchqa/train/0",
                task="answer with low tokens",
                data_source="nq",
                policy_version=version,
                sampling=SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=TOKENS),
                logprobs_mode="processed_logprobs",
                backend="hf",
                episodes=episodes,
                usable=len(episodes),
                created_at=time.time(),
            )
        )
    return groups


def train(algorithm: str, lr: float | None, seed: int = 0) -> list[float]:
    """Mean reward of each step's rollouts; `lr=None` plays the same steps without learning."""
    tokenizer = load_tokenizer(TINY)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.1,  # wide enough embeddings that one side of them can dominate the output
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    target = target_set(model)
    alg = make({"type": algorithm, "kl_coef": 0.001})
    teacher = LocalTeacher(model, tokenizer, TINY) if alg.needs_teacher else None
    config = LearnerConfig(lr=lr or 1.0, seed=seed)
    learner = Learner(model, alg, config, ref_model=copy.deepcopy(model), teacher=teacher)
    prompts = [tokenizer.encode(f"Question {i}: say something.") for i in range(GROUPS)]
    generator = HFGenerator(model, tokenizer, Sampling(1.0, 1.0, TOKENS), seed=seed, max_concurrency=32)

    async def loop() -> list[float]:
        rewards = []
        try:
            for step in range(STEPS):
                groups = await play(generator, prompts, target, step)
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
