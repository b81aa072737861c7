"""Search-QA over HTTP: an oracle reader answers the test panel, the turn protocol and the reward
work as the reference's, `/retrieve` speaks both Search-R1 request forms, and bad input is refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.envs.searchqa.env import embedded_world
from services.envs.searchqa.oracle import reader
from services.envs.searchqa.retrieval import BM25Retriever, parse_doc_list
from tests.conftest import serve, settings

WORLD, PANELS = embedded_world(0)


def searchqa(**overrides: object) -> Any:
    return settings(envs=["searchqa"], **overrides)


async def step(client: httpx.AsyncClient, episode_id: str, n: int, action: str) -> dict[str, Any]:
    response = await client.post(f"/v1/episodes/{episode_id}/step", json={"action": action, "step": n})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def passages_of(observation: str) -> list[str]:
    """The passages of a verl-agent-style observation: `<information>{"result": "Doc 1: ..."}</information>`."""
    assert observation.startswith("<information>") and observation.endswith("</information>")
    reply = json.loads(observation.removeprefix("<information>").removesuffix("</information>"))
    return [h.passage.contents for h in parse_doc_list(reply["result"])]


async def answer_as_oracle(client: httpx.AsyncClient, index: int, max_steps: int | None) -> dict[str, Any]:
    """Play one test question as the oracle reader: the chains of facts come from the episode record
    (the audit), the facts themselves only from the passages the searches return."""
    body: dict[str, Any] = {"task_id": f"searchqa/test/{index}"}
    if max_steps is not None:
        body["max_steps"] = max_steps
    episode = (await client.post("/v1/envs/searchqa/episodes", json=body)).json()
    eid = episode["episode_id"]
    record = (await client.get(f"/v1/episodes/{eid}")).json()
    steps = reader(record["chains"], record["op"])
    n = 0
    try:
        query = next(steps)
        while True:
            result = await step(client, eid, n, f"<search> {query} </search>")
            n += 1
            if result["done"]:
                return result
            query = steps.send(passages_of(result["observation"]))
    except StopIteration as finished:
        return await step(client, eid, n, f"<think>found it</think><answer> {finished.value} </answer>")


async def oracle_panel(client: httpx.AsyncClient, max_steps: int | None) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> dict[str, Any]:
        async with gate:
            return await answer_as_oracle(client, index, max_steps)

    return await asyncio.gather(*(one(i) for i in range(len(PANELS["test"]))))


@pytest.mark.slow  # ~15 s: the whole test panel; run by .ci/run after the default suite
async def test_the_oracle_reader_answers_the_test_panel_over_http() -> None:
    async with serve(searchqa()) as client:
        finals = await oracle_panel(client, max_steps=9)  # two searches per fact at most
        won = [r["won"] for r in finals]
        assert all(r["done"] and r["reward"] == float(r["won"]) for r in finals)
        assert sum(won) / len(won) >= 0.95
        # within the reference's 4 turns (3 searches and the answer), most questions still fall
        within = [r["won"] for r in await oracle_panel(client, max_steps=None)]
        assert sum(within) / len(within) >= 0.8, sum(within) / len(within)


async def test_env_info_and_task_panel() -> None:
    async with serve(searchqa()) as client:
        [info] = (await client.get("/v1/envs")).json()
        assert info["name"] == "searchqa" and info["backend"] == "embedded" and info["max_steps"] == 4
        assert info["splits"] == {"test": 725, "train": 2100}
        assert info["settings"] == {
            "retriever": "bm25",
            "topk": 3,
            "passage_format": "verl-agent",
            "passages": len(WORLD.passages),
        }
        tasks = (await client.get("/v1/envs/searchqa/tasks", params={"split": "test", "offset": 98, "limit": 4})).json()
        assert tasks["total"] == 725
        assert [(t["task_id"], t["data_source"]) for t in tasks["tasks"]] == [
            ("searchqa/test/98", "nq"),
            ("searchqa/test/99", "nq"),
            ("searchqa/test/100", "triviaqa"),
            ("searchqa/test/101", "triviaqa"),
        ]


async def test_turn_protocol_invalid_search_answer_and_the_record() -> None:
    question = PANELS["test"][5]
    async with serve(searchqa()) as client:
        episode = (await client.post("/v1/envs/searchqa/episodes", json={"task_id": "searchqa/test/5"})).json()
        eid = episode["episode_id"]
        assert episode["task"] == episode["observation"] == question.question
        assert episode["admissible_actions"] is None and episode["info"] == {"data_source": "nq"}
        invalid = await step(client, eid, 0, "I should look this up.")
        assert (invalid["observation"], invalid["reward"], invalid["done"]) == ("", 0.0, False)
        assert invalid["info"]["valid"] is False and invalid["info"]["action"] == "invalid"
        searched = await step(client, eid, 1, "<think>hmm</think><search>" + question.question + "</search>")
        expected = BM25Retriever(WORLD.passages).retrieve(question.question, 3)
        assert passages_of(searched["observation"]) == [h.passage.contents for h in expected]
        assert searched["info"] == {"data_source": "nq", "action": "search", "valid": True}
        assert "golden_answers" not in json.dumps(searched)
        answered = await step(client, eid, 2, f"<answer>The {question.golden_answers[0]}!</answer>")
        assert (answered["reward"], answered["won"], answered["done"], answered["truncated"]) == (
            1.0,
            True,
            True,
            False,
        )
        record = (await client.get(f"/v1/episodes/{eid}")).json()
        assert record["golden_answers"] == list(question.golden_answers)
        assert record["data_source"] == "nq" and record["answer"] == f"The {question.golden_answers[0]}!"
        assert record["actions"][0] == "I should look this up."
        late = await client.post(f"/v1/episodes/{eid}/step", json={"action": "<answer>x</answer>", "step": 3})
        assert late.status_code == 409


async def test_a_wrong_answer_ends_with_zero_and_the_turn_limit_truncates() -> None:
    async with serve(searchqa()) as client:
        eid = (await client.post("/v1/envs/searchqa/episodes", json={"task_id": "searchqa/test/0"})).json()[
            "episode_id"
        ]
        wrong = await step(client, eid, 0, "<answer>certainly not this</answer>")
        assert (wrong["reward"], wrong["won"], wrong["done"]) == (0.0, False, True)
        eid = (await client.post("/v1/envs/searchqa/episodes", json={"task_id": "searchqa/test/0"})).json()[
            "episode_id"
        ]
        for n in range(3):
            assert not (await step(client, eid, n, "<search>anything</search>"))["done"]
        last = await step(client, eid, 3, "")
        assert (last["reward"], last["done"], last["truncated"], last["won"]) == (0.0, True, True, False)


async def test_search_r1_passage_format_and_topk_setting() -> None:
    async with serve(searchqa(searchqa_passages="search-r1", searchqa_topk=2)) as client:
        eid = (await client.post("/v1/envs/searchqa/episodes", json={"task_id": "searchqa/test/0"})).json()[
            "episode_id"
        ]
        observation = (await step(client, eid, 0, "<search>Buhaven river</search>"))["observation"]
        hits = BM25Retriever(WORLD.passages).retrieve("Buhaven river", 2)
        title, _, text = hits[0].passage.contents.partition("\n")
        assert observation.startswith(f"\n\n<information>Doc 1(Title: {title}) {text}\nDoc 2(Title: ")
        assert observation.endswith("</information>\n\n") and "Doc 3" not in observation


async def test_retrieve_batch_and_single_forms() -> None:
    retriever = BM25Retriever(WORLD.passages)
    async with serve(searchqa()) as client:
        reply = (
            await client.post("/retrieve", json={"queries": ["Buhaven river", "Una Ruvski born"], "topk": 2})
        ).json()
        assert len(reply["result"]) == 2 and all(len(row) == 2 for row in reply["result"])
        for query, row in zip(["Buhaven river", "Una Ruvski born"], reply["result"], strict=True):
            assert row == [h.search_r1() for h in retriever.retrieve(query, 2)]
        bare = (await client.post("/retrieve", json={"queries": ["Buhaven"], "return_scores": False})).json()
        assert bare["result"][0][0].keys() == {"id", "contents"} and len(bare["result"][0]) == 3
        single = (await client.post("/retrieve", json={"query": "Buhaven river", "topk": 3})).json()
        assert isinstance(single["result"], str) and single["result"].startswith("Doc 1: ")
        assert [h.passage.contents for h in parse_doc_list(single["result"])] == [
            h.passage.contents for h in retriever.retrieve("Buhaven river", 3)
        ]
        nothing = (await client.post("/retrieve", json={"queries": ["the of a"]})).json()
        assert nothing == {"result": [[]]}
        passage = WORLD.passages[17]
        looked_up = (await client.get(f"/v1/envs/searchqa/passages/{passage.id}")).json()
        assert looked_up == {"id": passage.id, "contents": passage.contents}
        assert (await client.get("/v1/envs/searchqa/passages/nope")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({}, 422, "either 'queries'"),
        ({"query": "a", "queries": ["a"]}, 422, "not both"),
        ({"query": ""}, 422, "must not be empty"),
        ({"queries": ["ok", "   "]}, 422, "must not be empty"),
        ({"queries": []}, 422, "queries"),
        ({"queries": "not a list"}, 422, "queries"),
        ({"query": "a", "topk": 0}, 422, "topk"),
        ({"query": "a", "topk": 101}, 422, "topk"),
        ({"query": "a", "topk": "three"}, 422, "topk"),
        ({"query": "a", "top_k": 3}, 422, "top_k"),
        ({"query": "x" * 5000}, 413, "exceeds"),
        ({"queries": ["a"] * 257}, 422, "queries"),
    ],
)
async def test_retrieve_refuses_bad_input(body: dict[str, Any], status: int, fragment: str) -> None:
    async with serve(searchqa()) as client:
        response = await client.post("/retrieve", json=body)
        assert response.status_code == status, response.text
        assert fragment in response.json()["error"]["message"]


async def test_retrieve_without_a_corpus_and_behind_a_token() -> None:
    async with serve(settings()) as client:
        response = await client.post("/retrieve", json={"query": "a"})
        assert response.status_code == 404 and "no Search-QA corpus" in response.json()["error"]["message"]
    async with serve(searchqa(token="s3cret")) as client:
        assert (await client.post("/retrieve", json={"query": "a"})).status_code == 401
        ok = await client.post("/retrieve", json={"query": "a"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


async def test_a_user_dataset_and_corpus_replace_the_generated_ones(tmp_path: Path) -> None:
    corpus = tmp_path / "wiki.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": str(i), "contents": c}) + "\n"
            for i, c in enumerate(
                [
                    '"Paris"\nParis is the capital and largest city of France.',
                    '"Lyon"\nLyon is a city in France on the Rhone.',
                ]
            )
        )
    )
    data = tmp_path / "test.jsonl"
    data.write_text(
        json.dumps(
            {"question": "capital of france?", "golden_answers": ["Paris", "Paris, France"], "data_source": "nq"}
        )
        + "\n"
    )
    async with serve(searchqa(searchqa_data=data, searchqa_corpus=corpus)) as client:
        [info] = (await client.get("/v1/envs")).json()
        assert info["backend"] == "dataset" and info["splits"] == {"test": 1}
        assert info["version"] == "searchqa-dataset-test.jsonl+bm25" and info["settings"]["passages"] == 2
        eid = (await client.post("/v1/envs/searchqa/episodes", json={"split": "test", "index": 0})).json()["episode_id"]
        searched = await step(client, eid, 0, "<search>capital of France</search>")
        assert passages_of(searched["observation"])[0].startswith('"Paris"')
        assert (await step(client, eid, 1, "<answer>paris</answer>"))["won"] is True


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="searchqa_data"):
        searchqa(searchqa_data=tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="http"):
        searchqa(searchqa_retriever_url="ftp://example/retrieve")
    with pytest.raises(ValueError, match="searchqa_topk"):
        searchqa(searchqa_topk=0)
