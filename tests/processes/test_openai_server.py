"""The OpenAI-compatible backend against the project's own completions server in another process:
token ids in and out, the sampler's log-probs, a rollout through it, and bad requests refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from services.envs.app import create_app
from shared.envs_client import AsyncEnvClient
from shared.launch import ServiceProcess
from shared.models import load_model
from tests.conftest import settings
from trainer.agents import protocol
from trainer.buffer import MemoryBuffer
from trainer.generation import GenerationError, OpenAIGenerator, Sampling
from trainer.rollout import Roller, RolloutConfig

pytestmark = pytest.mark.processes
T = 0.7  # the server's sampling temperature: neither 0 nor 1, so a log-prob without the /T is caught


@pytest.fixture(scope="module")
def server() -> Iterator[ServiceProcess]:
    with ServiceProcess("trainer.openai_server", ["--model", "tiny", "--temperature", str(T)]) as process:
        yield process


async def test_token_ids_and_sampler_logprobs_come_back(server: ServiceProcess) -> None:
    tiny = load_model("tiny")
    generator = OpenAIGenerator(server.url, "tiny", Sampling(temperature=T, max_new_tokens=8))
    prompt = tiny.tokenizer.encode("Your task is to: count to 3.", add_special_tokens=False)
    completion = await generator.generate(prompt)
    await generator.aclose()
    assert len(completion.token_ids) == len(completion.logprobs) == 8 and completion.finish_reason == "length"
    with torch.no_grad():  # the sampler's log-prob: log_softmax(logits / T)
        logits = tiny.model(torch.tensor([prompt + completion.token_ids])).logits[0].float()
        logp = torch.log_softmax(logits / T, -1)
    expected = [logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(completion.token_ids)]
    assert completion.logprobs == pytest.approx(expected, abs=1e-4)


async def test_a_rollout_through_the_completions_server(server: ServiceProcess) -> None:
    tiny = load_model("tiny")
    generator = OpenAIGenerator(server.url, "tiny", Sampling(temperature=T, max_new_tokens=8))
    app = create_app(settings())
    buffer = MemoryBuffer()
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), AsyncEnvClient("http://envs", transport=transport) as client:
        config = RolloutConfig(env="counter", group_size=2, max_steps=2, max_new_tokens=8)
        roller = Roller(client, generator, tiny.tokenizer, protocol("counter"), buffer, config)
        summary = await roller.run(["counter/test/0", "counter/test/1"])
    await generator.aclose()
    assert (summary.groups, summary.episodes, summary.steps) == (2, 4, 8)
    deliveries = await buffer.get(10, policy_version=0)
    assert len(deliveries) == 2
    for delivery in deliveries:
        group = delivery.group
        assert group.backend == f"openai {server.url}" and group.logprobs_mode == "processed_logprobs"
        assert group.sampling.temperature == T
        for episode in group.episodes:
            assert all(len(s.response_token_ids) == len(s.sampler_logprobs) == 8 for s in episode.steps)


async def test_a_server_that_returns_another_logprob_is_refused(server: ServiceProcess) -> None:
    generator = OpenAIGenerator(server.url, "tiny", Sampling(temperature=T), logprobs_mode="raw_logprobs")
    with pytest.raises(GenerationError, match="returns processed_logprobs, not the raw_logprobs"):
        await generator.generate([1, 2, 3])
    await generator.aclose()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"prompt": [1, 2], "temperature": 0.5}, "temperature 0.7"),
        ({"prompt": [1, 2], "top_p": 0.9}, "top_p 1.0"),
        ({"prompt": [1, 49152]}, "token ids must be in"),
        ({"prompt": []}, "empty"),
        ({"prompt": [1], "max_tokens": 0}, "max_tokens"),
        ({"prompt": [1], "max_tokens": 5000}, "exceed"),
        ({"prompt": [1], "stream": True}, "stream: not supported"),
        ({"prompt": [1], "stop": ["\n"]}, "stop: not supported"),
        ({"prompt": [1], "echo": True, "best_of": 2}, "echo, best_of: not supported"),
        ({"prompt": [1], "seed": 3}, "seed"),
        ({"prompt": ["1"]}, "prompt"),
        ({"prompt": [True]}, "prompt"),
        ({"prompt": [1], "n": 2}, "n"),
        ({"max_tokens": 3}, "prompt"),
    ],
)
def test_bad_requests_are_refused(server: ServiceProcess, body: dict[str, Any], fragment: str) -> None:
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]


def test_the_client_reports_a_refusal_clearly(server: ServiceProcess) -> None:
    import asyncio

    generator = OpenAIGenerator(server.url, "tiny", Sampling(temperature=0.3))
    with pytest.raises(GenerationError, match="422"):
        asyncio.run(generator.generate([1, 2, 3]))


@pytest.mark.slow  # ~8 s: a completions server process; run by .ci/run after the default suite
def test_text_prompts_and_models() -> None:
    with ServiceProcess("trainer.openai_server", ["--model", "tiny", "--token", "t0k"]) as process:
        assert httpx.post(f"{process.url}/v1/completions", json={"prompt": "hi"}).status_code == 401
        headers = {"Authorization": "Bearer t0k"}
        reply = httpx.post(
            f"{process.url}/v1/completions", json={"prompt": "hi", "max_tokens": 3, "logprobs": 0}, headers=headers
        ).json()
        assert reply["usage"]["completion_tokens"] == 3 and len(reply["choices"][0]["logprobs"]["tokens"]) == 3
        assert not reply["choices"][0]["logprobs"]["tokens"][0].startswith("token_id:")
        assert httpx.get(f"{process.url}/v1/models", headers=headers).json()["data"][0]["id"] == "tiny"


@pytest.mark.parametrize(
    "args",
    [["--model", "/nonexistent"], ["--temperature", "-1"], ["--top-p", "2"], ["--dtype", "float16"], ["--bogus"]],
)
def test_cli_rejects_bad_flags(args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trainer.openai_server", *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "usage: python -m trainer.openai_server" in out.stderr


@pytest.mark.slow  # ~10 s: a rollout process through a server process; run by .ci/run after the default suite
@pytest.mark.redis
def test_the_rollout_command_generates_through_the_server(
    server: ServiceProcess, redis_base_url: str, redis_prefix: str
) -> None:
    args = ["--env", "counter", "--split", "test", "--groups", "2", "--group-size", "2", "--max-steps", "2"]
    args += ["--max-new-tokens", "8", "--model", "tiny", "--openai-url", server.url, "--temperature", str(T)]
    args += ["--redis-url", redis_base_url, "--redis-prefix", redis_prefix]
    out = subprocess.run([sys.executable, "-m", "trainer.rollout", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (
        "groups 2, episodes 4 (0 done, 4 step_limit, 0 fault), steps 8" in out.stdout
        and "64 response tokens" in out.stdout
    )


@pytest.mark.redis
@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--model", "smollm2", "--temperature", str(T)], "serves 'tiny', not 'smollm2'"),
        pytest.param(  # ~10 s: a whole rollout of faults; .ci/run runs it after the default suite
            ["--model", "tiny", "--temperature", "1.0"], "every one of the 2 episodes faulted", marks=pytest.mark.slow
        ),
    ],
)
def test_a_rollout_that_can_write_nothing_usable_exits_non_zero(
    server: ServiceProcess, redis_base_url: str, redis_prefix: str, flags: list[str], error: str
) -> None:
    """Another model's server is refused before anything runs; a server that refuses every request
    (its temperature is not the rollout's) leaves only faulted episodes: both are an error."""
    args = ["--env", "counter", "--groups", "1", "--group-size", "2", "--max-steps", "1", "--max-new-tokens", "4"]
    args += ["--openai-url", f"{server.url}/v1", "--redis-url", redis_base_url, "--redis-prefix", redis_prefix]
    out = subprocess.run(
        [sys.executable, "-m", "trainer.rollout", *args, *flags], capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0 and error in out.stderr, out.stderr[-2000:]


@pytest.mark.redis
@pytest.mark.slow  # ~18 s: a trainer.run launch; run by .ci/run after the default suite
def test_the_main_job_generates_on_the_server_and_hands_it_every_checkpoint(
    server: ServiceProcess, tmp_path: Path, redis_base_url: str
) -> None:
    """`trainer.run --openai-url`: rollouts on the completions server, which loads each step's
    checkpoint as the next policy version before the next rollout."""
    import json

    from tests.processes.test_trainer_run import ARGS
    from tests.service.test_teacher import save_tiny

    assert httpx.get(f"{server.url}/v1/policy").json()["policy_version"] == 0
    runs = tmp_path / "runs"
    flags = ["--temperature", str(T), "--openai-url", f"{server.url}/v1", "--runs-dir", str(runs)]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "trainer.run", *ARGS, *flags, "--redis-url", redis_base_url],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        (run,) = [p for p in runs.iterdir() if p.is_dir()]
        policy = httpx.get(f"{server.url}/v1/policy").json()
        assert policy["policy_version"] == 2 and policy["path"] == str(run / "checkpoints" / "step-000002")
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["policy_version"] for r in lines] == [1, 2]
        assert all(r["training/samples"] > 0 for r in lines)  # no episode refused as stale
    finally:  # the other tests of the module compare against the initial tiny model's log-probs
        version = httpx.get(f"{server.url}/v1/policy").json()["policy_version"]
        base = str(save_tiny(tmp_path / "base", seed=0))
        httpx.post(f"{server.url}/v1/policy", json={"path": base, "version": version + 1}, timeout=120)
