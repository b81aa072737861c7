"""Rollout with a tiny random model against the real env apps: complete groups of every env reach
the buffer as well-formed samples, the stored response ids are the sampled ones, invalid turns are
marked and send the reference's fallback, every episode says exactly how it ended and is closed on
the env service, anything that goes wrong in one episode ends that episode only (as a fault), and a
buffer that will not take a group keeps it until it lands."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.envs.app import create_app
from shared.envs_client import AsyncEnvClient, EnvServiceError
from shared.models import LoadedModel, load_model
from shared.rollout_wire import GroupRecord
from shared.settings import EnvServiceSettings
from trainer.agents import protocol
from trainer.buffer import MemoryBuffer
from trainer.engine import HFGenerator
from trainer.generation import Completion, GenerationError, Sampling
from trainer.rollout import Roller, RolloutConfig


class Recording:
    """A generator that remembers every prompt and completion it served."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[list[int], Completion]] = []
        for name in ("sampling", "max_context", "policy_version", "logprobs_mode", "backend"):
            setattr(self, name, getattr(inner, name))

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
        completion = await self.inner.generate(prompt_ids, max_new_tokens)
        self.calls.append((list(prompt_ids), completion))
        return completion

    async def aclose(self) -> None:
        return None


class Logged(httpx.AsyncBaseTransport):
    """The app behind an ASGI transport, remembering every request: the actions each episode was sent."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.paths: list[str] = []
        self.actions: dict[str, list[str]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/step"):
            self.actions[request.url.path.split("/")[-2]].append(json.loads(request.content)["action"])
        return await self.inner.handle_async_request(request)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny")


@pytest.fixture(scope="module")
def generator(tiny: LoadedModel) -> Iterator[HFGenerator]:
    made = HFGenerator(
        tiny.model, tiny.tokenizer, Sampling(temperature=0.8, max_new_tokens=16), max_concurrency=16, max_context=4096
    )
    made.policy_version = 3
    yield made
    made.close()


TASKS = {
    "counter": ["counter/test/0", "counter/test/1"],
    "webshop": ["webshop/test/0", "webshop/test/1"],
    "searchqa": ["searchqa/test/0", "searchqa/test/400"],
    "alfworld": ["alfworld/valid_seen/0"],
}
LABEL = {"counter": "task_type", "webshop": "category", "searchqa": "data_source", "alfworld": "task_type"}


async def play(
    env: str,
    generator: Any,
    tiny: LoadedModel,
    cache: Path,
    *,
    mode: str = "async",
    tasks: list[str] | None = None,
    buffer: Any = None,
    **config: Any,
) -> tuple[list[GroupRecord], Any, dict[str, Any]]:
    """Play groups; the groups on the buffer, the summary, and what the env service saw."""
    app = create_app(EnvServiceSettings(envs=[env], cache_dir=cache))
    buffer = buffer or MemoryBuffer()
    transport = Logged(app)
    async with app.router.lifespan_context(app), AsyncEnvClient("http://envs", transport=transport) as client:
        settings = {"group_size": 2, "max_steps": 2, "max_new_tokens": 16} | config
        roller = Roller(client, generator, tiny.tokenizer, protocol(env), buffer, RolloutConfig(env=env, **settings))
        summary = await roller.run(tasks or TASKS[env], mode=mode)  # type: ignore[arg-type]
        seen: dict[str, Any] = {"transport": transport, "roller": roller, "tasks": {}, "left": []}
        seen["paths"] = list(transport.paths)  # what the rollout itself asked the env service
        for task_id in tasks or TASKS[env]:
            _, split, index = task_id.rsplit("/", 2)
            with_tasks = await client.tasks(env, split, int(index), 1)
            seen["tasks"][task_id] = with_tasks.tasks[0] if with_tasks.tasks else None
        groups = [d.group for d in await buffer.get(100, policy_version=3)]
        for group in groups:
            for episode in group.episodes:
                try:
                    await client.record(episode.episode_id)
                    seen["left"].append(episode.episode_id)
                except EnvServiceError as e:
                    assert e.status == 404, e  # deleted, not failing for another reason
    return groups, summary, seen


@pytest.mark.parametrize("env", ["counter", "webshop", "searchqa", "alfworld"])
async def test_complete_groups_of_every_env_reach_the_buffer(
    env: str, generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path
) -> None:
    recording = Recording(generator)
    groups, summary, seen = await play(env, recording, tiny, alfworld_cache)
    assert summary.groups == len(TASKS[env]) and summary.episodes == 2 * len(TASKS[env])
    assert not [p for p in seen["paths"] if p.endswith("/tasks")]  # labels come from the episodes' info
    assert seen["left"] == []  # every episode was closed on the env service
    assert sorted(g.task_id for g in groups) == sorted(TASKS[env])
    sampled = {tuple(c.token_ids): (p, c) for p, c in recording.calls}
    for group in groups:
        task = seen["tasks"][group.task_id]
        assert group.env == env and group.policy_version == 3 and len(group.episodes) == 2 and group.usable == 2
        assert getattr(group, LABEL[env]) == getattr(task, LABEL[env]) is not None  # from the episode's info
        assert group.task and group.backend == "hf" and group.logprobs_mode == "processed_logprobs"
        assert (group.sampling.temperature, group.sampling.top_p, group.sampling.max_new_tokens) == (0.8, 1.0, 16)
        for episode in group.episodes:
            assert seen["transport"].actions[episode.episode_id] == [s.action for s in episode.steps]
            assert episode.end == "step_limit" and episode.fault is None
            assert [s.step for s in episode.steps] == [0, 1] and episode.steps[-1].done
            for sample in episode.steps:
                prompt, completion = sampled[tuple(sample.response_token_ids)]
                assert sample.prompt_token_ids == prompt  # the exact tokens the model was given
                assert sample.response_token_ids == completion.token_ids  # the exact tokens it sampled
                assert sample.sampler_logprobs == completion.logprobs and sample.policy_version == 3
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
    assert summary.ends == {"step_limit": 2 * len(TASKS[env])}


async def test_lockstep_mode_gives_the_same_groups(
    generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path
) -> None:
    groups, summary, seen = await play("counter", generator, tiny, alfworld_cache, mode="lockstep")
    assert (summary.groups, summary.episodes, summary.steps) == (2, 4, 8)
    assert {(len(e.steps), e.end) for g in groups for e in g.episodes} == {(2, "step_limit")}
    assert seen["left"] == []


async def test_an_episode_the_env_ends_is_done(generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path) -> None:
    class Counting(Recording):
        """Answers every turn `<think>up</think><action>inc</action>`: the counter task 0 is won in a step."""

        async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
            ids = tiny.tokenizer.encode("<think>up</think><action>inc</action>", add_special_tokens=False)
            return Completion(ids, [-0.5] * len(ids), "stop", 3)

    groups, summary, _ = await play("counter", Counting(generator), tiny, alfworld_cache, tasks=["counter/test/0"])
    [group] = groups
    assert [(e.end, e.won, len(e.steps)) for e in group.episodes] == [("done", True, 1)] * 2
    assert group.episodes[0].steps[0].valid and summary.won == 2


class Failing(Recording):
    """Fails the first request for a second turn of an episode with `error`, as a crashed backend would."""

    def __init__(self, inner: Any, tokenizer: Any, error: Exception) -> None:
        super().__init__(inner)
        self.tokenizer, self.error, self.failed = tokenizer, error, 0

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
        if not self.failed and "You have taken 1 step(s)" in self.tokenizer.decode(prompt_ids):
            self.failed += 1
            raise self.error
        return await super().generate(prompt_ids, max_new_tokens)


@pytest.mark.parametrize("mode", ["async", "lockstep"])
@pytest.mark.parametrize("error", [GenerationError("the backend went away"), KeyError("anything at all")])
async def test_a_failed_turn_ends_that_episode_only(
    generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path, mode: str, error: Exception
) -> None:
    failing = Failing(generator, tiny.tokenizer, error)
    groups, summary, seen = await play(
        "counter", failing, tiny, alfworld_cache, mode=mode, tasks=["counter/test/0"], max_steps=3
    )
    [group] = groups
    ends = sorted((e.end, len(e.steps), e.fault) for e in group.episodes)
    assert ends == [("fault", 1, f"{type(error).__name__}: {error}"), ("step_limit", 3, None)]
    assert group.usable == 1 and summary.ends == {"fault": 1, "step_limit": 1}
    assert seen["left"] == []  # the faulted episode is closed too


async def test_an_empty_completion_is_an_invalid_step_not_a_crash(
    generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path
) -> None:
    class Empty(Recording):
        async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
            return Completion([], [], "stop", 3)

    groups, _, seen = await play("counter", Empty(generator), tiny, alfworld_cache, tasks=["counter/test/0"])
    [group] = groups
    for episode in group.episodes:
        assert episode.end == "step_limit" and [s.response_token_ids for s in episode.steps] == [[], []]
        assert [(s.valid, s.action) for s in episode.steps] == [(False, "")] * 2  # the fallback of an empty turn
        assert seen["transport"].actions[episode.episode_id] == ["", ""]


async def test_a_task_that_cannot_be_opened_faults_its_episodes(
    generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path
) -> None:
    groups, summary, _ = await play(
        "counter", generator, tiny, alfworld_cache, tasks=["counter/test/0", "counter/test/999"]
    )
    broken = next(g for g in groups if g.task_id == "counter/test/999")
    assert broken.usable == 0 and [(e.end, e.steps) for e in broken.episodes] == [("fault", [])] * 2
    assert all(e.fault and "404" in e.fault for e in broken.episodes)
    whole = next(g for g in groups if g.task_id == "counter/test/0")
    assert whole.usable == 2 and summary.ends == {"fault": 2, "step_limit": 2}


async def test_an_episode_past_its_timeout_faults(
    generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path
) -> None:
    class Stuck(Recording):
        async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
            await asyncio.sleep(30)
            raise AssertionError("not reached")

    groups, _, seen = await play(
        "counter", Stuck(generator), tiny, alfworld_cache, tasks=["counter/test/0"], episode_timeout_s=0.2
    )
    assert [(e.end, e.fault) for e in groups[0].episodes] == [("fault", "timed out after 0.2 s")] * 2
    assert seen["left"] == []


class Refusing(MemoryBuffer):
    """A buffer whose store refuses the next `failures` writes, as a Redis outage would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def put(self, group: GroupRecord) -> str:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("buffer unreachable")
        return await super().put(group)


