"""Real server processes against a real Redis: stateless replicas, crashes, retries, churn."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from shared.envs_client import EnvClient
from shared.launch import ServiceProcess, free_port
from tests.conftest import metric

pytestmark = [pytest.mark.redis, pytest.mark.processes]


def replica(redis_url: str, prefix: str, cache: Path, *extra: str, port: int | None = None) -> ServiceProcess:
    args = ["--envs", "alfworld,counter", "--redis-url", redis_url, "--redis-prefix", prefix, "--cache-dir", str(cache)]
    return ServiceProcess("services.envs", [*args, *extra], port=port)


def expert_task(client: EnvClient) -> tuple[str, list[str]]:
    task_id = next(
        t.task_id
        for t in client.tasks("alfworld", "valid_seen").tasks
        if t.task_type == "pick_heat_then_place_in_recep"
    )
    episode = client.create("alfworld", task_id=task_id)
    plan = client.record(episode.episode_id).audit["expert_plan"]
    client.delete(episode.episode_id)
    return task_id, plan


@pytest.mark.slow  # ~12 s: replicas and a crash; run by .ci/run after the default suite
def test_replicas_share_episodes_and_survive_a_crash(
    redis_base_url: str, redis_prefix: str, alfworld_cache: Path
) -> None:
    with (
        replica(redis_base_url, redis_prefix, alfworld_cache) as a,
        replica(redis_base_url, redis_prefix, alfworld_cache) as b,
    ):
        ca, cb = EnvClient(a.url), EnvClient(b.url)
        task_id, plan = expert_task(ca)

        # the reference transcript: one replica, start to end
        reference = ca.create("alfworld", task_id=task_id)
        expected = [ca.step(reference.episode_id, action, n).observation for n, action in enumerate(plan)]

        # alternate steps between the two replicas
        episode = ca.create("alfworld", task_id=task_id)
        assert episode.observation == reference.observation
        alternating = [(ca if n % 2 == 0 else cb).step(episode.episode_id, action, n) for n, action in enumerate(plan)]
        assert [r.observation for r in alternating] == expected and alternating[-1].won

        # kill a replica mid-episode and finish on the other
        episode = ca.create("alfworld", task_id=task_id)
        half = len(plan) // 2
        first = [ca.step(episode.episode_id, action, n).observation for n, action in enumerate(plan[:half])]
        a.kill()
        rest = [cb.step(episode.episode_id, action, n).observation for n, action in enumerate(plan) if n >= half]
        assert first + rest == expected
        record = cb.record(episode.episode_id)
        assert record.actions == plan and record.results[-1].won
        ca.close()
        cb.close()


def test_client_retries_through_a_restart(redis_base_url: str, redis_prefix: str, alfworld_cache: Path) -> None:
    port = free_port()
    server = replica(redis_base_url, redis_prefix, alfworld_cache, port=port)
    with EnvClient(server.url, retries=8, backoff_s=0.25) as client:
        episode = client.create("counter", split="train", index=3)  # count to 4
        assert client.step(episode.episode_id, "inc", 0).step == 1
        server.kill()
        restarted: list[ServiceProcess] = []
        starter = threading.Timer(
            0.5, lambda: restarted.append(replica(redis_base_url, redis_prefix, alfworld_cache, port=port))
        )
        starter.start()
        try:
            result = client.step(episode.episode_id, "inc", 1)  # connection refused until the new replica is up
            assert result.step == 2 and result.observation == "The counter shows 2."
            # the same step again, as a client does when a response is lost: the recorded result
            assert client.step(episode.episode_id, "inc", 1) == result
            assert [client.step(episode.episode_id, "inc", n).won for n in (2, 3)] == [False, True]
        finally:
            starter.join()
            for process in restarted:
                process.stop()


@pytest.mark.slow  # ~11 s of churn; run by .ci/run after the default suite
def test_abandoned_episodes_stay_bounded_and_expire(redis_base_url: str, redis_prefix: str, tmp_path: Path) -> None:
    ttl_s = 3.0  # shorter than the churn: episodes expire while others are made
    args = [
        "--envs",
        "counter",
        "--redis-url",
        redis_base_url,
        "--redis-prefix",
        redis_prefix,
        "--episode-ttl-s",
        str(ttl_s),
        "--max-open-episodes",
        "20000",
        "--cache-dir",
        str(tmp_path),
    ]
    with ServiceProcess("services.envs", args) as server:
        process = psutil.Process(server.process.pid)

        def churn(n: int) -> None:
            with EnvClient(server.url) as client, ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: client.create("counter", split="train", index=i % 1000), range(n)))

        churn(500)  # warm up allocators and caches
        before = process.memory_info().rss
        started = time.monotonic()
        churn(5_000)
        took = time.monotonic() - started
        grown_mb = (process.memory_info().rss - before) / 2**20
        assert grown_mb < 25, f"RSS grew by {grown_mb:.1f} MB over 5,000 abandoned episodes"  # < 5 KB each
        client = redis.Redis.from_url(redis_base_url)
        assert list(client.scan_iter(f"{redis_prefix}*", count=1000)), "episodes younger than the TTL are kept"
        print(f"5,000 episodes in {took:.1f} s")
        time.sleep(ttl_s + 1.5)
        assert list(client.scan_iter(f"{redis_prefix}*", count=1000)) == []
        assert httpx.get(f"{server.url}/health").status_code == 200
        client.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--envs", "nope"],
        ["--envs", ""],
        ["--port", "70000"],
        ["--port", "x"],
        ["--episode-ttl-s", "-1"],
        ["--max-open-episodes", "0"],
        ["--alfworld-dialect", "3"],
        ["--live-cache-size", "0"],
        ["--webshop-backend", "original"],
        ["--webshop-backend", "original", "--webshop-products", "/nonexistent.json"],
        ["--webshop-backend", "web"],
        ["--webshop-goals", "all"],
        ["--webshop-catalog-size", "10"],
        ["--webshop-seed", "x"],
        ["--searchqa-seed", "x"],
        ["--searchqa-data", "/nonexistent.parquet"],
        ["--searchqa-corpus", "/nonexistent.jsonl"],
        ["--searchqa-retriever", "splade"],
        ["--searchqa-retriever-url", "localhost:8000/retrieve"],
        ["--searchqa-retriever-form", "both"],
        ["--searchqa-retriever-timeout-s", "0"],
        ["--searchqa-retriever-retries", "-1"],
        ["--searchqa-topk", "0"],
        ["--searchqa-passages", "markdown"],
        ["--bogus"],
    ],
)
def test_cli_rejects_bad_flags(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "services.envs", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "usage: python -m services.envs" in out.stderr and "error:" in out.stderr


@pytest.mark.slow  # two more server processes; run by .ci/run after the default suite
def test_one_client_spreads_episodes_over_replicas_and_fails_over_when_one_dies(
    redis_base_url: str, redis_prefix: str
) -> None:
    """`EnvClient([a, b])`: each episode's calls go to the replica its id hashes to, so both replicas
    serve episodes; with one replica killed, every call goes through the other at once."""

    def created(url: str) -> float:
        return metric(url, "sdar_env_episode_events_total", env="counter", event="created")

    args = ["--envs", "counter", "--redis-url", redis_base_url, "--redis-prefix", redis_prefix]
    a, b = ServiceProcess("services.envs", args), ServiceProcess("services.envs", args)
    try:  # retries=0: one round of the replicas, so a client that did not fail over would raise
        with EnvClient(f"{a.url},{b.url}", retries=0) as client:
            ids = [client.create("counter", split="train", index=4).episode_id for _ in range(20)]
            assert created(a.url) > 0 and created(b.url) > 0  # spread over both
            assert created(a.url) + created(b.url) == 20
            a.kill()
            for n in range(2):  # half the episodes hash to the dead replica: the next one, at once
                for episode_id in ids:
                    assert client.step(episode_id, "inc", n).step == n + 1
            assert all([r.step for r in client.record(i).results] == [1, 2] for i in ids)  # each once
    finally:
        a.kill()
        b.kill()
