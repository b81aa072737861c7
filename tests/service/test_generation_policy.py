"""The completions server's policy: a checkpoint (full or a LoRA adapter) loaded as a new version,
every reply saying which version sampled it, a bad checkpoint refused while the old policy keeps
serving, pause and resume; the client refuses a reply from an older policy than it published."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shared.models import LoadedModel, load_model, tiny_model
from tests.service.test_teacher import save_tiny
from trainer.adapters import LoraSettings, attach
from trainer.generation import GenerationError, OpenAIGenerator, Sampling, StalePolicy
from trainer.openai_server import create_app

T = 0.7
PROMPT = [5, 17, 230, 41, 8]


@asynccontextmanager
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, OpenAIGenerator]]:
    tiny = load_model("tiny")
    loaded = LoadedModel(copy.deepcopy(tiny.model), tiny.tokenizer, "tiny", "tiny")
    app = create_app(loaded, Sampling(T))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(base_url="http://gen", transport=transport) as c:
        generator = OpenAIGenerator("http://gen/v1", "tiny", Sampling(T, max_new_tokens=6), transport=transport)
        try:
            yield c, generator
        finally:
            await generator.aclose()


def sampler_logprobs(model: Any, prompt: list[int], tokens: list[int]) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0].float()
    logp = torch.log_softmax(logits / T, -1)
    return [logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(tokens)]


async def test_a_checkpoint_becomes_the_next_version_and_replies_say_so(tmp_path: Path) -> None:
    tokenizer = load_model("tiny").tokenizer
    async with served() as (client, generator):
        assert (await generator.server_policy())["policy_version"] == 0
        assert (await generator.generate(PROMPT)).policy_version == 0

        await generator.publish(str(save_tiny(tmp_path / "step-1", seed=1)), 1)
        completion = await generator.generate(PROMPT)
        assert completion.policy_version == generator.policy_version == 1
        new = tiny_model(tokenizer, seed=1)
        assert completion.logprobs == pytest.approx(sampler_logprobs(new, PROMPT, completion.token_ids), abs=1e-4)
        info = (await client.get("/v1/policy")).json()
        assert info == {"model": "tiny", "path": str(tmp_path / "step-1"), "policy_version": 1, "paused": False}

        # a LoRA adapter over the base: the merged weights serve
        adapted = lora_checkpoint(tmp_path / "step-2")
        await generator.publish(str(tmp_path / "step-2"), 2)
        completion = await generator.generate(PROMPT)
        merged = sampler_logprobs(adapted.merge_and_unload(), PROMPT, completion.token_ids)
        assert completion.policy_version == 2 and completion.logprobs == pytest.approx(merged, abs=1e-4)


async def test_a_bad_checkpoint_or_an_old_version_is_refused_and_the_policy_keeps_serving(tmp_path: Path) -> None:
    async with served() as (client, generator):
        await generator.publish(str(save_tiny(tmp_path / "step-1", seed=1)), 1)
        corrupt = save_tiny(tmp_path / "corrupt", seed=2)
        (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
        other = tmp_path / "other"
        small = LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
        LlamaForCausalLM(small).save_pretrained(other)
        load_model("tiny").tokenizer.save_pretrained(other)
        for body, status, says in [
            ({"path": str(tmp_path / "step-1"), "version": 1}, 409, "not newer than the current 1"),
            ({"path": str(tmp_path / "missing"), "version": 2}, 422, "no checkpoint directory"),
            ({"path": "/" + "x" * 300, "version": 2}, 422, "no checkpoint directory"),
            ({"path": str(corrupt), "version": 2}, 422, "cannot load"),
            ({"path": str(other), "version": 2}, 422, "another architecture"),
            ({"path": "~nosuchuser/step-1", "version": 2}, 422, "no checkpoint directory"),
            ({"path": "", "version": 2}, 422, "path"),
        ]:
            response = await client.post("/v1/policy", json=body)
            assert response.status_code == status and says in response.text, (body, response.text)
        with pytest.raises(GenerationError, match="refused policy 1"):
            await generator.publish(str(tmp_path / "step-1"), 1)
        completion = await generator.generate(PROMPT)  # still version 1, its weights
        assert completion.policy_version == 1
        new = tiny_model(load_model("tiny").tokenizer, seed=1)
        assert completion.logprobs == pytest.approx(sampler_logprobs(new, PROMPT, completion.token_ids), abs=1e-4)


async def test_a_reply_from_an_older_policy_than_published_is_refused() -> None:
    async with served() as (_, generator):  # a server that restarted on the base model, say
        generator.policy_version = 3
        with pytest.raises(StalePolicy, match="policy version 0, older than the published 3"):
            await generator.generate(PROMPT)


async def test_pause_holds_new_requests_until_resume() -> None:
    async with served() as (client, generator):
        assert (await client.post("/pause")).json() == {"is_paused": True}
        assert (await client.get("/is_paused")).json() == {"is_paused": True}
        waiting = asyncio.create_task(generator.generate(PROMPT))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert (await client.post("/resume")).json() == {"is_paused": False}
        assert len((await asyncio.wait_for(waiting, 30)).token_ids) == 6
        assert (await client.post("/pause", params={"mode": "abort"})).status_code == 422
        assert (await client.get("/is_paused")).json() == {"is_paused": False}


def lora_checkpoint(path: Path) -> Any:
    adapted = attach(tiny_model(load_model("tiny").tokenizer), LoraSettings(rank=4), "tiny")
    with torch.no_grad():
        for name, q in adapted.named_parameters():
            if "lora_B" in name:
                q.normal_(0, 0.5)
    adapted.save_pretrained(path)
    return adapted


async def test_vllms_runtime_lora_loading_publishes_adapters_by_version(tmp_path: Path) -> None:
    """The client drives vLLM's `/v1/load_lora_adapter` and names the adapter as its model; the
    project's server offers the same route, so the client is exercised here."""
    async with served() as (client, generator):
        generator.weight_sync = "lora"
        adapted = lora_checkpoint(tmp_path / "step-1")
        await generator.publish(str(tmp_path / "step-1"), 1)
        assert generator.model == "policy-v1" and generator.policy_version == 1
        completion = await generator.generate(PROMPT)
        merged = sampler_logprobs(adapted.merge_and_unload(), PROMPT, completion.token_ids)
        assert completion.policy_version == 1 and completion.logprobs == pytest.approx(merged, abs=1e-4)
        reply = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
        assert reply.json()["model"] == "policy-v1"

        lora_checkpoint(tmp_path / "step-2")
        await generator.publish(str(tmp_path / "step-2"), 2)  # and policy-v1 is unloaded
        assert (await generator.generate(PROMPT)).policy_version == 2
        for route, body, status in [
            ("/v1/load_lora_adapter", {"lora_name": "mine", "lora_path": str(tmp_path / "step-2")}, 422),
            ("/v1/load_lora_adapter", {"lora_name": "policy-v3"}, 422),
            ("/v1/load_lora_adapter", {"lora_name": "policy-v2", "lora_path": str(tmp_path / "step-2")}, 409),
            ("/v1/unload_lora_adapter", {"lora_name": "policy-v2"}, 409),  # the one serving
            ("/v1/unload_lora_adapter", {"lora_name": "policy-v1"}, 404),  # the client unloaded it
            ("/v1/unload_lora_adapter", {"lora_name": "policy-v9"}, 404),
        ]:
            assert (await client.post(route, json=body)).status_code == status, (route, body)


