"""Rollout: play groups of episodes over HTTP with one generator, and stream finished groups into
the buffer (DESIGN §6).

Two modes over the same generator and env service:
- `async` (the default): every episode is a coroutine that asks the generator for its next turn
  as soon as its last env step returns, so generation batches whatever is waiting (continuous
  batching), and a finished group goes to the buffer at once;
- `lockstep`: the episodes of a batch move in rounds, as verl-agent's rollout loop does: every
  live episode generates, then every one steps, then the next round. Kept as the baseline.

A group is G episodes of one task; episodes of a task start from identical states (the env panels
are deterministic). Concurrency is bounded by a semaphore over episodes; each episode has a
timeout (what it played so far is kept, marked truncated); env calls are retried by the client
(steps are idempotent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.envs_client import AsyncEnvClient
from shared.rollout_wire import EpisodeRecord, GroupRecord, StepSample
from trainer.agents import Protocol, Turn
from trainer.buffer import Buffer
from trainer.generation import Completion, Generator

Mode = Literal["async", "lockstep"]


@dataclass
class RolloutConfig:
    env: str
    group_size: int = 4
    max_steps: int | None = None
    """Steps per episode (default: the env's own limit)."""
    max_new_tokens: int = 256
    max_prompt_tokens: int = 4096
    concurrency: int = 64
    """Episodes in flight at once."""
    episode_timeout_s: float = 600.0
    policy_version: int = 0


@dataclass
class Summary:
    groups: int = 0
    episodes: int = 0
    steps: int = 0
    won: int = 0
    invalid: int = 0
    truncated: int = 0
    response_tokens: int = 0
    seconds: float = 0.0
    group_ids: list[str] = field(default_factory=list)

    def add(self, group: GroupRecord) -> None:
        self.groups += 1
        self.group_ids.append(group.group_id)
        for episode in group.episodes:
            self.episodes += 1
            self.won += episode.won
            self.truncated += episode.truncated
            for step in episode.steps:
                self.steps += 1
                self.invalid += not step.valid
                self.response_tokens += len(step.response_token_ids)

    def lines(self) -> list[str]:
        def rate(n: int, d: int) -> str:
            return f"{n / d:.1%}" if d else "n/a"

        return [
            f"groups {self.groups}, episodes {self.episodes}, steps {self.steps} in {self.seconds:.1f} s",
            f"success {rate(self.won, self.episodes)} ({self.won}), invalid steps {rate(self.invalid, self.steps)}, "
            f"truncated episodes {self.truncated}",
            f"{self.response_tokens} response tokens, {self.response_tokens / max(self.seconds, 1e-9):.1f} tokens/s, "
            f"{self.episodes / max(self.seconds, 1e-9):.2f} episodes/s",
        ]


class Episode:
    """One episode's state between turns."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.episode_id = uuid.uuid4().hex
        self.task = ""
        self.observation = ""
        self.admissible: list[str] | None = None
        self.past: list[Turn] = []
        self.samples: list[StepSample] = []
        self.done = False
        self.won = False
        self.env_reward = 0.0
        self.truncated = False

    def record(self) -> EpisodeRecord | None:
        if not self.samples:
            return None
        truncated = self.truncated or not self.done
        return EpisodeRecord(
            episode_id=self.episode_id,
            steps=self.samples,
            won=self.won,
            env_reward=self.env_reward,
            truncated=truncated,
        )


class Roller:
    def __init__(
        self,
        client: AsyncEnvClient,
        generator: Generator,
        tokenizer: Any,
        protocol: Protocol,
        buffer: Buffer,
        config: RolloutConfig,
    ) -> None:
        self.client = client
        self.generator = generator
        self.tokenizer = tokenizer
        self.protocol = protocol
        self.buffer = buffer
        self.config = config
        self._gate = asyncio.Semaphore(config.concurrency)
        self._task_types: dict[str, str | None] = {}

    # -- one turn ------------------------------------------------------------------------------

    def render(self, episode: Episode) -> list[int]:
        """The prompt's token ids: the protocol's text in the model's chat template; without history
        when it would be too long (as the reference falls back to its no-history template)."""
        for past in (episode.past, []):
            text = self.protocol.prompt(episode.task, episode.observation, episode.admissible, past)
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            if len(ids) <= self.config.max_prompt_tokens:
                return [int(i) for i in ids]
        return [int(i) for i in ids[-self.config.max_prompt_tokens :]]

    async def start(self, episode: Episode) -> None:
        opened = await self.client.create(
            self.config.env, task_id=episode.task_id, max_steps=self.config.max_steps, episode_id=episode.episode_id
        )
        episode.task, episode.observation, episode.admissible = (
            opened.task,
            opened.observation,
            opened.admissible_actions,
        )

    async def think(self, episode: Episode) -> tuple[list[int], Completion]:
        prompt = self.render(episode)
        return prompt, await self.generator.generate(prompt, self.config.max_new_tokens)

    async def act(self, episode: Episode, prompt: list[int], completion: Completion) -> None:
        text = self.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        projection = self.protocol.project(text)
        n = len(episode.samples)
        result = await self.client.step(episode.episode_id, projection.action, n)
        episode.samples.append(
            StepSample(
                step=n,
                prompt_token_ids=prompt,
                response_token_ids=completion.token_ids,
                sampler_logprobs=completion.logprobs,
                action=projection.action,
                valid=projection.valid,
                env_reward=result.reward,
                won=result.won,
                done=result.done,
                finish_reason=completion.finish_reason,
            )
        )
        episode.past.append(Turn(episode.observation, projection.action, result.observation))
        episode.observation, episode.admissible = result.observation, result.admissible_actions
        episode.done, episode.won, episode.env_reward = result.done, result.won, result.reward
        episode.truncated = result.truncated

    # -- async mode ----------------------------------------------------------------------------

    async def play(self, episode: Episode) -> None:
        async with self._gate:
            try:
                await asyncio.wait_for(self._play(episode), self.config.episode_timeout_s)
            except TimeoutError:
                episode.truncated = True

    async def _play(self, episode: Episode) -> None:
        await self.start(episode)
        while not episode.done:
            prompt, completion = await self.think(episode)
            await self.act(episode, prompt, completion)

    async def play_group(self, task_id: str) -> GroupRecord | None:
        episodes = [Episode(task_id) for _ in range(self.config.group_size)]
        await asyncio.gather(*(self.play(e) for e in episodes))
        return await self.finish(task_id, episodes)

    async def finish(self, task_id: str, episodes: Sequence[Episode]) -> GroupRecord | None:
        records = [r for r in (e.record() for e in episodes) if r is not None]
        if not records:
            return None
        group = GroupRecord(
            group_id=uuid.uuid4().hex,
            env=self.config.env,
            task_id=task_id,
            task_type=await self.task_type(task_id),
            policy_version=self.config.policy_version,
            episodes=records,
            created_at=time.time(),
        )
        await self.buffer.put(group)
        return group

    async def task_type(self, task_id: str) -> str | None:
        if task_id not in self._task_types:
            _, split, index = task_id.rsplit("/", 2)
            [task] = (await self.client.tasks(self.config.env, split, int(index), 1)).tasks
            self._task_types[task_id] = task.task_type or task.data_source or task.category
        return self._task_types[task_id]

    async def run(self, task_ids: Sequence[str], mode: Mode = "async", batch_groups: int = 8) -> Summary:
        summary = Summary()
        start = time.perf_counter()
        if mode == "async":
            for group in await asyncio.gather(*(self.play_group(t) for t in task_ids)):
                if group is not None:
                    summary.add(group)
        else:
            for i in range(0, len(task_ids), batch_groups):
                for group in await self.lockstep(task_ids[i : i + batch_groups]):
                    summary.add(group)
        summary.seconds = time.perf_counter() - start
        return summary

    # -- lock-step mode ------------------------------------------------------------------------

    async def lockstep(self, task_ids: Sequence[str]) -> list[GroupRecord]:
        """All episodes of these groups in rounds: generate for every live one, then step every one."""
        groups = {t: [Episode(t) for _ in range(self.config.group_size)] for t in task_ids}
        episodes = [e for members in groups.values() for e in members]
        await asyncio.gather(*(self.start(e) for e in episodes))
        while live := [e for e in episodes if not e.done]:
            turns = await asyncio.gather(*(self.think(e) for e in live))
            await asyncio.gather(*(self.act(e, p, c) for e, (p, c) in zip(live, turns, strict=True)))
        finished = [await self.finish(t, members) for t, members in groups.items()]
        return [g for g in finished if g is not None]
