"""Rollout against env servers in their own processes: the command plays groups into Redis; env
faults (a server killed and restarted, responses dropped on the way back) lose no episode; and the
command refuses bad flags."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from shared.envs_client import AsyncEnvClient, EnvServiceError
from shared.launch import ServiceProcess
from shared.models import load_model
from trainer.agents import protocol
from trainer.buffer import MemoryBuffer, RedisBuffer
from trainer.engine import HFGenerator
from trainer.generation import Sampling
from trainer.rollout import Roller, RolloutConfig

pytestmark = [pytest.mark.processes, pytest.mark.redis]


def test_the_command_plays_groups_into_redis(redis_base_url: str, redis_prefix: str) -> None:
    args = ["--env", "counter", "--groups", "3", "--group-size", "2", "--max-steps", "3", "--max-new-tokens", "8"]
    args += [
        "--model",
        "tiny",
        "--dtype",
        "bfloat16",
        "--redis-url",
        redis_base_url,
        "--redis-prefix",
        redis_prefix,
        "--split",
        "test",
    ]
    out = subprocess.run([sys.executable, "-m", "trainer.rollout", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "groups 3, episodes 6 (0 done, 6 step_limit, 0 fault), steps 18" in out.stdout
    assert "invalid steps 100.0%" in out.stdout
    assert f"3 of 3 groups written to {redis_base_url} stream {redis_prefix}groups" in out.stdout
    reused = re.search(r"prompt tokens: (\d+) prefilled, (\d+) \(\d+%\) copied", out.stdout)
    assert reused and int(reused[2]) > 0, out.stdout  # a group's episodes start from one prompt

    async def read() -> list[str]:
        buffer = RedisBuffer(redis_base_url, prefix=redis_prefix)
        groups = await buffer.get(10, policy_version=0)
        await buffer.close()
        return sorted(d.group.task_id for d in groups)

    assert asyncio.run(read()) == ["counter/test/0", "counter/test/1", "counter/test/2"]


class DroppingTransport(httpx.AsyncHTTPTransport):
    """Sends every request, but loses one answer in four on the way back, as a flaky network does;
    remembers every step it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(7)
        self.dropped = 0
        self.answered = 0
        self.sent: dict[str, set[tuple[int, str]]] = defaultdict(set)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/step"):
            body = json.loads(request.content)
            self.sent[request.url.path.split("/")[-2]].add((body["step"], body["action"]))
        response = await super().handle_async_request(request)
        self.answered += 1
        if request.method == "POST" and self.rng.random() < 0.25:
            await response.aclose()
            self.dropped += 1
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


@pytest.mark.slow  # ~10 s: env faults under a rollout; run by .ci/run after the default suite
async def test_env_faults_lose_no_episode(redis_base_url: str, redis_prefix: str) -> None:
    tiny = load_model("tiny")
    generator = HFGenerator(tiny.model, tiny.tokenizer, Sampling(max_new_tokens=8), max_concurrency=16)
    server_args = ["--envs", "counter", "--redis-url", redis_base_url, "--redis-prefix", redis_prefix]
    server = ServiceProcess("services.envs", server_args)
    transport = DroppingTransport()
    buffer = MemoryBuffer()
    config = RolloutConfig(env="counter", group_size=3, max_steps=8, max_new_tokens=8, concurrency=6)
    try:
        async with AsyncEnvClient(server.url, retries=8, backoff_s=0.1, transport=transport) as client:
            records: dict[str, list[str]] = {}
            delete = client.delete

            async def audited_delete(episode_id: str) -> None:  # the env's record, read before it is closed
                records[episode_id] = (await client.record(episode_id)).actions
                await delete(episode_id)

            client.delete = audited_delete  # type: ignore[method-assign]
            roller = Roller(client, generator, tiny.tokenizer, protocol("counter"), buffer, config)
            playing = asyncio.create_task(roller.run([f"counter/test/{i}" for i in range(4)]))
            while transport.answered < 30:  # well into the rollout
                await asyncio.sleep(0.02)
            assert not playing.done()
            server.kill()  # the replica dies mid-rollout; the episodes live in Redis
            await asyncio.sleep(0.5)
            server = ServiceProcess("services.envs", server_args, port=server.port)
            summary = await playing
            assert (summary.groups, summary.episodes, summary.steps) == (4, 12, 96)
            assert summary.ends == {"step_limit": 12}
            assert transport.dropped > 0
            for delivery in await buffer.get(10, policy_version=0):
                assert delivery.group.usable == 3
                for episode in delivery.group.episodes:
                    assert episode.end == "step_limit" and episode.fault is None
                    # what the env applied is what was recorded, and every retry sent the same action:
                    # nothing lost, nothing applied twice
                    assert records[episode.episode_id] == [s.action for s in episode.steps]
                    assert transport.sent[episode.episode_id] == {(s.step, s.action) for s in episode.steps}
                    assert [s.step for s in episode.steps] == list(range(8))
                    with pytest.raises(EnvServiceError, match="404"):  # closed on the env service when it ended
                        await client.record(episode.episode_id)
    finally:
        server.stop()
        generator.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--groups", "1", "--group-size", "1"],
        ["--env", "chess", "--groups", "1", "--group-size", "1"],
        ["--env", "counter", "--groups", "0", "--group-size", "1"],
        ["--env", "counter", "--groups", "1", "--group-size", "0"],
        ["--env", "counter", "--groups", "1", "--group-size", "1", "--max-steps", "0"],
        ["--env", "counter", "--groups", "1", "--group-size", "1", "--max-new-tokens", "-5"],
        ["--env", "counter", "--groups", "1", "--group-size", "1", "--top-p", "0"],
        ["--env", "counter", "--groups", "1", "--group-size", "1", "--mode", "sync"],
        ["--env", "counter", "--groups", "1", "--group-size", "1", "--model", "/nonexistent/model"],
        ["--env", "counter", "--groups", "1", "--group-size", "1", "--env-url", "localhost:8001"],
        ["--env", "counter", "--groups", "x", "--group-size", "1"],
        ["--env", "counter", "--groups", "1", "--group-size", "1", "--dtype", "float16"],
    ],
)
def test_cli_rejects_bad_flags(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "trainer.rollout", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "usage: python -m trainer.rollout" in out.stderr and "error:" in out.stderr


def test_more_groups_than_tasks_is_a_clear_error(tmp_path: Path) -> None:
    args = ["--env", "counter", "--split", "test", "--offset", "99", "--groups", "2", "--group-size", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "trainer.rollout", *args, "--model", "tiny"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0 and "has 100 tasks" in out.stderr


def test_an_unknown_split_or_an_unreachable_env_is_a_clear_error() -> None:
    base = [sys.executable, "-m", "trainer.rollout", "--env", "counter", "--groups", "1", "--group-size", "1"]
    out = subprocess.run([*base, "--split", "nope", "--model", "tiny"], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "error: no split 'nope' in env 'counter'" in out.stderr
    assert "Traceback" not in out.stderr
    url = "http://127.0.0.1:9"  # nothing listens on the discard port
    out = subprocess.run([*base, "--env-url", url, "--model", "tiny"], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and f"no env service at {url}" in out.stderr and "Traceback" not in out.stderr