async def test_a_failed_put_is_retried_and_the_group_kept_until_it_lands(
    generator: HFGenerator, tiny: LoadedModel, alfworld_cache: Path
) -> None:
    buffer = Refusing(failures=2)
    groups, summary, _ = await play("counter", generator, tiny, alfworld_cache, buffer=buffer, put_backoff_s=0.01)
    assert len(groups) == 2 and summary.unsaved == 0  # two failed writes, retried

    buffer = Refusing(failures=10**6)
    groups, summary, seen = await play(
        "counter", generator, tiny, alfworld_cache, buffer=buffer, put_retries=2, put_backoff_s=0.01
    )
    roller = seen["roller"]
    assert groups == [] and summary.unsaved == 2 and len(roller.unsaved) == 2  # reported, kept in memory
    buffer.failures = 0  # the store is back
    assert await roller.flush() and roller.unsaved == []
    assert sorted(d.group.task_id for d in await buffer.get(10, policy_version=3)) == TASKS["counter"]


async def test_a_long_prompt_is_cut_from_the_left_keeping_the_template_head(
    tiny: LoadedModel, alfworld_cache: Path
) -> None:
    small = HFGenerator(tiny.model, tiny.tokenizer, Sampling(max_new_tokens=16), max_context=160)
    small.policy_version = 3
    try:
        recording = Recording(small)
        groups, _, _ = await play("webshop", recording, tiny, alfworld_cache, tasks=["webshop/test/0"])
    finally:
        small.close()
    template = tiny.tokenizer.apply_chat_template(
        [{"role": "user", "content": "CONTENT"}], add_generation_prompt=True, tokenize=False
    )
    head, tail = template.split("CONTENT")  # the system prompt and the user header; the end of the turn
    for prompt, _ in recording.calls:
        assert len(prompt) == 160 - 16  # the limit the context leaves, derived, not configured
        text = tiny.tokenizer.decode(prompt)
        assert text.startswith(head) and text.endswith(tail)  # the template kept whole, the text cut between
        assert "admissible actions now are" in text and "You are an expert shopping agent" not in text
    assert [e.end for e in groups[0].episodes] == ["step_limit"] * 2
