"""Rollout with a tiny random model against the real env apps: complete groups of every env reach
the buffer as well-formed samples, the stored response ids are the sampled ones, invalid turns are
marked and send the reference's fallback, and lock-step mode gives the same kind of groups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.envs.app import create_app
from shared.envs_client import AsyncEnvClient
from shared.models import LoadedModel, load_model
from shared.settings import EnvServiceSettings
from trainer.agents import protocol
from trainer.buffer import MemoryBuffer
from trainer.generation import Completion, GenerationError, HFGenerator, Sampling
from trainer.rollout import Roller, RolloutConfig


class Recording:
    """A generator that remembers every prompt and completion it served."""

    def __init__(self, inner: HFGenerator) -> None:
        self.inner = inner
        self.calls: list[tuple[list[int], Completion]] = []

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
        completion = await self.inner.generate(prompt_ids, max_new_tokens)
        self.calls.append((list(prompt_ids), completion))
        return completion

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny")


@pytest.fixture(scope="module")
def generator(tiny: LoadedModel) -> Iterator[HFGenerator]:
    made = HFGenerator(tiny.model, tiny.tokenizer, Sampling(max_new_tokens=16), max_concurrency=16, max_context=4096)
    yield made
    made.close()


TASKS = {
    "counter": ["counter/test/0", "counter/test/1"],
    "webshop": ["webshop/test/0", "webshop/test/1"],
    "searchqa": ["searchqa/test/0", "searchqa/test/400"],
    "alfworld": ["alfworld/valid_seen/0"],
}


async def play(env: str, generator: Any, tiny: LoadedModel, cache: Path, mode: str) -> tuple[MemoryBuffer, Any, Any]:
    app = create_app(EnvServiceSettings(envs=[env], cache_dir=cache))
    buffer = MemoryBuffer()
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), AsyncEnvClient("http://envs", transport=transport) as client:
        config = RolloutConfig(env=env, group_size=2, max_steps=2, max_new_tokens=16, policy_version=3)
        roller = Roller(client, generator, tiny.tokenizer, protocol(env), buffer, config)
        summary = await roller.run(TASKS[env], mode=mode)  # type: ignore[arg-type]
        labels = {}
        for task_id in TASKS[env]:
            _, split, index = task_id.rsplit("/", 2)
            [task] = (await client.tasks(env, split, int(index), 1)).tasks
            labels[task_id] = task.task_type or task.data_source or task.category
        records: dict[str, Any] = {"labels": labels}
        for delivery in await buffer.get(10, policy_version=3):
            for episode in delivery.group.episodes:
                records[episode.episode_id] = await client.record(episode.episode_id)
        for group_id in summary.group_ids:
            assert group_id
    return buffer, summary, records


@pytest.mark.parametrize("env", ["counter", "webshop", "searchqa", "alfworld"])
async def test_complete_groups_of_every_env_reach_the_buffer(
    env: str, generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path
) -> None:
    recording = Recording(generator)
    buffer, summary, records = await play(env, recording, tiny, alfworld_cache, "async")
    assert summary.groups == len(TASKS[env]) and summary.episodes == 2 * len(TASKS[env])
    groups = [d.group for d in buffer._pending.values()]
    assert sorted(g.task_id for g in groups) == sorted(TASKS[env])
    sampled = {tuple(c.token_ids): (p, c) for p, c in recording.calls}
    for group in groups:
        assert group.env == env and group.policy_version == 3 and len(group.episodes) == 2
        assert group.task_type == records["labels"][group.task_id] and group.task_type is not None
        for episode in group.episodes:
            record = records[episode.episode_id]
            assert [s.action for s in episode.steps] == record.actions  # what the env received
            assert len(episode.steps) == 2 and episode.truncated and [s.step for s in episode.steps] == [0, 1]
            for sample in episode.steps:
                prompt, completion = sampled[tuple(sample.response_token_ids)]
                assert sample.prompt_token_ids == prompt  # the exact tokens the model was given
                assert sample.response_token_ids == completion.token_ids  # the exact tokens it sampled
                assert sample.sampler_logprobs == completion.logprobs
                assert len(sample.response_token_ids) == 16 and sample.finish_reason == "length"
                text = tiny.tokenizer.decode(sample.response_token_ids, skip_special_tokens=True)
                projected = protocol(env).project(text)
                assert not sample.valid and sample.action == projected.action  # random text: invalid, fallback sent
                if env != "searchqa":
                    assert sample.action == text.lower()[-protocol(env).fallback_chars :]
                else:
                    assert sample.action == ""  # the env's invalid turn
        first_prompt = tiny.tokenizer.decode(group.episodes[0].steps[0].prompt_token_ids)
        assert first_prompt.startswith("<|im_start|>system") and first_prompt.endswith("<|im_start|>assistant\n")
    assert summary.invalid == summary.steps == 4 * len(TASKS[env])


async def test_lockstep_mode_gives_the_same_groups(
    generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path
) -> None:
    buffer, summary, _ = await play("counter", generator, tiny, alfworld_cache, "lockstep")
    assert (summary.groups, summary.episodes, summary.steps) == (2, 4, 8)
    assert {len(e.steps) for d in buffer._pending.values() for e in d.group.episodes} == {2}


class Failing:
    """Fails the third request it gets, as a crashed backend would."""

    def __init__(self, inner: HFGenerator) -> None:
        self.inner = inner
        self.calls = 0

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
        self.calls += 1
        if self.calls == 3:
            raise GenerationError("the backend went away")
        return await self.inner.generate(prompt_ids, max_new_tokens)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("mode", ["async", "lockstep"])
async def test_a_failed_turn_ends_that_episode_only(generator: HFGenerator, tiny: LoadedModel, mode: str) -> None:
    app = create_app(EnvServiceSettings(envs=["counter"]))
    buffer = MemoryBuffer()
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), AsyncEnvClient("http://envs", transport=transport) as client:
        config = RolloutConfig(env="counter", group_size=2, max_steps=3, max_new_tokens=8)
        roller = Roller(client, Failing(generator), tiny.tokenizer, protocol("counter"), buffer, config)
        summary = await roller.run(["counter/test/0"], mode=mode)  # type: ignore[arg-type]
    assert summary.groups == 1 and summary.truncated == 2
    [delivery] = await buffer.get(1, policy_version=0)
    assert sorted(len(e.steps) for e in delivery.group.episodes) in ([1, 3], [2, 3])  # one cut short, one whole
