"""WebShop over HTTP: an oracle shopper buys the target on a sampled test panel, every reward can be
audited from the episode record, products can be looked up, and actions that do not apply change
nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import serve, settings


def webshop(cache: Path, **overrides: object) -> Any:
    return settings(envs=["webshop"], cache_dir=cache, **overrides)


async def step(client: httpx.AsyncClient, episode_id: str, n: int, action: str) -> dict[str, Any]:
    response = await client.post(f"/v1/episodes/{episode_id}/step", json={"action": action, "step": n})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def shop_as_oracle(client: httpx.AsyncClient, task_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Search the goal's query, page to the target, open it, choose its options, buy. The oracle
    reads the goal from the episode record (the audit), never from the observations."""
    episode = (await client.post("/v1/envs/webshop/episodes", json={"task_id": task_id})).json()
    eid = episode["episode_id"]
    goal = (await client.get(f"/v1/episodes/{eid}")).json()["goal"]
    target = f"click[{goal['asin'].lower()}]"
    results = [await step(client, eid, 0, f"search[{goal['query']}]")]
    while target not in results[-1]["admissible_actions"]:
        assert len(results) < 6, f"{goal['asin']} is not in the top 50 for {goal['query']!r}"
        results.append(await step(client, eid, len(results), "click[next >]"))
    for action in [target, *(f"click[{v}]" for v in goal["goal_options"].values()), "click[buy now]"]:
        results.append(await step(client, eid, len(results), action))
    return episode, results


async def test_oracle_buys_the_target_on_a_sampled_test_panel(sdar_cache: Path) -> None:
    async with serve(webshop(sdar_cache)) as client:
        for index in range(0, 500, 10):
            _episode, results = await shop_as_oracle(client, f"webshop/test/{index}")
            last = results[-1]
            assert (last["reward"], last["won"], last["done"], last["truncated"]) == (1.0, True, True, False), index
            assert all(r["reward"] == 0.0 and not r["done"] for r in results[:-1])
            assert len(results) <= 15


async def test_episode_record_audits_goal_and_purchase(sdar_cache: Path) -> None:
    async with serve(webshop(sdar_cache)) as client:
        episode, results = await shop_as_oracle(client, "webshop/test/3")
        assert episode["task"] in episode["observation"]
        assert episode["observation"] == f"WebShop [SEP] Instruction: [SEP] {episode['task']} [SEP] Search"
        assert episode["admissible_actions"] == ["search[<your query>]", "click[search]"]
        assert episode["info"]["has_search_bar"] is True
        record = (await client.get(f"/v1/episodes/{episode['episode_id']}")).json()
        goal, purchase = record["goal"], record["purchase"]
        assert goal["instruction"] == episode["task"]
        assert set(goal) >= {"asin", "query", "attributes", "goal_options", "price_upper", "category", "name"}
        assert purchase["asin"] == goal["asin"] and purchase["options"] == goal["goal_options"]
        assert purchase["price"] <= goal["price_upper"]
        assert purchase["reward"] == 1.0 and purchase["r_type"] == 1.0 and purchase["n_attr"] == len(goal["attributes"])
        assert record["audit"]["purchase"] == purchase
        # Audit fields never travel in step results.
        assert all("purchase" not in r and "purchase" not in r["info"] for r in results)

        # A wrong purchase is audited term by term too: another product, no options.
        episode = (await client.post("/v1/envs/webshop/episodes", json={"task_id": "webshop/test/3"})).json()
        eid = episode["episode_id"]
        result = await step(client, eid, 0, "search[zzz gift box]")
        first_other = next(
            a
            for a in result["admissible_actions"]
            if a.startswith("click[b0") and a != f"click[{goal['asin'].lower()}]"
        )
        await step(client, eid, 1, first_other)
        bought = await step(client, eid, 2, "click[buy now]")
        purchase = (await client.get(f"/v1/episodes/{eid}")).json()["purchase"]
        assert bought["done"] and bought["reward"] == purchase["reward"] < 1.0 and not bought["won"]
        assert bought["observation"].endswith(f"Your score (min 0.0, max 1.0) [SEP] {purchase['reward']}")
        expected = (purchase["n_attr"] + purchase["n_option"] + purchase["r_price"]) / (
            len(goal["attributes"]) + len(goal["goal_options"]) + 1
        )
        assert purchase["reward"] == pytest.approx(expected * purchase["r_type"])


