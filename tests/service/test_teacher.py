"""The teacher over HTTP: the same numbers as in-process scoring, concurrent requests batched,
policy reloads that no request sees half-done, the teacher modes, and bad input on every route."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.teacher.app import create_app
from services.teacher.service import TeacherService
from shared.models import load_model, tiny_model
from shared.settings import TeacherSettings
from shared.teacher_wire import ScoreRequest

MESSAGES = [{"role": "user", "content": "Your task is to: heat some egg and put it in garbagecan."}]
ITEM: dict[str, Any] = {
    "messages": MESSAGES,
    "response_text": "<think>find the egg</think><action>go to fridge 1</action>",
    "env": "alfworld",
    "task": "heat some egg and put it in garbagecan",
    "metadata": {"task_type": "pick_heat_then_place_in_recep"},
}


@contextlib.asynccontextmanager
async def teacher(**overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, TeacherService]]:
    settings = TeacherSettings(**{"model": "tiny", **overrides})
    service = TeacherService(settings)
    app = create_app(settings, service=service)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://teacher") as client:
            yield client, service


def save_tiny(path: Path, seed: int) -> Path:
    """A checkpoint as a trainer writes it: the weights and the tokenizer."""
    tokenizer = load_model("tiny").tokenizer
    tiny_model(tokenizer, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


async def test_http_and_in_process_scoring_give_identical_numbers() -> None:
    body = {"items": [ITEM, {**ITEM, "response_text": "heat egg 1 with microwave 1"}], "top_logprobs": 3}
    async with teacher() as (client, service):
        response = await client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        over_http = response.json()
        in_process = service.score(ScoreRequest.model_validate(body)).model_dump(mode="json")
        assert over_http == in_process
        item = over_http["items"][0]
        assert item["skills"] == [
            "alfworld-exact-commands",
            "alfworld-hold-then-act",
            "alfworld-search-systematically",
            "alfworld-heat",
        ]
        assert item["retrieved"][-1]["why"] == "task_type=pick_heat_then_place_in_recep"
        n = len(item["tokens"])
        assert "".join(item["tokens"]) == ITEM["response_text"]
        assert all(len(item[k]) == n for k in ("student_logprobs", "teacher_logprobs", "gap", "gate", "top_logprobs"))
        assert item["teacher_logprobs"] != item["student_logprobs"]  # the skills change the teacher's view
        assert over_http["policy_version"] == 0
        table = (await client.post("/v1/score", params={"format": "table"}, json=body)).text
        assert table.startswith("policy version 0\n\nitem 0:") and "alfworld-heat  (task_type=" in table
        assert table.splitlines()[8].endswith(f"{item['gate'][0]:>6.3f}")
        bad = await client.post("/v1/score", params={"format": "xml"}, json=body)
        assert bad.status_code == 422


async def test_concurrent_requests_are_scored_in_one_batch() -> None:
    async with teacher(batch_wait_ms=200) as (client, _):
        bodies = [{"items": [{**ITEM, "response_text": f"go to cabinet {i}"}]} for i in range(6)]
        responses = await asyncio.gather(*(client.post("/v1/score", json=b) for b in bodies))
        assert all(r.status_code == 200 for r in responses)
        metrics = (await client.get("/metrics")).text
        count = float(re.search(r"^sdar_teacher_batch_requests_count (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
        total = float(re.search(r"^sdar_teacher_batch_requests_sum (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
        assert total == 6 and count < 6  # six requests in fewer scoring passes


async def test_a_policy_reload_under_concurrent_requests(tmp_path: Path) -> None:
    checkpoint = save_tiny(tmp_path / "step-1", seed=1)
    body = {"items": [ITEM], "skills": "none"}
    async with teacher() as (client, service):
        before = service.score(ScoreRequest.model_validate(body)).items[0].student_logprobs

        async def score() -> dict[str, Any]:
            response = await client.post("/v1/score", json=body)
            assert response.status_code == 200
            return response.json()  # type: ignore[no-any-return]

        tasks = [asyncio.create_task(score()) for _ in range(12)]
        loaded = await client.post("/v1/policy", json={"path": str(checkpoint)})
        tasks += [asyncio.create_task(score()) for _ in range(4)]
        results = await asyncio.gather(*tasks)
        assert loaded.status_code == 200 and loaded.json()["policy_version"] == 1
        after = service.score(ScoreRequest.model_validate(body)).items[0].student_logprobs
        assert max(abs(a - b) for a, b in zip(after, before, strict=True)) > 1e-2
        for result in results:  # each response is wholly one version, and says which
            expected = before if result["policy_version"] == 0 else after
            # merged requests share their prompt's keys and values: float noise of 1e-6, not a version
            assert result["items"][0]["student_logprobs"] == pytest.approx(expected, abs=1e-5)
        assert results[-1]["policy_version"] == 1
        policy = (await client.get("/v1/policy")).json()
        assert policy == {
            "model": "tiny",
            "path": str(checkpoint),
            "policy_version": 1,
            "teacher_mode": "self",
            "teacher_model": None,
            "run": None,
        }
        stale = await client.post("/v1/policy", json={"path": str(checkpoint), "version": 1})
        assert stale.status_code == 409 and "not newer" in stale.json()["error"]["message"]
        jumped = await client.post("/v1/policy", json={"path": str(checkpoint), "version": 7})
        assert jumped.json()["policy_version"] == 7


async def test_one_service_serves_one_run_after_another(tmp_path: Path) -> None:
    """Versions only go up within a run; another run takes the service over only when it says so
    (`take_over`), starting its own sequence, and can ask for the base weights (a new run's initial
    policy); the scores say whose policy made them."""
    checkpoint = save_tiny(tmp_path / "step-1", seed=1)
    body = {"items": [ITEM], "skills": "none"}
    async with teacher() as (client, _):
        base = (await client.post("/v1/score", json=body)).json()
        assert base["run"] is None and base["policy_version"] == 0
        await client.post("/v1/policy", json={"path": str(checkpoint), "version": 2, "run": "a"})
        stale = await client.post("/v1/policy", json={"path": str(checkpoint), "version": 2, "run": "a"})
        assert stale.status_code == 409
        trained = (await client.post("/v1/score", json=body)).json()
        assert trained["run"] == "a" and trained["items"][0] != base["items"][0]
        unasked = await client.post("/v1/policy", json={"base": True, "version": 0, "run": "b"})
        assert unasked.status_code == 409 and "serves run a now" in unasked.json()["error"]["message"]
        fresh = await client.post("/v1/policy", json={"base": True, "version": 0, "run": "b", "take_over": True})
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["run"] == "b" and fresh.json()["policy_version"] == 0
        again = (await client.post("/v1/score", json=body)).json()
        assert again["run"] == "b" and again["items"] == base["items"]  # the base weights, as at start
        for bad in ({"version": 1}, {"path": str(checkpoint), "base": True}, {"base": True, "run": ""}):
            refused = await client.post("/v1/policy", json=bad)
            assert refused.status_code == 422, bad
        assert (await client.get("/v1/policy")).json()["run"] == "b"  # unchanged by the bad requests


async def test_frozen_and_external_teachers(tmp_path: Path) -> None:
    checkpoint = save_tiny(tmp_path / "step-1", seed=1)
    body = {"items": [ITEM], "skills": "none"}
    async with teacher(teacher_mode="frozen") as (client, _):
        start = (await client.post("/v1/score", json=body)).json()["items"][0]
        assert start["teacher_logprobs"] == start["student_logprobs"]
        await client.post("/v1/policy", json={"path": str(checkpoint)})
        moved = (await client.post("/v1/score", json=body)).json()["items"][0]
        assert moved["teacher_logprobs"] == start["teacher_logprobs"]  # still the initial policy
        assert moved["student_logprobs"] != start["student_logprobs"]
    async with teacher(teacher_mode="external", teacher_model=str(checkpoint)) as (client, _):
        external = (await client.post("/v1/score", json=body)).json()["items"][0]
        assert external["teacher_logprobs"] == moved["student_logprobs"]  # the other model
        assert external["student_logprobs"] == start["student_logprobs"]
        assert (await client.get("/v1/policy")).json()["teacher_model"] == str(checkpoint)


async def test_skills_routes() -> None:
    async with teacher() as (client, _):
        webshop = (await client.get("/v1/skills", params={"env": "webshop"})).json()["skills"]
        assert len(webshop) == 8 and {s["env"] for s in webshop} == {"webshop"}
        assert len((await client.get("/v1/skills")).json()["skills"]) == 24
        body = {"env": "searchqa", "task": "who founded kuhaven press", "metadata": {"data_source": "nq"}}
        chosen = (await client.post("/v1/skills/retrieve", json=body)).json()
        assert chosen["mode"] == "rule" and chosen["skills"][-1]["id"] == "searchqa-direct"
        assert chosen["skills"][-1]["why"] == "data_source=nq" and chosen["skills"][-1]["score"] == 1.0
        semantic = (await client.post("/v1/skills/retrieve", json={**body, "mode": "semantic", "top_k": 2})).json()
        assert semantic["mode"] == "semantic" and len(semantic["skills"]) == 2
        by_id = await client.post("/v1/score", json={"items": [ITEM], "skills": ["webshop-fashion"]})
        assert by_id.json()["items"][0]["retrieved"][0]["why"] == "asked for by id"


ROUTE_ERRORS = [
    ("GET", "/v1/skills?env=chess", None, 422, "unknown env"),
    ("POST", "/v1/skills/retrieve", {"env": "chess"}, 422, "unknown env"),
    ("POST", "/v1/skills/retrieve", {"env": "alfworld", "top_k": 0}, 422, "top_k"),
    ("POST", "/v1/skills/retrieve", {"env": "alfworld", "mode": "magic"}, 422, "mode"),
    ("POST", "/v1/skills/retrieve", {"env": "alfworld", "extra": 1}, 422, "extra"),
    ("POST", "/v1/score", {"items": []}, 422, "items"),
    ("POST", "/v1/score", {"items": [{**ITEM, "response_text": None, "response_token_ids": []}]}, 422, "empty"),
    (
        "POST",
        "/v1/score",
        {"items": [{**ITEM, "response_text": None, "response_token_ids": [49152]}]},
        422,
        "vocabulary",
    ),
    ("POST", "/v1/score", {"items": [{**ITEM, "response_text": None, "response_token_ids": [-3]}]}, 422, "vocabulary"),
    ("POST", "/v1/score", {"items": [{**ITEM, "response_token_ids": [1]}]}, 422, "either response_token_ids"),
    ("POST", "/v1/score", {"items": [{**ITEM, "messages": None}]}, 422, "prompt_token_ids or messages"),
    ("POST", "/v1/score", {"items": [{**ITEM, "response_text": "x " * 5000}]}, 413, "over the limit"),
    ("POST", "/v1/score", {"items": [ITEM], "skills": ["nope"]}, 422, "unknown skill id"),
    ("POST", "/v1/score", {"items": [{**ITEM, "env": None}]}, 422, "needs the item's env"),
    ("POST", "/v1/score", {"items": [{**ITEM, "env": "chess"}]}, 422, "unknown env"),
    ("POST", "/v1/score", {"items": [ITEM], "top_logprobs": 21}, 422, "top_logprobs"),
    ("POST", "/v1/score", {"items": [ITEM], "beta": -1}, 422, "beta"),
    ("POST", "/v1/score", {"items": [{**ITEM, "messages": [{"role": "robot", "content": "x"}]}]}, 422, "role"),
    ("POST", "/v1/policy", {"path": "/nonexistent/checkpoint"}, 422, "no checkpoint"),
    ("POST", "/v1/policy", {"path": ""}, 422, "path"),
    ("POST", "/v1/policy", {}, 422, "path"),
]


@pytest.mark.parametrize(("method", "route", "body", "status", "fragment"), ROUTE_ERRORS)
async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    method: str, route: str, body: dict[str, Any] | None, status: int, fragment: str
) -> None:
    async with teacher(max_response_tokens=2048) as (client, service):
        response = await client.request(method, route, json=body)
        assert response.status_code == status, response.text
        assert fragment in response.json()["error"]["message"]
        assert service.policy.version == 0


async def test_a_token_guards_every_route_but_health() -> None:
    async with teacher(token="s3cret") as (client, _):
        assert (await client.get("/health")).status_code == 200
        for method, route in [("GET", "/v1/skills"), ("POST", "/v1/score"), ("GET", "/v1/policy"), ("GET", "/metrics")]:
            assert (await client.request(method, route, json={})).status_code == 401
        ok = await client.post("/v1/score", json={"items": [ITEM]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
