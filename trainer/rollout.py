"""Rollout: play groups of episodes over HTTP with one generator, and stream finished groups into
the buffer (DESIGN §6).

Two modes over the same generator and env service:
- `async` (the default): every episode is a coroutine that asks the generator for its next turn
  as soon as its last env step returns, so generation batches whatever is waiting (continuous
  batching), and a finished group goes to the buffer at once;
- `lockstep`: the episodes of a batch move in rounds, as verl-agent's rollout loop does: every
  live episode generates, then every one steps, then the next round. Kept as the baseline.

A group is G episodes of one task; episodes of a task start from identical states (the env panels
are deterministic). Concurrency is bounded by a semaphore over episodes. Env calls are retried by
the client (steps are idempotent). Every episode says how it ended: `done` (the env ended it),
`step_limit`, or `fault`: anything that goes wrong inside one episode (a backend or env failure
after the retries, a timeout in async mode, a bad completion) ends that episode only, keeps what it
played for audit, and marks it `fault`, which the learner never trains on. Every episode is
deleted on the env service when it ends. A group the buffer will not take is retried, then kept
in `Roller.unsaved` until it lands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from tqdm import tqdm

from shared.envs_client import AsyncEnvClient, EnvServiceError
from shared.labels import LABEL_KEYS
from shared.launch import ServiceProcess
from shared.model_specs import DTYPE_NAMES, ModelNotFound, chat_prompt_ids, check_spec
from shared.redis import redis_server
from shared.rollout_wire import EpisodeEnd, GroupRecord, SamplingSettings, StepSample, Trajectory
from trainer.agents import PROTOCOLS, AgentProtocol, Turn, protocol
from trainer.buffer import Buffer, RedisBuffer
from trainer.generation import Completion, GenerationError, Generator, OpenAIGenerator, Sampling

Mode = Literal["async", "lockstep"]
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
    max_prompt_tokens: int | None = None
    """Default: what the generator's context leaves after `max_new_tokens`."""
    concurrency: int = 64
    """Episodes in flight at once."""
    episode_timeout_s: float = 600.0
    put_retries: int = 5
    """Attempts to write a finished group before it is reported and kept for `Roller.flush`."""
    put_backoff_s: float = 0.5


@dataclass
class Summary:
    groups: int = 0
    episodes: int = 0
    steps: int = 0
    won: int = 0
    invalid: int = 0
    ends: Counter[str] = field(default_factory=Counter)
    """Episodes by how they ended (`done`, `step_limit`, `fault`)."""
    response_tokens: int = 0
    seconds: float = 0.0
    unsaved: int = 0
    """Finished groups the buffer would not take (kept in `Roller.unsaved`)."""
    group_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Lines the backend adds (the HF engine: how much prefill the shared prefixes saved)."""

    def add(self, group: GroupRecord) -> None:
        self.groups += 1
        self.group_ids.append(group.group_id)
        for episode in group.episodes:
            self.episodes += 1
            self.won += episode.won
            self.ends[episode.end] += 1
            for step in episode.steps:
                self.steps += 1
                self.invalid += not step.valid
                self.response_tokens += len(step.response_token_ids)

    def lines(self) -> list[str]:
        def rate(n: int, d: int) -> str:
            return f"{n / d:.1%}" if d else "n/a"

        ends = ", ".join(f"{self.ends[e]} {e}" for e in ("done", "step_limit", "fault"))
        lines = [
            f"groups {self.groups}, episodes {self.episodes} ({ends}), steps {self.steps} in {self.seconds:.1f} s",
            f"success {rate(self.won, self.episodes)} ({self.won}), invalid steps {rate(self.invalid, self.steps)}",
            f"{self.response_tokens} response tokens, {self.response_tokens / max(self.seconds, 1e-9):.1f} tokens/s, "
            f"{self.episodes / max(self.seconds, 1e-9):.2f} episodes/s",
            *self.notes,
        ]
        if self.unsaved:
            lines.append(f"{self.unsaved} finished group(s) could not be written to the buffer")
        return lines


class LiveEpisode:
    """One episode's state between turns."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.episode_id = uuid.uuid4().hex
        self.opened = False  # it may exist on the env service: deleted when it ends
        self.task = ""
        self.observation = ""
        self.admissible: list[str] | None = None
        self.labels: dict[str, str] = {}
        self.past: list[Turn] = []
        self.samples: list[StepSample] = []
        self.end: EpisodeEnd | None = None
        self.fault: str | None = None
        self.won = False
        self.env_reward = 0.0

    @property
    def done(self) -> bool:
        return self.end is not None

    def record(self) -> Trajectory:
        if self.end is None:  # pragma: no cover - every path ends an episode before recording it
            raise RuntimeError(f"episode {self.episode_id} has not ended")
        return Trajectory(
            episode_id=self.episode_id,
            steps=self.samples,
            end=self.end,
            fault=self.fault,
            won=self.won,
            env_reward=self.env_reward,
        )


