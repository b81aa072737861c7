"""Search-QA benchmark: retrieval latency and queries per second (in-process and `/retrieve`, single
and batch), and steps per second of oracle episodes, in-process and over HTTP, one run.

    python -m benchmarks.searchqa_env [--episodes 300] [--no-dense] [--cache-dir DIR]

Queries are the test panel's questions (question-only retrieval, as an agent's first search). The
episodes are the oracle reader's on the test panel: its searches, then its answer, found once
in-process and replayed on every path. Dense retrieval embeds the corpus once (cached in the cache
folder); its build time is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.episodes import service_rate
from services.envs.searchqa.env import SearchQAEnvironment, embedded_world
from services.envs.searchqa.oracle import reader
from services.envs.searchqa.retrieval import BM25Retriever, DenseRetriever, Retriever
from shared.envs_client import EnvClient
from shared.launch import ServiceProcess
from shared.settings import EnvServiceSettings
from shared.wire import BatchStepItem, StepResult

BATCH = 64


def oracle_script(env: SearchQAEnvironment, index: int) -> list[str]:
    """The oracle reader's actions on a test question, found by playing it in-process."""
    q = env.question("test", index)
    steps = reader(q.chains, q.op)
    actions = []
    try:
        query = next(steps)
        while True:
            actions.append(f"<search>{query}</search>")
            query = steps.send([h.passage.contents for h in env.search(query)])
    except StopIteration as done:
        actions.append(f"<answer>{done.value}</answer>")
    return actions


def per_query(retriever: Retriever, queries: list[str]) -> list[float]:
    times = []
    for q in queries:
        start = time.perf_counter()
        retriever.retrieve_many([q], 3)
        times.append(time.perf_counter() - start)
    return times


def batched(retriever: Retriever, queries: list[str]) -> float:
    start = time.perf_counter()
    for i in range(0, len(queries), BATCH):
        retriever.retrieve_many(queries[i : i + BATCH], 3)
    return len(queries) / (time.perf_counter() - start)


def over_http(url: str, queries: list[str]) -> tuple[list[float], float]:
    """Latencies of single-form requests, and queries/s of batch-form requests."""
    times = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for q in queries:
            start = time.perf_counter()
            client.post("/retrieve", json={"query": q, "topk": 3}).raise_for_status()
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, len(queries), BATCH):
            client.post("/retrieve", json={"queries": queries[i : i + BATCH], "topk": 3}).raise_for_status()
        return times, len(queries) / (time.perf_counter() - start)


def http_rate(url: str, scripts: dict[str, list[str]], batch: bool) -> tuple[int, float, int]:
    """(steps, seconds, episodes won)."""
    with EnvClient(url) as client:
        episodes = [(client.create("searchqa", task_id=t, max_steps=9).episode_id, s) for t, s in scripts.items()]
        won = 0
        start = time.perf_counter()
        for n in range(max(len(s) for _, s in episodes)):
            due = [(eid, s[n]) for eid, s in episodes if n < len(s)]
            if batch:
                results = client.step_many([BatchStepItem(episode_id=eid, action=a, step=n) for eid, a in due])
            else:
                results = [client.step(eid, a, n) for eid, a in due]
            assert all(isinstance(r, StepResult) for r in results), results
            won += sum(r.won for r in results if isinstance(r, StepResult))
        return sum(len(s) for _, s in episodes), time.perf_counter() - start, won


def ms(times: list[float]) -> str:
    times = sorted(times)
    return f"{statistics.median(times) * 1000:.2f} | {times[int(len(times) * 0.95)] * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--no-dense", action="store_true", help="skip dense retrieval")
    parser.add_argument("--cache-dir", type=Path, default=EnvServiceSettings().cache_dir)
    args = parser.parse_args()

    start = time.perf_counter()
    world, panels = embedded_world(0)
    world_s = time.perf_counter() - start
    start = time.perf_counter()
    bm25 = BM25Retriever(world.passages)
    index_s = time.perf_counter() - start
    settings = EnvServiceSettings(envs=["searchqa"], cache_dir=args.cache_dir, live_cache_size=args.episodes)
    env = SearchQAEnvironment.from_settings(settings)
    queries = [q.question for q in panels["test"]]

    rows = [("BM25, in-process", per_query(bm25, queries), batched(bm25, queries))]
    if not args.no_dense:
        start = time.perf_counter()
        dense = DenseRetriever(world.passages, args.cache_dir)
        dense_s = time.perf_counter() - start
        rows.append(("dense MiniLM + faiss, in-process", per_query(dense, queries), batched(dense, queries)))
    scripts = {f"searchqa/test/{i}": oracle_script(env, i) for i in range(min(args.episodes, len(panels["test"])))}
    svc_steps, svc_s = asyncio.run(service_rate(env, scripts, max_steps=9))
    server_args = ["--envs", "searchqa", "--live-cache-size", str(args.episodes)]
    with ServiceProcess("services.envs", server_args) as server:
        http_times, http_qps = over_http(server.url, queries)
        rows.append(("BM25 via `POST /retrieve` (HTTP)", http_times, http_qps))
        one_steps, one_s, one_won = http_rate(server.url, scripts, batch=False)
        many_steps, many_s, many_won = http_rate(server.url, scripts, batch=True)

    print(f"world: {len(world.entities)} entities, {len(world.passages)} passages, built in {world_s:.2f} s")
    print(f"BM25 index built in {index_s:.2f} s", end="")
    print(f"; dense index {dense_s:.1f} s (embedding, or loading the cached vectors)" if not args.no_dense else "")
    print(f"{len(queries)} test questions as queries, top 3; batches of {BATCH}\n")
    print("| retrieval | median ms | p95 ms | queries/s one at a time | queries/s in batches |")
    print("|---|---|---|---|---|")
    for name, times, qps in rows:
        print(f"| {name} | {ms(times)} | {len(times) / sum(times):,.0f} | {qps:,.0f} |")
    print(f"\n{len(scripts)} oracle episodes, {svc_steps} steps, won {one_won} over HTTP (and {many_won} batched)\n")
    print("| path | steps/s |\n|---|---|")
    print(f"| episode service, in-process | {svc_steps / svc_s:,.0f} |")
    print(f"| HTTP, one step per request | {one_steps / one_s:,.0f} |")
    print(f"| HTTP, batch route (every due episode in one request) | {many_steps / many_s:,.0f} |")


if __name__ == "__main__":
    main()
