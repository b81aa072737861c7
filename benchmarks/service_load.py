"""Load on the services as processes, bounded and local (issue 15 item 11).

    python -m benchmarks.service_load [--episodes 1000] [--steps 5] [--seconds 10]

1. **Env service**: `--episodes` concurrent episodes of the `counter` env through two replicas that
   share one Redis, driven over the batch route (`POST /v1/episodes:step`, 50 steps a request). Each
   round sends every episode's next step, the batches alternating between the replicas, so an
   episode moves from one replica to the other at every step and is replayed from the store there.
   Then the same through the single-step route, every episode's step in flight at once. Latency of a
   step is that of the request that carried it; errors are any status but 200 and any per-step error.
2. **Teacher** (the tiny model): 16 callers score in a loop while `/health` is probed every 50 ms.
3. **Completions server** (the tiny model): 32 concurrent requests of 32 new tokens, for `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from shared.launch import ServiceProcess
from shared.redis import redis_server

BATCH = 50


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


async def env_load(episodes: int, steps: int) -> None:
    with redis_server() as redis_url:
        prefix = f"bench-load-{uuid.uuid4().hex[:6]}:"
        args = [
            "--envs",
            "counter",
            "--redis-url",
            redis_url,
            "--redis-prefix",
            prefix,
            "--max-open-episodes",
            "100000",
        ]
        with ServiceProcess("services.envs", args) as a, ServiceProcess("services.envs", args) as b:
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                replicas = [a.url, b.url]
                create = asyncio.Semaphore(64)

                async def open_one(k: int) -> str:
                    async with create:
                        body = {"split": "train", "index": 6}  # count to 7: no episode ends within the steps
                        response = await client.post(f"{replicas[k % 2]}/v1/envs/counter/episodes", json=body)
                        response.raise_for_status()
                        return str(response.json()["episode_id"])

                for route in ("batch", "single"):
                    ids = await asyncio.gather(*(open_one(k) for k in range(episodes)))
                    latencies, errors, started = [], 0, time.perf_counter()
                    codes: Counter[str] = Counter()
                    for n in range(steps):
                        if route == "batch":
                            chunks = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]

                            async def batch(
                                c: int, chunk: list[str], n: int = n, codes: Counter[str] = codes
                            ) -> tuple[float, int, int]:
                                body = {"steps": [{"episode_id": e, "action": "inc", "step": n} for e in chunk]}
                                t = time.perf_counter()
                                r = await client.post(f"{replicas[(c + n) % 2]}/v1/episodes:step", json=body)
                                if r.status_code != 200:
                                    codes[str(r.status_code)] += len(chunk)
                                    return time.perf_counter() - t, len(chunk), len(chunk)
                                failed = [x["error"]["code"] for x in r.json()["results"] if "error" in x]
                                codes.update(failed)
                                return time.perf_counter() - t, len(chunk), len(failed)

                            results = await asyncio.gather(*(batch(c, chunk) for c, chunk in enumerate(chunks)))
                            for seconds, count, bad in results:
                                latencies += [seconds] * count
                                errors += bad
                        else:

                            async def single(k: int, e: str, n: int = n) -> tuple[float, int]:
                                t = time.perf_counter()
                                r = await client.post(
                                    f"{replicas[(k + n) % 2]}/v1/episodes/{e}/step", json={"action": "inc", "step": n}
                                )
                                return time.perf_counter() - t, int(r.status_code != 200)

                            for seconds, bad in await asyncio.gather(*(single(k, e) for k, e in enumerate(ids))):
                                latencies.append(seconds)
                                errors += bad
                    wall = time.perf_counter() - started
                    print(
                        f"| {route} route | {episodes} | {len(latencies)} | {quantiles(latencies)} | "
                        f"{len(latencies) / wall:,.0f} | {errors} |" + (f" {dict(codes)}" if codes else ""),
                        flush=True,
                    )


async def probe_while(
    url: str, load: Callable[[], Awaitable[Any]], callers: int, seconds: float
) -> tuple[list[float], list[float], int]:
    """`callers` loops of `load` for `seconds`, `/health` probed every 50 ms meanwhile: the load's
    latencies, the probe's, and the load's errors."""
    stop = time.perf_counter() + seconds
    done: list[float] = []
    errors = 0

    async def caller() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                await load()
            except httpx.HTTPError:
                errors += 1
            done.append(time.perf_counter() - t)

    probes: list[float] = []

    async def probe(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            (await client.get(f"{url}/health")).raise_for_status()
            probes.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(timeout=30) as prober:
        await asyncio.gather(probe(prober), *(caller() for _ in range(callers)))
    return done, probes, errors


ITEM = {
    "messages": [{"role": "user", "content": "Your task is to: heat some egg and put it in garbagecan."}],
    "response_text": "<think>find the egg</think><action>go to fridge 1</action>",
    "env": "alfworld",
    "task": "heat some egg and put it in garbagecan",
    "metadata": {"task_type": "pick_heat_then_place_in_recep"},
}


async def teacher_load(seconds: float) -> None:
    with ServiceProcess("services.teacher", ["--model", "tiny"]) as teacher:
        async with httpx.AsyncClient(timeout=60) as client:

            async def score() -> None:
                (await client.post(f"{teacher.url}/v1/score", json={"items": [ITEM, ITEM]})).raise_for_status()

            done, probes, errors = await probe_while(teacher.url, score, 16, seconds)
    print(f"| teacher, 16 callers | {len(done)} scores | {quantiles(done)} | /health: {quantiles(probes)} | {errors} |")


async def completions_load(seconds: float) -> None:
    with ServiceProcess("trainer.openai_server", ["--model", "tiny"]) as server:
        async with httpx.AsyncClient(timeout=60) as client:

            async def complete() -> None:
                body = {"prompt": [1, 2, 3, 4, 5], "max_tokens": 32, "logprobs": 0}
                (await client.post(f"{server.url}/v1/completions", json=body)).raise_for_status()

            done, probes, errors = await probe_while(server.url, complete, 32, seconds)
    print(
        f"| completions, 32 concurrent | {len(done)} completions ({len(done) * 32 / seconds:,.0f} tokens/s) | "
        f"{quantiles(done)} | /health: {quantiles(probes)} | {errors} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print("| route | episodes | steps | step latency | steps/s | errors |\n|---|---|---|---|---|---|")
    asyncio.run(env_load(args.episodes, args.steps))
    print("\n| load | done | latency | /health latency | errors |\n|---|---|---|---|---|")
    asyncio.run(teacher_load(args.seconds))
    asyncio.run(completions_load(args.seconds))


if __name__ == "__main__":
    main()