class Roller:
    def __init__(
        self,
        client: AsyncEnvClient,
        generator: Generator,
        tokenizer: Any,
        protocol: AgentProtocol,
        buffer: Buffer,
        config: RolloutConfig,
    ) -> None:
        self.client = client
        self.generator = generator
        self.tokenizer = tokenizer
        self.protocol = protocol
        self.buffer = buffer
        self.config = config
        self.max_prompt_tokens = config.max_prompt_tokens or generator.max_context - config.max_new_tokens
        self.unsaved: list[GroupRecord] = []
        """Finished groups the buffer has not taken yet, oldest first (`flush` tries them again)."""
        self._gate = asyncio.Semaphore(config.concurrency)
        self._flushing = asyncio.Lock()
        empty = chat_prompt_ids(tokenizer, [{"role": "user", "content": ""}])
        filled = chat_prompt_ids(tokenizer, [{"role": "user", "content": "x"}])
        parted = (i for i, (a, b) in enumerate(zip(empty, filled, strict=False)) if a != b)
        self._template_head = next(parted, len(empty))  # the chat template's tokens before the content
        if self.max_prompt_tokens <= len(empty):
            raise ValueError(f"max_prompt_tokens {self.max_prompt_tokens} leaves no room for a prompt")

    # -- one turn ------------------------------------------------------------------------------

    def render(self, episode: LiveEpisode) -> list[int]:
        """The prompt's token ids: the protocol's text in the model's chat template; without history
        when it would be too long (as the reference falls back to its no-history template), and cut
        from the left of the text beyond that, the template's head kept."""
        for past in (episode.past, []):
            text = self.protocol.prompt(episode.task, episode.observation, episode.admissible, past)
            ids = chat_prompt_ids(self.tokenizer, [{"role": "user", "content": text}])
            if len(ids) <= self.max_prompt_tokens:
                return ids
        head = self._template_head
        return ids[:head] + ids[len(ids) - (self.max_prompt_tokens - head) :]

    async def start(self, episode: LiveEpisode) -> None:
        max_steps = self.config.max_steps_by_task.get(episode.task_id, self.config.max_steps)
        episode.opened = True  # from now on it may exist on the env service (a create can land and time out)
        opened = await self.client.create(
            self.config.env, task_id=episode.task_id, max_steps=max_steps, episode_id=episode.episode_id
        )
        episode.task, episode.observation, episode.admissible = (
            opened.task,
            opened.observation,
            opened.admissible_actions,
        )
        episode.labels = {k: str(opened.info[k]) for k in LABEL_KEYS if opened.info.get(k) is not None}

    async def think(self, episode: LiveEpisode) -> tuple[list[int], Completion]:
        prompt = self.render(episode)
        return prompt, await self.generator.generate(prompt, self.config.max_new_tokens)

    async def act(self, episode: LiveEpisode, prompt: list[int], completion: Completion) -> None:
        text = self.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        projection = self.protocol.project(text)
        n = len(episode.samples)
        result = await self.client.step(episode.episode_id, projection.action, n)
        episode.samples.append(
            StepSample(
                step=n,
                policy_version=completion.policy_version,
                prompt_token_ids=prompt,
                response_token_ids=completion.token_ids,
                sampler_logprobs=completion.logprobs,
                action=projection.action,
                valid=projection.valid and bool(completion.token_ids),
                env_reward=result.reward,
                won=result.won,
                done=result.done,
                finish_reason=completion.finish_reason,
            )
        )
        episode.past.append(Turn(episode.observation, projection.action, result.observation))
        episode.observation, episode.admissible = result.observation, result.admissible_actions
        episode.won, episode.env_reward = result.won, result.reward
        if result.done:
            episode.end = "step_limit" if result.truncated else "done"

    # -- async mode ----------------------------------------------------------------------------

    async def play(self, episode: LiveEpisode) -> None:
        async with self._gate:
            try:
                await asyncio.wait_for(self._play(episode), self.config.episode_timeout_s)
            except TimeoutError:
                self.fail(episode, f"timed out after {self.config.episode_timeout_s} s")
            except Exception as e:  # noqa: BLE001 - whatever goes wrong in one episode ends only that one
                self.fail(episode, f"{type(e).__name__}: {e}")
            finally:
                await self.close(episode)

    @staticmethod
    def fail(episode: LiveEpisode, why: str) -> None:
        """End an episode that cannot go on; what it played is kept for audit, marked `fault`."""
        log.warning("episode %s of %s faulted: %s", episode.episode_id, episode.task_id, why)
        episode.end, episode.fault = "fault", why.splitlines()[0][:300] if why.strip() else "unknown"

    async def close(self, episode: LiveEpisode) -> None:
        """Delete the episode on the env service (finished or faulted), so a long run never fills its store."""
        if not episode.opened:
            return
        episode.opened = False
        try:
            await self.client.delete(episode.episode_id)
        except Exception as e:  # noqa: BLE001 - the store expires it anyway; a failed close fails nothing
            log.warning("could not close episode %s: %s", episode.episode_id, e)

    async def _play(self, episode: LiveEpisode) -> None:
        await self.start(episode)
        while not episode.done:
            prompt, completion = await self.think(episode)
            await self.act(episode, prompt, completion)

    async def play_group(self, task_id: str) -> GroupRecord:
        episodes = [LiveEpisode(task_id) for _ in range(self.config.group_size)]
        await asyncio.gather(*(self.play(e) for e in episodes))
        return await self.finish(task_id, episodes)

    async def finish(self, task_id: str, episodes: Sequence[LiveEpisode]) -> GroupRecord:
        """The group's record, written to the buffer (or kept in `unsaved` when the buffer will not take it)."""
        records = [e.record() for e in episodes]
        versions = [s.policy_version for r in records for s in r.steps]
        opened = [e for e in episodes if e.task]
        labels = opened[0].labels if opened else {}
        sampling = self.generator.sampling
        group = GroupRecord(
            group_id=uuid.uuid4().hex,
            env=self.config.env,
            task_id=task_id,
            task=opened[0].task if opened else "",
            **labels,
            policy_version=min(versions, default=self.generator.policy_version),
            sampling=SamplingSettings(
                temperature=sampling.temperature, top_p=sampling.top_p, max_new_tokens=self.config.max_new_tokens
            ),
            logprobs_mode=self.generator.logprobs_mode,
            backend=self.generator.backend,
            episodes=records,
            usable=sum(r.usable for r in records),
            created_at=time.time(),
        )
        self.unsaved.append(group)
        await self.flush()
        return group

    async def flush(self) -> bool:
        """Write the groups the buffer has not taken yet, oldest first, each with `put_retries` attempts;
        True when none is left. One flush at a time: a group is never written twice."""
        async with self._flushing:
            while self.unsaved:
                group = self.unsaved[0]
                for attempt in range(self.config.put_retries):
                    try:
                        await self.buffer.put(group)
                        break
                    except Exception as e:  # noqa: BLE001 - a buffer outage must not lose the group
                        log.warning("buffer put of group %s failed (attempt %d): %s", group.group_id, attempt + 1, e)
                        if attempt + 1 < self.config.put_retries:
                            await asyncio.sleep(self.config.put_backoff_s * 2**attempt)
                else:
                    log.error("%d finished group(s) kept in memory: the buffer does not take them", len(self.unsaved))
                    return False
                self.unsaved.pop(0)
            return True

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

        def done(group: GroupRecord) -> None:
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
        await self.flush()
        summary.unsaved = len(self.unsaved)
        summary.seconds = time.perf_counter() - start
        return summary

    # -- lock-step mode ------------------------------------------------------------------------

    async def lockstep(self, task_ids: Sequence[str]) -> list[GroupRecord]:
        """All episodes of these groups in rounds: generate for every live one, then step every one."""
        groups = {t: [LiveEpisode(t) for _ in range(self.config.group_size)] for t in task_ids}
        episodes = [e for members in groups.values() for e in members]
        await self._round(episodes, self.start)
        while live := [e for e in episodes if not e.done]:
            await asyncio.gather(*(self.close(e) for e in episodes if e.done))  # as each one ends
            turns = await self._round(live, self.think)
            acting: dict[LiveEpisode, tuple[list[int], Completion]] = {
                e: turn for e, turn in zip(live, turns, strict=True) if turn is not None
            }

            async def act(e: LiveEpisode, acting: dict[LiveEpisode, Any] = acting) -> None:
                await self.act(e, *acting[e])

            await self._round(list(acting), act)
        await asyncio.gather(*(self.close(e) for e in episodes))
        return [await self.finish(t, members) for t, members in groups.items()]

    async def _round(self, episodes: list[LiveEpisode], call: Callable[[LiveEpisode], Any]) -> list[Any]:
        """`call` for every episode at once; an episode whose call raised is ended as a fault (None)."""
        outcomes = await asyncio.gather(*(call(e) for e in episodes), return_exceptions=True)
        for episode, outcome in zip(episodes, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self.fail(episode, f"{type(outcome).__name__}: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
        return [None if isinstance(o, BaseException) else o for o in outcomes]


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
        choices=DTYPE_NAMES,
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


async def probe(env_url: str, env: str, split: str) -> int:
    """The number of tasks in the split, asked with few retries: a wrong URL is an error in a second,
    not after the backoff of a long run's client (which rides out an env restart)."""
    async with AsyncEnvClient(env_url, retries=2) as client:
        try:
            return (await client.tasks(env, split, 0, 1)).total
        except EnvServiceError as e:
            raise SystemExit(f"python -m trainer.rollout: error: {e.message}") from None
        except httpx.TransportError as e:
            raise SystemExit(f"python -m trainer.rollout: error: no env service at {env_url} ({e})") from None


async def rollout(args: argparse.Namespace, env_url: str, redis_url: str) -> tuple[Summary, int | None]:
    total = await probe(env_url, args.env, args.split)
    if args.offset + args.groups > total:
        raise SystemExit(f"{args.env}/{args.split} has {total} tasks; --offset + --groups is past its end")
    tasks = [f"{args.env}/{args.split}/{args.offset + i}" for i in range(args.groups)]

    from shared.models import DTYPES, load_model, load_tokenizer  # torch and transformers, after the flags
    from trainer.engine import HFGenerator

    sampling = Sampling(args.temperature, args.top_p, args.max_new_tokens)
    generator: Generator
    if args.openai_url:
        tokenizer = load_tokenizer(args.model, args.cache_dir)
        generator = OpenAIGenerator(args.openai_url, args.model, sampling)
    else:
        loaded = load_model(args.model, cache_dir=args.cache_dir, dtype=DTYPES[args.dtype])
        tokenizer = loaded.tokenizer
        generator = HFGenerator(loaded.model, tokenizer, sampling, max_concurrency=args.concurrency)
    generator.policy_version = args.policy_version
    buffer = RedisBuffer(redis_url, prefix=args.redis_prefix)
    config = RolloutConfig(
        env=args.env,
        group_size=args.group_size,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
        concurrency=args.concurrency,
    )
    try:
        if isinstance(generator, OpenAIGenerator):
            try:
                await generator.check_model()
            except GenerationError as e:
                raise SystemExit(f"python -m trainer.rollout: error: {e} (--openai-url, --model)") from None
        async with AsyncEnvClient(env_url, retries=6) as client:
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
        try:
            length: int | None = (await buffer.stats()).length
        except Exception as e:  # noqa: BLE001 - the summary stands without it
            log.warning("buffer stats unavailable: %s", e)
            length = None
        return summary, length
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
        written = summary.groups - summary.unsaved
        on_stream = "" if length is None else f" ({length} on the stream)"
        print(f"{written} of {summary.groups} group{plural} written to {where}{on_stream}")
        if args.redis_url is None:
            print("(an embedded Redis, stopped now: pass --redis-url to keep the groups)")
        if summary.unsaved:
            raise SystemExit(f"python -m trainer.rollout: error: {summary.unsaved} group(s) were not written")
        if summary.episodes == 0 or summary.ends["fault"] == summary.episodes:  # nothing a learner can use
            raise SystemExit(
                f"python -m trainer.rollout: error: every one of the {summary.episodes} episodes faulted, so no "
                "group can be trained on (the warnings above say why)"
            )


if __name__ == "__main__":
    main()
