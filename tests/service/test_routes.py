"""Every route of the env service in-process, over the cheap `counter` env, once with the in-process
store and once with a real Redis: the contract of DESIGN §3, the step table, lifecycle, limits,
auth, and bad input on every route."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from shared.settings import EnvServiceSettings
from tests.conftest import serve, settings

Conf = Callable[..., EnvServiceSettings]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def conf(request: pytest.FixtureRequest) -> Conf:
    """Settings of a counter server on the store this test runs against."""
    store: dict[str, object] = {}
    if request.param == "redis":
        store = {
            "redis_url": request.getfixturevalue("redis_base_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    return lambda **overrides: settings(**{**store, **overrides})


async def create(client: httpx.AsyncClient, **body: object) -> dict:  # type: ignore[type-arg]
    response = await client.post("/v1/envs/counter/episodes", json=body or {"split": "train", "index": 2})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def step(client: httpx.AsyncClient, episode_id: str, action: str, n: int) -> httpx.Response:
    return await client.post(f"/v1/episodes/{episode_id}/step", json={"action": action, "step": n})


def assert_error(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error  # type: ignore[no-any-return]


async def record(client: httpx.AsyncClient, episode_id: str) -> dict:  # type: ignore[type-arg]
    response = await client.get(f"/v1/episodes/{episode_id}")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def test_health_envs_and_tasks(conf: Conf) -> None:
    async with serve(conf()) as client:
        health = await client.get("/health")
        assert health.json()["status"] == "ok" and health.json()["envs"] == ["counter"]
        assert health.json()["store"] == ("redis" if conf().redis_url else "memory")
        envs = (await client.get("/v1/envs")).json()
        assert envs == [
            {
                "name": "counter",
                "backend": "python",
                "version": "1",
                "splits": {"train": 1000, "test": 100},
                "max_steps": 20,
                "settings": {},
            }
        ]
        page = (await client.get("/v1/envs/counter/tasks", params={"split": "test", "offset": 98, "limit": 5})).json()
        assert page["total"] == 100
        assert [t["task_id"] for t in page["tasks"]] == ["counter/test/98", "counter/test/99"]
        assert page["tasks"][0] | {"index": 0} == {
            "task_id": "counter/test/98",
            "split": "test",
            "index": 0,
            "task_type": "count",
            "data_source": None,
            "category": None,
        }


async def test_tasks_bad_input(conf: Conf) -> None:
    async with serve(conf()) as client:
        assert_error(await client.get("/v1/envs/nope/tasks", params={"split": "train"}), 404, "not_found")
        assert_error(await client.get("/v1/envs/counter/tasks", params={"split": "nope"}), 404, "not_found")
        assert_error(await client.get("/v1/envs/counter/tasks"), 422, "invalid_request")
        for params in ({"offset": -1}, {"limit": 0}, {"limit": 1001}, {"offset": "x"}):
            response = await client.get("/v1/envs/counter/tasks", params={"split": "train", **params})
            assert_error(response, 422, "invalid_request")
        assert_error(await client.get("/v1/nothing"), 404, "not_found")
        assert_error(await client.delete("/v1/envs"), 405, "method_not_allowed")


async def test_create_episode(conf: Conf) -> None:
    async with serve(conf()) as client:
        by_index = await create(client, split="train", index=2)
        assert by_index | {"episode_id": "x"} == {
            "episode_id": "x",
            "env": "counter",
            "task_id": "counter/train/2",
            "task": "count to 3",
            "observation": "The counter shows 0. Your task is to: count to 3.",
            "admissible_actions": ["dec", "inc"],
            "step": 0,
            "done": False,
            "info": {"task_type": "count"},
        }
        by_id = await create(client, task_id="counter/train/2")
        assert by_id["episode_id"] != by_index["episode_id"]
        assert by_id["observation"] == by_index["observation"], "episodes of one task start identical"


async def test_create_with_client_id_is_idempotent(conf: Conf) -> None:
    async with serve(conf()) as client:
        first = await create(client, task_id="counter/train/1", episode_id="client-chosen-1")
        again = await create(client, task_id="counter/train/1", episode_id="client-chosen-1")
        assert again == first
        other = await client.post(
            "/v1/envs/counter/episodes", json={"task_id": "counter/train/2", "episode_id": "client-chosen-1"}
        )
        assert_error(other, 409, "episode_exists")
        assert (await client.get("/metrics")).text.count('event="created"} 1.0') == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "invalid_request"),
        ({"split": "train"}, 422, "invalid_request"),
        ({"task_id": "counter/train/1", "split": "train", "index": 1}, 422, "invalid_request"),
        ({"split": "train", "index": -1}, 422, "invalid_request"),
        ({"split": "train", "index": 1, "max_steps": 0}, 422, "invalid_request"),
        ({"split": "train", "index": 1, "surprise": True}, 422, "invalid_request"),
        ({"split": "train", "index": 1, "episode_id": "bad id!"}, 422, "invalid_request"),
        ({"split": "train", "index": 1000}, 404, "not_found"),
        ({"split": "valid", "index": 0}, 404, "not_found"),
        ({"task_id": "counter/train/x"}, 404, "not_found"),
        ({"task_id": "alfworld/train/1"}, 404, "not_found"),
        ({"task_id": "nonsense"}, 404, "not_found"),
    ],
)
async def test_create_bad_input_changes_nothing(conf: Conf, body: dict, status: int, code: str) -> None:  # type: ignore[type-arg]
    async with serve(conf()) as client:
        assert_error(await client.post("/v1/envs/counter/episodes", json=body), status, code)
        assert await client.app.state.service.store.count() == 0  # type: ignore[attr-defined]


async def test_create_malformed_and_unknown_env(conf: Conf) -> None:
    async with serve(conf()) as client:
        response = await client.post(
            "/v1/envs/counter/episodes", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_error(response, 422, "invalid_request")
        assert_error(await client.post("/v1/envs/nope/episodes", json={"split": "train", "index": 0}), 404, "not_found")


async def test_step_table(conf: Conf) -> None:
    async with serve(conf()) as client:
        episode = await create(client, split="train", index=2)  # count to 3
        eid = episode["episode_id"]
        first = await step(client, eid, "inc", 0)
        assert first.status_code == 200
        assert first.json() | {"episode_id": "x"} == {
            "episode_id": "x",
            "observation": "The counter shows 1.",
            "reward": 0.0,
            "done": False,
            "truncated": False,
            "won": False,
            "admissible_actions": ["dec", "inc"],
            "step": 1,
            "info": {},
        }
        # a retry of the step just taken, and later a late duplicate: the recorded result, nothing applied
        assert (await step(client, eid, "inc", 0)).json() == first.json()
        assert (await step(client, eid, "dec", 1)).status_code == 200
        assert (await step(client, eid, "inc", 0)).json() == first.json()
        # another action at a taken index, or a step from the future: conflict, with the current step
        assert assert_error(await step(client, eid, "dec", 0), 409, "step_conflict")["current_step"] == 2
        assert assert_error(await step(client, eid, "inc", 5), 409, "step_conflict")["current_step"] == 2
        for n, action in ((2, "inc"), (3, "inc"), (4, "inc")):
            last = await step(client, eid, action, n)
        assert last.json()["won"] and last.json()["done"] and last.json()["reward"] == 1.0
        # after done: the next index and any later one are refused, a retry of the last still answers
        for n in (5, 6, 99):
            assert assert_error(await step(client, eid, "inc", n), 409, "episode_done")["current_step"] == 5
        assert last.json()["step"] == 5  # a result's step: the number of steps taken
        assert (await step(client, eid, "inc", 4)).json() == last.json()
        rec = await record(client, eid)
        assert rec["actions"] == ["inc", "dec", "inc", "inc", "inc"]
        assert [r["observation"] for r in rec["results"]][-1] == "The counter shows 3."
        assert rec["step"] == 5 and rec["done"] and rec["expert_plan"] == ["inc", "inc", "inc"]


async def test_invalid_actions_are_normal_steps_and_the_limit_truncates(conf: Conf) -> None:
    async with serve(conf()) as client:
        eid = (await create(client, split="train", index=6, max_steps=3))["episode_id"]
        for n, action in enumerate(["jump", "", "inc"]):
            result = (await step(client, eid, action, n)).json()
            assert result["step"] == n + 1
        assert result["done"] and result["truncated"] and not result["won"]
        assert (await record(client, eid))["results"][0]["observation"] == "Nothing happens."
        assert_error(await step(client, eid, "inc", 3), 409, "episode_done")


async def test_step_bad_input_changes_nothing(conf: Conf) -> None:
    async with serve(conf(max_action_bytes=16, max_body_bytes=2048)) as client:
        eid = (await create(client))["episode_id"]
        assert_error(await step(client, "no-such-episode", "inc", 0), 404, "not_found")
        assert_error(await step(client, eid, "x" * 17, 0), 413, "too_large")
        big = await client.post(f"/v1/episodes/{eid}/step", json={"action": "x" * 4096, "step": 0})
        assert_error(big, 413, "too_large")
        for body in (
            {"action": "inc"},
            {"step": 0},
            {"action": "inc", "step": -1},
            {"action": 3, "step": 0},
            {"action": "inc", "step": 0, "extra": 1},
            [],
        ):
            assert_error(await client.post(f"/v1/episodes/{eid}/step", json=body), 422, "invalid_request")
        rec = await record(client, eid)
        assert rec["actions"] == [] and rec["step"] == 0


async def test_concurrent_requests_for_one_step_apply_once(conf: Conf) -> None:
    async with serve(conf()) as client:
        eid = (await create(client))["episode_id"]
        same = await asyncio.gather(*(step(client, eid, "inc", 0) for _ in range(10)))
        assert {r.status_code for r in same} == {200}
        assert len({r.text for r in same}) == 1
        racing = await asyncio.gather(*(step(client, eid, a, 1) for a in ["inc", "dec"] * 5))
        winners = [r for r in racing if r.status_code == 200]
        assert {r.json()["observation"] for r in winners} == {winners[0].json()["observation"]}
        assert all(r.status_code == 409 for r in racing if r.status_code != 200)
        assert len((await record(client, eid))["actions"]) == 2


async def test_batch_step(conf: Conf) -> None:
    async with serve(conf()) as client:
        a = (await create(client, split="train", index=0))["episode_id"]  # count to 1
        b = (await create(client, split="train", index=1))["episode_id"]  # count to 2
        response = await client.post(
            "/v1/episodes:step",
            json={
                "steps": [
                    {"episode_id": a, "action": "inc", "step": 0},
                    {"episode_id": b, "action": "inc", "step": 0},
                    {"episode_id": b, "action": "inc", "step": 1},
                    {"episode_id": "missing", "action": "inc", "step": 0},
                    {"episode_id": a, "action": "inc", "step": 1},
                ]
            },
        )
        assert response.status_code == 200
        results = response.json()["results"]
        assert results[0]["won"] and results[0]["episode_id"] == a
        assert [results[1]["step"], results[2]["step"], results[2]["won"]] == [1, 2, True]
        assert results[3]["error"]["code"] == "not_found"
        assert results[4]["error"]["code"] == "episode_done"
        for body in (
            {"steps": [{"episode_id": a, "action": "inc"}]},
            {"steps": "x"},
            {},
            {"steps": [{"episode_id": a, "action": "inc", "step": 0}] * 1025},
        ):
            assert_error(await client.post("/v1/episodes:step", json=body), 422, "invalid_request")


async def test_delete_then_404(conf: Conf) -> None:
    async with serve(conf()) as client:
        eid = (await create(client))["episode_id"]
        assert (await client.delete(f"/v1/episodes/{eid}")).status_code == 204
        assert_error(await client.get(f"/v1/episodes/{eid}"), 404, "not_found")
        assert_error(await step(client, eid, "inc", 0), 404, "not_found")
        assert_error(await client.delete(f"/v1/episodes/{eid}"), 404, "not_found")
        assert len(client.app.state.service.caches["counter"]) == 0  # type: ignore[attr-defined]


async def test_idle_episodes_expire(conf: Conf) -> None:
    async with serve(conf(episode_ttl_s=0.3)) as client:
        eid = (await create(client))["episode_id"]
        await asyncio.sleep(0.5)
        assert_error(await client.get(f"/v1/episodes/{eid}"), 404, "not_found")
        assert_error(await step(client, eid, "inc", 0), 404, "not_found")


async def test_capacity_answers_429_and_changes_nothing(conf: Conf) -> None:
    async with serve(conf(max_open_episodes=2)) as client:
        await create(client)
        kept = (await create(client))["episode_id"]
        assert_error(
            await client.post("/v1/envs/counter/episodes", json={"split": "train", "index": 0}), 429, "at_capacity"
        )
        assert await client.app.state.service.store.count() == 2  # type: ignore[attr-defined]
        await client.delete(f"/v1/episodes/{kept}")
        await create(client)


async def test_bearer_token(conf: Conf) -> None:
    async with serve(conf(token="s3cret")) as client:
        assert (await client.get("/health")).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert_error(await client.get("/v1/envs", headers=headers), 401, "unauthorized")
            assert_error(await client.get("/metrics", headers=headers), 401, "unauthorized")
            response = await client.post(
                "/v1/envs/counter/episodes", json={"split": "train", "index": 0}, headers=headers
            )
            assert_error(response, 401, "unauthorized")
        good = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/v1/envs", headers=good)).status_code == 200


async def test_health_answers_while_a_slow_step_is_in_flight(conf: Conf) -> None:
    async with serve(conf()) as client:
        eid = (await create(client))["episode_id"]
        slow = asyncio.create_task(step(client, eid, "sleep 1.5", 0))
        await asyncio.sleep(0.1)
        assert (await client.get("/health")).status_code == 200
        assert not slow.done(), "health answered before the slow step finished"
        assert (await slow).status_code == 200


async def test_live_cache_is_bounded_and_evicted_episodes_replay(conf: Conf) -> None:
    async with serve(conf(live_cache_size=3)) as client:
        ids = [(await create(client, split="train", index=6))["episode_id"] for _ in range(8)]
        for n in range(3):
            for eid in ids:
                assert (await step(client, eid, "inc", n)).status_code == 200
                assert len(client.app.state.service.caches["counter"]) <= 3  # type: ignore[attr-defined]
        for eid in ids:
            assert [r["observation"] for r in (await record(client, eid))["results"]][-1] == "The counter shows 3."
        metrics = (await client.get("/metrics")).text
        assert 'sdar_env_episode_events_total{env="counter",event="replay"}' in metrics
        assert 'sdar_env_episode_events_total{env="counter",event="evicted"}' in metrics
        assert "sdar_env_live_simulators" in metrics and "sdar_env_requests_total" in metrics
