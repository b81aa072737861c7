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

import argparse
import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from tqdm import tqdm

from shared.envs_client import AsyncEnvClient, EnvServiceError
from shared.launch import ServiceProcess
from shared.models import DTYPES, ModelNotFound, chat_prompt_ids, check_spec, load_model, load_tokenizer
from shared.redis import redis_server
from shared.rollout_wire import EpisodeRecord, GroupRecord, StepSample
from trainer.agents import PROTOCOLS, Protocol, Turn, protocol
from trainer.buffer import Buffer, RedisBuffer
from trainer.generation import Completion, GenerationError, Generator, HFGenerator, OpenAIGenerator, Sampling

Mode = Literal["async", "lockstep"]
FAULTS = (GenerationError, EnvServiceError, httpx.TransportError)
"""What ends one episode early (after the client's retries) without stopping the rollout."""
log = logging.getLogger(__name__)


@dataclass
class RolloutConfig:
    env: str
    group_size: int = 4
    max_steps: int | None = None
    """Steps per episode (default: the env's own limit)."""
    max_steps_by_task: dict[str, int] = field(default_factory=dict)
    """Per-task step limits that override `max_steps` (a benchmark's panel of mixed lengths)."""
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
    notes: list[str] = field(default_factory=list)
    """Lines the backend adds (the HF engine: how much prefill the shared prefixes saved)."""

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
            *self.notes,
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
            ids = chat_prompt_ids(self.tokenizer, [{"role": "user", "content": text}])
            if len(ids) <= self.config.max_prompt_tokens:
                return ids
        return ids[-self.config.max_prompt_tokens :]

    async def start(self, episode: Episode) -> None:
        max_steps = self.config.max_steps_by_task.get(episode.task_id, self.config.max_steps)
        opened = await self.client.create(
            self.config.env, task_id=episode.task_id, max_steps=max_steps, episode_id=episode.episode_id
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
                self.fail(episode, f"timed out after {self.config.episode_timeout_s} s")
            except FAULTS as e:
                self.fail(episode, str(e))

    @staticmethod
    def fail(episode: Episode, why: str) -> None:
        """End an episode that cannot go on; what it played is kept, marked truncated."""
        log.warning("episode %s of %s ends early: %s", episode.episode_id, episode.task_id, why)
        episode.truncated = episode.done = True

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

    async def run(
        self,
        task_ids: Sequence[str],
        mode: Mode = "async",
        batch_groups: int = 8,
        on_group: Callable[[GroupRecord], None] | None = None,
    ) -> Summary:
        """Play a group per task id; `lockstep` plays `batch_groups` groups at a time in rounds."""
        summary = Summary()
        start = time.perf_counter()

        def done(group: GroupRecord | None) -> None:
            if group is not None:
                summary.add(group)
                if on_group is not None:
                    on_group(group)

        if mode == "async":

            async def one(task_id: str) -> None:
                done(await self.play_group(task_id))

            await asyncio.gather(*(one(t) for t in task_ids))
        else:
            for i in range(0, len(task_ids), batch_groups):
                for group in await self.lockstep(task_ids[i : i + batch_groups]):
                    done(group)
        summary.seconds = time.perf_counter() - start
        return summary

    # -- lock-step mode ------------------------------------------------------------------------

    async def lockstep(self, task_ids: Sequence[str]) -> list[GroupRecord]:
        """All episodes of these groups in rounds: generate for every live one, then step every one."""
        groups = {t: [Episode(t) for _ in range(self.config.group_size)] for t in task_ids}
        episodes = [e for members in groups.values() for e in members]
        await asyncio.gather(*(self.start(e) for e in episodes))
        while live := [e for e in episodes if not e.done]:
            turns = await asyncio.gather(*(self.think(e) for e in live), return_exceptions=True)
            acting = []
            for e, turn in zip(live, turns, strict=True):
                if isinstance(turn, BaseException):
                    self.fail(e, str(turn))
                else:
                    acting.append((e, self.act(e, *turn)))
            for (e, _), outcome in zip(
                acting, await asyncio.gather(*(a for _, a in acting), return_exceptions=True), strict=True
            ):
                if isinstance(outcome, BaseException):
                    self.fail(e, str(outcome))
        finished = [await self.finish(t, members) for t, members in groups.items()]
        return [g for g in finished if g is not None]


# -- the command ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.rollout", description="Play groups of episodes into the rollout buffer (Redis)."
    )
    parser.add_argument("--env", required=True, choices=sorted(PROTOCOLS), help="environment")
    parser.add_argument("--groups", type=int, required=True, help="groups to play (one task each)")
    parser.add_argument("--group-size", type=int, required=True, help="episodes per group (G)")
    parser.add_argument("--split", default="train", help="task split (default train)")
    parser.add_argument("--offset", type=int, default=0, help="first task index of the split (default 0)")
    parser.add_argument("--max-steps", type=int, help="steps per episode (default: the env's)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens per turn (default 256)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1.0)")
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a model directory")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="weights of the in-process model (default float32; bfloat16 is ~2x faster on CPUs with AMX, "
        "and its sampler log-probs differ from a float32 learner's by bf16 rounding)",
    )
    parser.add_argument("--mode", choices=["async", "lockstep"], default="async", help="rollout mode (default async)")
    parser.add_argument("--concurrency", type=int, default=64, help="episodes in flight (default 64)")
    parser.add_argument("--policy-version", type=int, default=0, help="policy version to tag groups with")
    parser.add_argument("--redis-url", help="buffer Redis (default: an embedded one, gone when this ends)")
    parser.add_argument("--redis-prefix", default="sdar:rollout:", help="key prefix of the buffer's stream")
    parser.add_argument("--env-url", help="env service (default: one started here)")
    parser.add_argument(
        "--openai-url", help="an OpenAI-compatible completions server to generate with (default: the model in process)"
    )
    parser.add_argument("--cache-dir", type=Path, help="where models and generated games are cached")
    args = parser.parse_args(argv)
    for name in ("groups", "group_size", "max_new_tokens", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("offset", "policy_version"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be at least 1")
    if not 0 <= args.temperature <= 10 or not 0 < args.top_p <= 1:
        parser.error("--temperature must be in [0, 10] and --top-p in (0, 1]")
    for flag in ("env_url", "openai_url"):
        url = getattr(args, flag)
        if url is not None and not url.startswith(("http://", "https://")):
            parser.error(f"--{flag.replace('_', '-')} must be an http(s) URL")
    try:
        check_spec(args.model)
    except ModelNotFound as e:
        parser.error(str(e))
    return args


async def rollout(args: argparse.Namespace, env_url: str, redis_url: str) -> tuple[Summary, int]:
    sampling = Sampling(args.temperature, args.top_p, args.max_new_tokens)
    generator: Generator
    if args.openai_url:
        tokenizer = load_tokenizer(args.model, args.cache_dir)
        generator = OpenAIGenerator(args.openai_url, args.model, sampling)
    else:
        loaded = load_model(args.model, cache_dir=args.cache_dir, dtype=DTYPES[args.dtype])
        tokenizer = loaded.tokenizer
        generator = HFGenerator(loaded.model, tokenizer, sampling, max_concurrency=args.concurrency)
    buffer = RedisBuffer(redis_url, prefix=args.redis_prefix)
    config = RolloutConfig(
        env=args.env,
        group_size=args.group_size,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
        concurrency=args.concurrency,
        policy_version=args.policy_version,
    )
    try:
        async with AsyncEnvClient(env_url, retries=6) as client:
            try:
                total = (await client.tasks(args.env, args.split, 0, 1)).total
            except EnvServiceError as e:
                raise SystemExit(f"python -m trainer.rollout: error: {e.message}") from None
            except httpx.TransportError as e:
                raise SystemExit(f"python -m trainer.rollout: error: no env service at {env_url} ({e})") from None
            if args.offset + args.groups > total:
                raise SystemExit(f"{args.env}/{args.split} has {total} tasks; --offset + --groups is past its end")
            tasks = [f"{args.env}/{args.split}/{args.offset + i}" for i in range(args.groups)]
            roller = Roller(client, generator, tokenizer, protocol(args.env), buffer, config)
            with tqdm(total=args.groups, desc=f"{args.env} groups", unit="group") as bar:
                summary = await roller.run(tasks, mode=args.mode, on_group=lambda _: bar.update())
        if isinstance(generator, HFGenerator):
            engine = generator.engine
            share = engine.reused / max(engine.reused + engine.prefilled, 1)
            summary.notes.append(
                f"prompt tokens: {engine.prefilled} prefilled, {engine.reused} ({share:.0%}) copied from "
                "the KV cache of a running sequence with the same prefix"
            )
        return summary, (await buffer.stats()).length
    finally:
        await generator.aclose()
        await buffer.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        env_url = args.env_url
        if env_url is None:
            server_args = ["--envs", args.env] + (["--cache-dir", str(args.cache_dir)] if args.cache_dir else [])
            env_url = stack.enter_context(ServiceProcess("services.envs", server_args)).url
        redis_url = stack.enter_context(redis_server(args.redis_url))
        summary, length = asyncio.run(rollout(args, env_url, redis_url))
        print("\n".join(summary.lines()))
        where = f"{redis_url} stream {args.redis_prefix}groups"
        plural = "" if summary.groups == 1 else "s"
        print(f"{summary.groups} group{plural} written to {where} ({length} on the stream)")
        if args.redis_url is None:
            print("(an embedded Redis, stopped now: pass --redis-url to keep the groups)")


if __name__ == "__main__":
    main()