async def test_products_route(sdar_cache: Path) -> None:
    async with serve(webshop(sdar_cache)) as client:
        record_goal = (await client.post("/v1/envs/webshop/episodes", json={"split": "test", "index": 0})).json()
        eid = record_goal["episode_id"]
        asin = (await client.get(f"/v1/episodes/{eid}")).json()["goal"]["asin"]
        product = (await client.get(f"/v1/envs/webshop/products/{asin}")).json()
        assert product["asin"] == asin
        assert set(product) >= {
            "Title", "BulletPoints", "Description", "Attributes", "options", "pricing", "query", "category",
            "product_category",
        }  # fmt: skip
        assert (await client.get(f"/v1/envs/webshop/products/{asin.lower()}")).json() == product
        missing = await client.get("/v1/envs/webshop/products/B0NOTTHERE")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert (await client.get("/v1/envs/webshop/reviews/x")).status_code == 404
        assert (await client.get("/v1/envs/nowhere/products/x")).status_code == 404
        assert (await client.get("/v1/envs/webshop/products/" + "x" * 300)).status_code == 422


async def test_envs_and_tasks_describe_webshop(sdar_cache: Path) -> None:
    async with serve(webshop(sdar_cache)) as client:
        [info] = (await client.get("/v1/envs")).json()
        assert info["name"] == "webshop" and info["backend"] == "embedded" and info["max_steps"] == 15
        assert info["splits"]["test"] == 500 and info["goals"] == "synthetic" and info["products"] == 1000
        page = (await client.get("/v1/envs/webshop/tasks", params={"split": "test", "limit": 5})).json()
        assert page["total"] == 500
        assert [t["task_id"] for t in page["tasks"]] == [f"webshop/test/{i}" for i in range(5)]
        assert all(t["category"] in {"beauty", "electronics", "fashion", "food", "garden"} for t in page["tasks"])
        bad = await client.get("/v1/envs/webshop/tasks", params={"split": "valid"})
        assert bad.status_code == 404


@pytest.mark.parametrize("action", ["click[buy now]", "click[search]", "search[]", "", "buy it", "click[next >]"])
async def test_actions_that_do_not_apply_change_nothing(sdar_cache: Path, action: str) -> None:
    async with serve(webshop(sdar_cache)) as client:
        episode = (
            await client.post("/v1/envs/webshop/episodes", json={"task_id": "webshop/train/5", "max_steps": 2})
        ).json()
        eid = episode["episode_id"]
        first = await step(client, eid, 0, action)
        assert first["observation"] == episode["observation"]
        assert first["admissible_actions"] == episode["admissible_actions"]
        assert (first["reward"], first["done"], first["step"]) == (0.0, False, 1)
        last = await step(client, eid, 1, action)
        assert last["truncated"] and last["done"] and not last["won"]


@pytest.mark.redis
async def test_replay_rebuilds_sessions_from_the_redis_record(
    sdar_cache: Path, redis_base_url: str, redis_prefix: str
) -> None:
    """With one live session per replica, interleaved episodes are rebuilt by replay on every step
    and still end exactly as an uninterrupted run."""
    config = webshop(sdar_cache, redis_url=redis_base_url, redis_prefix=redis_prefix, live_cache_size=1)
    async with serve(config) as client:
        solo_episode, solo = await shop_as_oracle(client, "webshop/test/42")
        a = (await client.post("/v1/envs/webshop/episodes", json={"task_id": "webshop/test/42"})).json()
        b = (await client.post("/v1/envs/webshop/episodes", json={"task_id": "webshop/test/43"})).json()
        record = (await client.get(f"/v1/episodes/{solo_episode['episode_id']}")).json()
        for n, action in enumerate(record["actions"]):
            await step(client, b["episode_id"], n, "click[search]")  # evicts a's live session
            got = await step(client, a["episode_id"], n, action)
            assert got == solo[n] | {"episode_id": a["episode_id"]}
        metrics = (await client.get("/metrics")).text
        assert 'sdar_env_episode_events_total{env="webshop",event="replay"}' in metrics
