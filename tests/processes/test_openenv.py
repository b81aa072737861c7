"""OpenEnv's session protocol on the env service, driven by the real `openenv-core` client: one
episode of each env played to its end, the transcript the same as the service's own record; an
episode that survives its replica's death; and bad messages answered with errors on a socket that
stays open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openenv.core.generic_client import GenericEnvClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.launch import ServiceProcess
from shared.redis import EmbeddedRedis

pytestmark = pytest.mark.processes


@pytest.fixture(scope="module")
def three_envs() -> Iterator[str]:
    with ServiceProcess("services.envs", ["--envs", "alfworld,webshop,searchqa"], startup_s=300) as server:
        yield server.url


def play(url: str, reset: dict[str, Any], actions: Any) -> tuple[Any, list[Any], dict[str, Any]]:
    """Reset, then step `actions(observation, n)` until done, with the openenv-core client; the
    session's transcript checked against the episode's record over HTTP before the client closes the
    session, which deletes the episode. Gives the opening, the step results and the record."""
    with GenericEnvClient(base_url=url).sync() as env:
        first = env.reset(**reset)
        results, observation = [], first.observation
        while not (results[-1].done if results else first.done):
            results.append(env.step({"action": actions(observation, len(results))}))
            observation = results[-1].observation
        record = same_as_the_record(url, first, results, env.state())
    assert httpx.get(f"{url}/v1/episodes/{record['episode_id']}").status_code == 404  # closed with the session
    return first, results, record


def same_as_the_record(url: str, first: Any, results: list[Any], state: dict[str, Any]) -> dict[str, Any]:
    """The session's transcript is the episode's record over HTTP, step by step."""
    episode_id = first.observation["episode_id"]
    record = httpx.get(f"{url}/v1/episodes/{episode_id}").json()
    assert first.observation["text"] == record["observation"] and first.observation["task"] == record["task"]
    assert len(results) == len(record["results"]) == state["step_count"]
    for got, recorded in zip(results, record["results"], strict=True):
        assert got.observation["text"] == recorded["observation"]
        assert got.observation["admissible_actions"] == recorded["admissible_actions"]
        assert (got.reward, got.done, got.observation["won"]) == (recorded["reward"], recorded["done"], recorded["won"])
    assert state["episode_id"] == episode_id and state["done"] and record["done"]
    return record  # type: ignore[no-any-return]


def test_the_openenv_client_plays_an_episode_of_each_env_to_its_end(three_envs: str) -> None:
    url = three_envs
    metadata = httpx.get(f"{url}/metadata").json()
    assert "alfworld, searchqa, webshop" in metadata["description"]
    schema = httpx.get(f"{url}/schema").json()
    assert schema["action"]["required"] == ["action"] and "text" in schema["observation"]["properties"]

    plan = httpx.post(f"{url}/v1/envs/alfworld/episodes", json={"task_id": "alfworld/train/23"}).json()
    expert = httpx.get(f"{url}/v1/episodes/{plan['episode_id']}").json()["expert_plan"]
    first, results, record = play(url, {"env": "alfworld", "task_id": "alfworld/train/23"}, lambda _, n: expert[n])
    assert results[-1].observation["won"] and results[-1].reward > 0 and record["actions"] == expert

    first, results, _ = play(
        url, {"env": "webshop", "split": "test", "index": 0, "max_steps": 3}, lambda _, n: "search[red shoes]"
    )
    assert len(results) == 3 and results[-1].observation["truncated"]  # ended at its step limit

    with GenericEnvClient(base_url=url).sync() as one:  # picked up on a multi-env service: its own env, not the first
        shop = one.reset(env="webshop", split="test", index=1)
        with GenericEnvClient(base_url=url).sync() as other:
            again = other.reset(episode_id=shop.observation["episode_id"])
            assert again.observation == shop.observation and other.state()["env"] == "webshop"

    first, results, _ = play(
        url,
        {"env": "searchqa", "seed": 5},
        lambda _, n: "<search> who founded it </search>" if n == 0 else "<answer> nobody </answer>",
    )
    assert len(results) == 2 and first.observation["episode_id"]


def test_an_episode_outlives_its_replica_in_an_openenv_session() -> None:
    """A client whose replica died connects to another and resets with the episode's id: the episode
    goes on where it stood, as if the first replica had served it to the end."""
    store = EmbeddedRedis()
    try:
        args = ["--envs", "counter", "--redis-url", store.url]
        with ServiceProcess("services.envs", args) as survivor:
            doomed = ServiceProcess("services.envs", args)
            env = GenericEnvClient(base_url=doomed.url).sync()
            env.connect()
            opening = env.reset(env="counter", split="train", index=2)
            first = env.step({"action": "inc"})
            episode_id = opening.observation["episode_id"]
            doomed.kill()
            with pytest.raises(ConnectionClosed):  # its socket went with its replica
                env.step({"action": "inc"})
            with GenericEnvClient(base_url=survivor.url).sync() as again:
                resumed = again.reset(env="counter", episode_id=episode_id)
                assert resumed.observation == first.observation and again.state()["step_count"] == 1
                second = again.step({"action": "inc"})
                assert second.observation["step"] == 2
                record = httpx.get(f"{survivor.url}/v1/episodes/{episode_id}").json()
                assert record["actions"] == ["inc", "inc"]
    finally:
        store.stop()


async def exchange(url: str, frames: list[str | bytes]) -> list[dict[str, Any]]:
    async with connect(url.replace("http://", "ws://") + "/ws") as socket:
        replies = []
        for frame in frames:
            await socket.send(frame)
            replies.append(json.loads(await socket.recv()))
        return replies


def test_bad_messages_get_errors_and_the_session_goes_on() -> None:
    with ServiceProcess("services.envs", ["--envs", "counter"], env={"SDAR_MAX_BODY_BYTES": "2048"}) as server:
        frames: list[str | bytes] = [
            "not json",
            b"\xff\xfe",
            "[1, 2]",
            json.dumps({"type": "jump"}),
            json.dumps({"type": "step", "data": {"action": "inc"}}),  # before any reset
            json.dumps({"type": "reset", "data": {"split": "train", "index": "2"}}),  # a string for an int
            json.dumps({"type": "reset", "data": {"bogus": 1}}),
            json.dumps({"type": "reset", "data": {"env": "chess"}}),
            json.dumps({"type": "reset", "data": {"split": "nope"}}),
            json.dumps({"type": "reset", "extra": 1}),
            "[" * 2000,  # nested past the parser's depth (within the message limit)
            '{"type": "reset", "data": {"task_id": "\\ud800"}}',  # a lone surrogate
            '{"type": "reset", "data": {"index": NaN}}',
            json.dumps({"type": "step", "data": {"action": "x" * 4000}}),  # over the message limit
            json.dumps({"type": "reset", "data": {"split": "train", "index": 2}}),  # a good one, at last
            json.dumps({"type": "step", "data": {"action": 7}}),
            json.dumps({"type": "step", "data": {"action": "inc", "n": 1}}),
            json.dumps({"type": "step", "data": {"action": "inc"}}),
            json.dumps({"type": "state"}),
        ]
        replies = asyncio.run(exchange(server.url, frames))
        codes = [r["data"].get("code") if r["type"] == "error" else r["type"] for r in replies]
        assert codes == [
            *("INVALID_JSON", "INVALID_JSON", "VALIDATION_ERROR", "UNKNOWN_TYPE", "SESSION_ERROR"),
            *("VALIDATION_ERROR", "VALIDATION_ERROR", "EXECUTION_ERROR", "VALIDATION_ERROR", "VALIDATION_ERROR"),
            *("INVALID_JSON", "INVALID_JSON", "INVALID_JSON"),
            *("VALIDATION_ERROR", "observation", "VALIDATION_ERROR", "VALIDATION_ERROR", "observation", "state"),
        ], replies
        assert replies[7]["data"]["reason"] == "not_found" and "chess" in replies[7]["data"]["message"]
        assert replies[-1]["data"]["step_count"] == 1
        assert httpx.get(f"{server.url}/health").status_code == 200  # the server is up, as is the session
