"""WebShop env benchmark: steps per second and search latency, in-process and over HTTP, one run.

    python -m benchmarks.webshop_env [--episodes 200] [--cache-dir DIR]

Every episode follows an oracle script on a test goal (search the goal's query, page to the target,
open it, choose its options, read its description, buy): the same actions on every path. Paths: the
site simulator alone, the episode service in-process (store, live cache, idempotency), HTTP one step
per request, and the batch route with every due episode in one request. Search latency: the BM25
engine alone (goal queries, and whole instructions as long queries) and a `search[...]` step over
HTTP against a `click[...]` step.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from benchmarks.episodes import service_rate
from services.envs.webshop import WebshopEnvironment
from shared.envs_client import EnvClient
from shared.launch import ServiceProcess
from shared.settings import EnvServiceSettings
from shared.wire import BatchStepItem, StepResult


def oracle_script(env: WebshopEnvironment, task_id: str) -> list[str]:
    """The oracle's actions on a task, found by playing it once in-process."""
    task = env.task_by_id(task_id)
    goal = env.goal(task.split, task.index)
    simulator = env.open(task)
    simulator.reset()
    target = f"click[{goal.asin.lower()}]"
    actions = [f"search[{goal.query}]"]
    transition = simulator.step(actions[0])
    while target not in (transition.admissible_actions or []):
        actions.append("click[next >]")
        transition = simulator.step(actions[-1])
    options = [f"click[{v}]" for v in (goal.goal_options.values() if isinstance(goal.goal_options, dict) else [])]
    return [*actions, target, "click[description]", "click[< prev]", *options, "click[buy now]"]


def simulator_rate(env: WebshopEnvironment, scripts: dict[str, list[str]]) -> tuple[int, float]:
    simulators = []
    for task_id in scripts:
        simulator = env.open(env.task_by_id(task_id))
        simulator.reset()
        simulators.append((simulator, scripts[task_id]))
    steps = sum(len(s) for s in scripts.values())
    start = time.perf_counter()
    for simulator, script in simulators:
        for action in script:
            simulator.step(action)
    return steps, time.perf_counter() - start


def http_rate(url: str, scripts: dict[str, list[str]], batch: bool) -> tuple[int, float, list[float], list[float]]:
    """(steps, seconds, search step latencies, click step latencies)."""
    searches: list[float] = []
    clicks: list[float] = []
    with EnvClient(url) as client:
        episodes = [(client.create("webshop", task_id=t).episode_id, s) for t, s in scripts.items()]
        steps = sum(len(s) for _, s in episodes)
        start = time.perf_counter()
        for n in range(max(len(s) for _, s in episodes)):
            due = [(eid, s[n]) for eid, s in episodes if n < len(s)]
            if batch:
                results = client.step_many([BatchStepItem(episode_id=eid, action=a, step=n) for eid, a in due])
                assert all(isinstance(r, StepResult) for r in results), results
                continue
            for eid, action in due:
                t0 = time.perf_counter()
                client.step(eid, action, n)
                (searches if action.startswith("search[") else clicks).append(time.perf_counter() - t0)
        return steps, time.perf_counter() - start, searches, clicks


def search_latency(env: WebshopEnvironment, queries: list[str]) -> float:
    times = []
    for query in queries:
        start = time.perf_counter()
        env.search.search(query)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--cache-dir", type=Path, default=EnvServiceSettings().cache_dir)
    args = parser.parse_args()
    settings = EnvServiceSettings(envs=["webshop"], cache_dir=args.cache_dir, live_cache_size=args.episodes)
    start = time.perf_counter()
    env = WebshopEnvironment.from_settings(settings)
    build_s = time.perf_counter() - start
    task_ids = [f"webshop/test/{i % 500}" for i in range(args.episodes)]
    scripts = {t: oracle_script(env, t) for t in dict.fromkeys(task_ids)}

    goals = [env.goal("test", i) for i in range(500)]
    query_s = search_latency(env, [g.query for g in goals])
    instruction_s = search_latency(env, [g.instruction_text for g in goals])
    sim_steps, sim_s = simulator_rate(env, scripts)
    svc_steps, svc_s = asyncio.run(service_rate(env, scripts))
    server_args = ["--envs", "webshop", "--cache-dir", str(args.cache_dir), "--live-cache-size", str(args.episodes)]
    with ServiceProcess("services.envs", server_args) as server:
        http_steps, http_s, searches, clicks = http_rate(server.url, scripts, batch=False)
        batch_steps, batch_s, _, _ = http_rate(server.url, scripts, batch=True)

    print(f"catalog {len(env.catalog.products)} products, {len(env.catalog.goals)} goals, built in {build_s:.1f} s")
    print(f"{len(scripts)} oracle episodes, {sim_steps} steps\n")
    rows = [
        ("site simulator, in-process", sim_steps / sim_s),
        ("episode service, in-process", svc_steps / svc_s),
        ("HTTP, one step per request", http_steps / http_s),
        (f"HTTP, batch route (up to {len(scripts)} steps a request)", batch_steps / batch_s),
    ]
    print("| path | steps/s | vs simulator |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / rows[0][1]:.2f} |")
    print("\n| search latency (median) | ms |\n|---|---|")
    print(f"| BM25 engine, goal query ({len(goals)} queries) | {query_s * 1000:.2f} |")
    print(f"| BM25 engine, whole instruction as the query | {instruction_s * 1000:.2f} |")
    print(f"| HTTP `search[...]` step | {statistics.median(searches) * 1000:.2f} |")
    print(f"| HTTP `click[...]` step | {statistics.median(clicks) * 1000:.2f} |")


if __name__ == "__main__":
    main()