def test_a_vllm_reply_from_an_older_adapter_is_refused() -> None:
    """vLLM states no policy version; the adapter name in `model` says which one sampled."""
    generator = OpenAIGenerator("http://vllm:8000/v1", "policy-v2", weight_sync="lora")
    generator.policy_version = 2
    reply = {"model": "policy-v1", "choices": [{"logprobs": {"tokens": ["token_id:7"], "token_logprobs": [-1.0]}}]}
    with pytest.raises(StalePolicy, match="policy version 1, older than the published 2"):
        generator._completion(reply, 2)
    assert generator._completion({**reply, "model": "policy-v2"}, 2).policy_version == 2


async def test_a_request_sent_before_a_publish_may_be_answered_by_the_old_policy() -> None:
    """Asynchronous training publishes while requests are in flight: one sent under version 4 and
    answered by 4 after version 5 was published is that policy's sample; one sent under 5 is not."""

    def reply(request: httpx.Request) -> httpx.Response:
        generator.policy_version = 5  # the publish lands while this request is served
        return httpx.Response(
            200,
            json={"policy_version": 4, "choices": [{"logprobs": {"tokens": ["token_id:7"], "token_logprobs": [-1.0]}}]},
        )

    generator = OpenAIGenerator("http://gen", "tiny", transport=httpx.MockTransport(reply))
    generator.policy_version = 4
    assert (await generator.generate(PROMPT)).policy_version == 4
    with pytest.raises(StalePolicy, match="policy version 4, older than the published 5"):
        await generator.generate(PROMPT)
    await generator.aclose()
    with pytest.raises(ValueError, match="keep_adapters"):
        OpenAIGenerator("http://gen", "tiny", keep_adapters=0)


