"""Rollout benchmark: async continuous batching against lock-step rounds, and buffer throughput.

    python -m benchmarks.rollout_modes [--model tiny] [--groups 16] [--group-size 4] [--rounds 2]

Both modes play the same fixed panel: tasks of `--env` (counter, an instant env, by default;
alfworld steps take ~140 ms) whose step limits run 1 to 8, so episodes have mixed lengths; each
turn's length is drawn from 8 to `--max-new-tokens` by a hash of its prompt, standing in for a
trained model's turns that end at different lengths (a random model never stops early). Same
generator, sampling and concurrency: async keeps up to `--concurrency` episodes in flight and
starts a group the moment there is room; lock-step plays `concurrency / group-size` groups at a
time in rounds, as verl-agent does. The modes alternate `--rounds` times in one run; the env server
runs in its own process. `--env-latency-ms LOW,HIGH` adds a delay to every env step;
`--prefix-sharing` also runs async with the engine's prompt-prefix sharing off. Buffer: put,
then get and acknowledge, of groups of realistic size (4 episodes x 4 steps, 512 prompt and 64
response tokens per step), on Redis and in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time

import httpx

from shared.envs_client import AsyncEnvClient
from shared.launch import ServiceProcess
from shared.models import load_model
from shared.redis import redis_server
from shared.rollout_wire import GroupRecord, SamplingSettings, StepSample, Trajectory
from trainer.agents import protocol
from trainer.buffer import Buffer, MemoryBuffer, RedisBuffer
from trainer.engine import HFGenerator
from trainer.generation import Completion, Sampling
from trainer.rollout import Roller, RolloutConfig


class MixedTurns:
    """Each turn ends after 8 to `longest` tokens, fixed by a hash of its prompt."""

    def __init__(self, inner: HFGenerator, longest: int) -> None:
        self.inner = inner
        self.longest = longest

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
        digest = hashlib.sha256(str(prompt_ids).encode()).digest()
        length = 8 + int.from_bytes(digest[:4], "big") % (self.longest - 7)
        return await self.inner.generate(prompt_ids, length)

    def close(self) -> None:
        self.inner.close()


class SlowEnv(httpx.AsyncHTTPTransport):
    """Delays each env step by `low`-`high` ms, fixed by a hash of the request: an env slower than
    the counter (a planner, a remote retriever, a browser)."""

    def __init__(self, low_ms: float, high_ms: float) -> None:
        super().__init__()
        self.low, self.high = low_ms, high_ms

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.high > 0 and request.url.path.endswith("/step"):
            digest = hashlib.sha256(request.url.path.encode() + request.content).digest()
            fraction = int.from_bytes(digest[:4], "big") / 2**32
            await asyncio.sleep((self.low + (self.high - self.low) * fraction) / 1000)
        return await super().handle_async_request(request)


async def modes(args: argparse.Namespace, url: str) -> dict[str, list[float]]:
    loaded = load_model(args.model)
    inner = HFGenerator(
        loaded.model, loaded.tokenizer, Sampling(max_new_tokens=args.max_new_tokens), max_concurrency=args.concurrency
    )
    generator = MixedTurns(inner, args.max_new_tokens)
    split = {"alfworld": "valid_seen", "counter": "train"}.get(args.env, "test")
    tasks = [f"{args.env}/{split}/{i}" for i in range(args.groups)]
    lengths = {t: 1 + (i * 5) % 8 for i, t in enumerate(tasks)}
    config = RolloutConfig(
        env=args.env,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        concurrency=args.concurrency,
        max_steps_by_task=lengths,
    )
    shared = inner.engine.min_shared_prefix
    unshared = "async, no prefix sharing"
    rates: dict[str, list[float]] = {"async": [], "lockstep": []} | ({unshared: []} if args.prefix_sharing else {})
    low, _, high = args.env_latency_ms.partition(",")
    transport = SlowEnv(float(low), float(high or low))
    async with AsyncEnvClient(url, transport=transport) as client:
        roller = Roller(client, generator, loaded.tokenizer, protocol(args.env), MemoryBuffer(), config)
        await roller.run(tasks[:2])  # warm-up: the generator
        await asyncio.gather(*(client.create(args.env, task_id=t, max_steps=1) for t in tasks))  # and every game
        for _ in range(args.rounds):
            for mode in rates:
                inner.engine.min_shared_prefix = 10**9 if mode == unshared else shared
                summary = await roller.run(
                    tasks,
                    mode="lockstep" if mode == "lockstep" else "async",
                    batch_groups=args.concurrency // args.group_size,
                )
                assert summary.steps == args.group_size * sum(lengths.values())
                rates[mode].append(summary.episodes / summary.seconds)
    generator.close()
    return rates


def sample_group(i: int) -> GroupRecord:
    step = StepSample(
        step=0,
        policy_version=0,
        prompt_token_ids=list(range(1000, 1512)),
        response_token_ids=list(range(64)),
        sampler_logprobs=[-1.5] * 64,
        action="go to fridge 1",
        valid=True,
        env_reward=0.0,
        won=False,
        done=False,
        finish_reason="stop",
    )
    steps = [step.model_copy(update={"step": k, "done": k == 3}) for k in range(4)]
    episodes = [
        Trajectory(episode_id=f"{i}-{e}", steps=steps, end="step_limit", won=False, env_reward=0.0) for e in range(4)
    ]
    return GroupRecord(
        group_id=str(i),
        env="alfworld",
        task_id=f"alfworld/train/{i}",
        task="put a clean mug in the coffee machine",
        task_type="pick_clean_then_place_in_recep",
        policy_version=0,
        sampling=SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=64),
        logprobs_mode="processed_logprobs",
        backend="hf",
        episodes=episodes,
        usable=4,
        created_at=time.time(),
    )


async def buffer_rate(buffer: Buffer, n: int) -> tuple[float, float]:
    groups = [sample_group(i) for i in range(n)]
    start = time.perf_counter()
    for g in groups:
        await buffer.put(g)
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    got = 0
    while got < n:
        batch = await buffer.get(16, policy_version=0)
        await buffer.ack([d.id for d in batch])
        got += len(batch)
    get_s = time.perf_counter() - start
    await buffer.close()
    return n / put_s, n / get_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--env", default="counter", help="counter (an instant env), alfworld (~140 ms a step), ...")
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--buffer-groups", type=int, default=500)
    parser.add_argument("--buffer-only", action="store_true", help="measure only the buffer")
    parser.add_argument(
        "--prefix-sharing", action="store_true", help="also run async with the engine's prompt-prefix sharing off"
    )
    parser.add_argument(
        "--env-latency-ms", default="0", help="LOW,HIGH: delay each env step by LOW-HIGH ms (a slower env); 0 for none"
    )
    args = parser.parse_args()
    if not args.buffer_only:
        rollout_modes(args)
    buffers(args)


def rollout_modes(args: argparse.Namespace) -> None:
    with ServiceProcess("services.envs", ["--envs", args.env]) as server:
        rates = asyncio.run(modes(args, server.url))
    print(
        f"{args.env}: {args.groups} groups x {args.group_size} episodes, 1-8 steps, "
        f"8-{args.max_new_tokens} new tokens a turn, model {args.model}, concurrency {args.concurrency}, "
        f"added env latency {args.env_latency_ms} ms\n"
    )
    print("| mode | episodes/s (each round) | median | vs lock-step |\n|---|---|---|---|")
    base = statistics.median(rates["lockstep"])
    for mode, values in rates.items():
        median = statistics.median(values)
        print(f"| {mode} | {', '.join(f'{v:.2f}' for v in values)} | {median:.2f} | {median / base:.2f} |")


def buffers(args: argparse.Namespace) -> None:
    with redis_server() as url:
        redis_put, redis_get = asyncio.run(buffer_rate(RedisBuffer(url, prefix="bench:"), args.buffer_groups))
    memory_put, memory_get = asyncio.run(buffer_rate(MemoryBuffer(), args.buffer_groups))
    size = len(sample_group(0).model_dump_json())
    print(f"\nbuffer: {args.buffer_groups} groups of {size / 1024:.0f} KiB of JSON each (zlib on the wire)\n")
    print("| buffer | put groups/s | get+ack groups/s |\n|---|---|---|")
    print(f"| Redis stream (embedded Valkey) | {redis_put:,.0f} | {redis_get:,.0f} |")
    print(f"| in memory | {memory_put:,.0f} | {memory_get:,.0f} |")


if __name__ == "__main__":
    main()
