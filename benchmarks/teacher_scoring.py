"""Teacher benchmark: scored response tokens per second, in-process against over HTTP, one run.

    python -m benchmarks.teacher_scoring [--models tiny,smollm2] [--items 16] [--response-tokens 64]

The items are ALFWorld-like: a chat prompt of an observation and admissible actions (~250 tokens),
a response of fixed length, skills retrieved by the rule router (general + task type, as the
trainer would ask). Paths: `TeacherService.score` in this process (what an in-process trainer
calls), one HTTP request with every item, and the items split over 4 concurrent HTTP requests
(merged by the server's batcher). Each path runs `--repeats` times after a warm-up; the median
counts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx

from services.teacher.service import TeacherService
from shared.launch import ServiceProcess
from shared.settings import TeacherSettings
from shared.teacher_wire import ScoreRequest

OBSERVATION = (
    "You are in the middle of a room. Looking quickly around you, you see a cabinet 4, a cabinet 3, a cabinet 2, "
    "a cabinet 1, a coffeemachine 1, a countertop 2, a countertop 1, a drawer 3, a drawer 2, a drawer 1, a fridge 1, "
    "a garbagecan 1, a microwave 1, a shelf 3, a shelf 2, a shelf 1, a sinkbasin 1, a stoveburner 4, a stoveburner 3, "
    "a stoveburner 2, a stoveburner 1, and a toaster 1.\nYour task is to: heat some egg and put it in garbagecan."
)
ACTIONS = ["go to countertop 1", "go to fridge 1", "go to microwave 1", "open drawer 1", "inventory", "look"]


def items(service: TeacherService, n: int, response_tokens: int) -> list[dict[str, Any]]:
    text = " ".join(["<think>The egg is likely in the fridge, then I heat it in the microwave.</think>"] * 20)
    response = service.tokenizer.encode(text, add_special_tokens=False)[:response_tokens]
    out = []
    for i in range(n):
        content = f"{OBSERVATION}\nStep {i}. Your admissible actions are: {', '.join(ACTIONS)}."
        out.append(
            {
                "messages": [{"role": "user", "content": content}],
                "response_token_ids": response,
                "env": "alfworld",
                "task": "heat some egg and put it in garbagecan",
                "metadata": {"task_type": "pick_heat_then_place_in_recep"},
            }
        )
    return out


def timed(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def concurrent(url: str, bodies: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        responses = await asyncio.gather(*(client.post("/v1/score", json=b) for b in bodies))
    for r in responses:
        r.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--response-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| model | path | s per pass | scored tokens/s | vs in-process |\n|---|---|---|---|---|")
    for model in args.models.split(","):
        service = TeacherService(TeacherSettings(model=model))
        body = {"items": items(service, args.items, args.response_tokens)}
        tokens = args.items * args.response_tokens
        request = ScoreRequest.model_validate(body)
        prompt = service.scorer.student_prompt(service.prepare(request).items[0][0])
        in_process = timed(lambda s=service, r=request: s.score(r), args.repeats)  # type: ignore[misc]
        rows = [("in-process `TeacherService.score`", in_process)]
        with ServiceProcess("services.teacher", ["--model", model]) as server:
            with httpx.Client(base_url=server.url, timeout=600) as client:
                one = timed(lambda c=client, b=body: c.post("/v1/score", json=b).raise_for_status(), args.repeats)  # type: ignore[misc]
            rows.append(("HTTP, one request", one))
            quarter = args.items // 4
            split = [{"items": body["items"][i : i + quarter]} for i in range(0, args.items, quarter)]
            four = timed(lambda u=server.url, b=split: asyncio.run(concurrent(u, b)), args.repeats)  # type: ignore[misc]
            rows.append(("HTTP, 4 concurrent requests (batched)", four))
        print(f"<!-- {model}: {args.items} items, prompt {len(prompt)} tokens, response {args.response_tokens} -->")
        for name, seconds in rows:
            print(f"| {model} | {name} | {seconds:.3f} | {tokens / seconds:,.0f} | {rows[0][1] / seconds:.2f} |")


if __name__ == "__main__":
    main()