async def test_an_asynchronous_lora_run_keeps_the_adapters_still_in_flight(tmp_path: Path) -> None:
    async with served() as (client, generator):
        generator.weight_sync, generator.keep_adapters = "lora", 2
        for version in (1, 2, 3):
            lora_checkpoint(tmp_path / f"step-{version}")
            await generator.publish(str(tmp_path / f"step-{version}"), version)
        assert (await client.post("/v1/unload_lora_adapter", json={"lora_name": "policy-v1"})).status_code == 404
        assert (await client.post("/v1/unload_lora_adapter", json={"lora_name": "policy-v2"})).status_code == 200


async def test_a_run_brings_the_server_to_its_policy_and_refuses_another_runs(tmp_path: Path) -> None:
    from trainer.run import Run, RunError

    async with served() as (_, generator):
        await Run.sync_server(generator, None, 0)  # a fresh run, a fresh server: nothing to do
        checkpoint = save_tiny(tmp_path / "step-3", seed=1)
        await Run.sync_server(generator, checkpoint, 3)  # a resumed run: its last checkpoint is loaded
        assert (await generator.server_policy())["policy_version"] == 3
        with pytest.raises(RunError, match="serves policy version 3, newer than this run's 1"):
            await Run.sync_server(generator, None, 1)


async def test_a_swap_and_a_clients_pause_do_not_reopen_each_other(tmp_path: Path) -> None:
    """A `/resume` while a weight swap drains leaves the gate shut for the swap; a `/pause` sent during
    a swap still holds after it. The swap never overlaps a request."""
    from trainer.openai_server import Gate

    gate = Gate()
    async with gate.enter():
        draining, entering = gate.drain(), gate.enter()  # held: a dropped one would leave its block
        swap = asyncio.create_task(draining.__aenter__())
        await asyncio.sleep(0.05)
        gate.resume()  # a client's resume during the drain
        late = asyncio.create_task(entering.__aenter__())
        await asyncio.sleep(0.05)
        assert not late.done() and not swap.done()  # the swap waits for the request inside; the late one waits
    await asyncio.wait_for(swap, 5)
    assert gate.inside == 0 and not late.done()  # nothing enters during the swap
    await gate.pause()  # a client's pause during the swap
    assert not gate.open.is_set()
    await draining.__aexit__(None, None, None)  # the swap ends
    await asyncio.sleep(0.05)
    assert not late.done() and gate.paused  # the client's pause holds
    gate.resume()
    await asyncio.wait_for(late, 5)
    assert gate.inside == 1
