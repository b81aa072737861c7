"""The "one side" task, on which a tiny model learns on this CPU in a few steps (the learning tests,
`benchmarks/async_training.py`): a fixed prompt per group, a short answer sampled at temperature 1,
reward = the share of its tokens in a fixed half of the vocabulary, the tokens whose initial embedding
points along a seeded random direction. A random model starts near 0.5; a policy can move it towards
1 by turning its last hidden state along that direction. (A half chosen by token id is out of its
reach in a few steps: its tied embeddings do not tell those halves apart.)

The groups are labelled `searchqa`, whose reward is the env's own, so the learner and, for SDAR, the
teacher's Search-QA skills take them as they are.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from shared.model_specs import TINY
from shared.models import TINY_CONFIG, load_tokenizer
from shared.rollout_wire import GroupRecord, SamplingSettings, StepSample, Trajectory
from trainer.engine import HFGenerator


def model_and_prompts(seed: int, groups: int) -> tuple[Any, Any, list[list[int]]]:
    """A seeded random tiny model whose embeddings are wide enough for one side of them to dominate the
    output, its tokenizer, and one prompt a group."""
    tokenizer = load_tokenizer(TINY)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.1,
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    prompts = [tokenizer.encode(f"Question {i}: say something.") for i in range(groups)]
    return model, tokenizer, prompts


def target_set(model: Any, seed: int = 0) -> frozenset[int]:
    """The tokens whose initial embedding points along a seeded random direction: half the vocabulary,
    and one a policy can favour by turning its last hidden state that way (tied embeddings)."""
    embeddings = model.get_output_embeddings().weight.detach()
    direction = torch.randn(embeddings.shape[1], generator=torch.Generator().manual_seed(seed))
    return frozenset(torch.nonzero(embeddings @ direction > 0).flatten().tolist())


def reward(token_ids: list[int], target: frozenset[int]) -> float:
    return sum(t in target for t in token_ids) / max(len(token_ids), 1)


async def play(
    generator: HFGenerator, prompts: list[list[int]], target: frozenset[int], group_size: int, tokens: int
) -> list[GroupRecord]:
    """A group of `group_size` answers of `tokens` tokens to each prompt, each step tagged with the
    policy version that sampled it."""
    groups = []
    for prompt in prompts:
        completions = await asyncio.gather(*(generator.generate(prompt, tokens) for _ in range(group_size)))
        episodes = []
        for c in completions:
            r = reward(c.token_ids, target)
            step = StepSample(
                step=0,
                policy_version=c.policy_version,
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
                policy_version=min(e.steps[0].policy_version for e in episodes),
                sampling=SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=tokens),
                logprobs_mode="processed_logprobs",
                backend="hf",
                episodes=episodes,
                usable=len(episodes),
                created_at=time.time(),
            )
        )
    return groups
