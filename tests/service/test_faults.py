"""Bad input and faults that once answered 5xx or failed other callers (issue 15, findings 1-6): each
service in process, a real Redis where the store matters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.envs.app import StoreUnreachable, create_app
from shared.redis import EmbeddedRedis
from tests.conftest import serve, settings
from tests.service.test_teacher import ITEM, save_tiny, teacher
from trainer.generation import GenerationError

JSON = {"content-type": "application/json"}


def raw(client: httpx.AsyncClient, path: str, body: str | bytes) -> Any:
    return client.post(path, content=body.encode() if isinstance(body, str) else body, headers=JSON)


def assert_4xx(response: httpx.Response, status: int = 422) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return str(error["message"])


def same_scores(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same skills and tokens, and log-probs equal up to batching's float noise (padding)."""
    (x,), (y,) = a["items"], b["items"]
    close = all(
        abs(p - q) < 1e-4 for k in ("student_logprobs", "teacher_logprobs") for p, q in zip(x[k], y[k], strict=True)
    )
    return close and x["skills"] == y["skills"] and x["tokens"] == y["tokens"]


async def test_a_bad_score_request_fails_alone_and_not_the_requests_batched_with_it() -> None:
    good = {"items": [ITEM]}
    without_messages = {k: v for k, v in ITEM.items() if k != "messages"}
    bad_bodies: dict[str, Any] = {
        "empty prompt ids": {"items": [{**without_messages, "prompt_token_ids": []}]},
        "unencodable content": '{"items":[{"messages":[{"role":"user","content":"a\\ud800"}],"response_text":"x"}]}',
        "thousands of skill ids": {"items": [ITEM], "skills": ["alfworld-heat"] * 3000},
    }
    async with teacher(batch_wait_ms=300) as (client, _):
        alone = (await client.post("/v1/score", json=good)).json()
        for name, bad in bad_bodies.items():
            sends = [client.post("/v1/score", json=good) for _ in range(6)]
            sends.append(raw(client, "/v1/score", bad) if isinstance(bad, str) else client.post("/v1/score", json=bad))
            *valid, invalid = await asyncio.gather(*sends)
            assert [r.status_code for r in valid] == [200] * 6, (name, [r.text[:200] for r in valid])
            assert all(same_scores(r.json(), alone) for r in valid), name
            assert 400 <= invalid.status_code < 500, (name, invalid.text)
            assert invalid.json()["error"]["message"], name


async def test_a_failure_inside_a_batched_pass_is_retried_without_the_request_it_belongs_to() -> None:
    """A request that passes every check but breaks the forward pass (a fault injected into the
    scorer for the pass that holds it) fails alone; its batch-mates are scored again without it."""
    long_prompt = {**ITEM, "response_text": None, "response_token_ids": [7] * 40}
    async with teacher(batch_wait_ms=300, max_prompt_tokens=100000, max_response_tokens=100000) as (client, svc):
        original = svc.scorer.logprobs

        passes: list[int] = []

        def fragile(model: Any, pairs: Any, *args: Any, **kwargs: Any) -> Any:
            passes.append(len(pairs))
            if any(len(r) == 40 for _, r in pairs):  # the pass that holds the long item breaks
                raise RuntimeError("the forward pass broke")
            return original(model, pairs, *args, **kwargs)

        svc.scorer.logprobs = fragile  # type: ignore[method-assign]
        good = {"items": [ITEM]}
        *valid, broken = await asyncio.gather(
            *(client.post("/v1/score", json=good) for _ in range(4)),
            client.post("/v1/score", json={"items": [long_prompt]}),
            return_exceptions=True,
        )
    assert max(passes) > 1  # the long item was batched with others, and they were scored again without it
    assert [r.status_code for r in valid] == [200] * 4
    assert isinstance(broken, RuntimeError)  # in-process transport: the server's own error, raised


async def test_lone_surrogates_are_a_422_on_the_env_service() -> None:
    async with serve(settings(envs=["counter", "searchqa"])) as client:
        for route, body in (
            ("/v1/envs/counter/episodes", '{"split":"train\\ud800","index":0}'),
            ("/retrieve", '{"query":"\\udfff","topk":1}'),
            ("/retrieve", '{"queries":["ok","\\udfff"],"topk":1}'),
        ):
            assert "surrogate" in assert_4xx(await raw(client, route, body))
        episode = (await client.post("/v1/envs/counter/episodes", json={"split": "train", "index": 0})).json()
        eid = episode["episode_id"]
        step = await raw(client, f"/v1/episodes/{eid}/step", '{"action":"inc\\ud800","step":0}')
        assert "surrogate" in assert_4xx(step)
        item = f'{{"episode_id":"{eid}","action":"\\ud800","step":0}}'
        batch = await raw(client, "/v1/episodes:step", f'{{"steps":[{item}]}}')
        assert_4xx(batch)
        good_pair = await raw(client, f"/v1/episodes/{eid}/step", '{"action":"inc \\ud83d\\ude00","step":0}')
        assert good_pair.status_code == 200, good_pair.text  # a valid pair is an ordinary character


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"split":"train","index":0,"x":"\xff"}', "UTF-8"),
        (b'{"split":"train","index":NaN}', "NaN"),
        (b'{"split":"train","index":1e999}', "range"),
        (b'{"split":"train","index":' + b"9" * 5000 + b"}", "digits"),
        (b'{"split":' + b"[" * 100000 + b"]" * 100000 + b"}", "nested"),
    ],
)
async def test_bodies_json_cannot_carry_through_are_a_422(body: bytes, why: str) -> None:
    async with serve(settings(max_body_bytes=1 << 20)) as client:
        assert why in assert_4xx(await raw(client, "/v1/envs/counter/episodes", body))


async def test_a_chunked_body_over_the_limit_is_a_413() -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 1024

    async with serve(settings(max_body_bytes=4096)) as client:
        response = await client.post("/v1/envs/counter/episodes", content=chunks(), headers=JSON)
        assert_4xx(response, 413)

        async def small() -> Any:
            yield b'{"split": "train",'
            yield b' "index": 1}'

        response = await client.post("/v1/envs/counter/episodes", content=small(), headers=JSON)
        assert response.status_code == 201, response.text  # a chunked body under the limit reads whole


@pytest.mark.parametrize(
    "body",
    [
        {"split": "train", "index": True},
        {"split": "train", "index": "1"},
        {"split": "train", "index": 1.0},
    ],
)
async def test_integers_are_strict(body: dict[str, Any]) -> None:
    async with serve(settings()) as client:
        assert_4xx(await client.post("/v1/envs/counter/episodes", json=body))
        eid = (await client.post("/v1/envs/counter/episodes", json={"split": "train", "index": 0})).json()["episode_id"]
        for step in ("0", False, 0.0):
            assert_4xx(await client.post(f"/v1/episodes/{eid}/step", json={"action": "inc", "step": step}))
        assert (await client.post(f"/v1/episodes/{eid}/step", json={"action": "inc", "step": 0})).status_code == 200


async def test_token_ids_are_strict_on_the_teacher() -> None:
    async with teacher() as (client, _):
        for ids in (["1"], [True], [1.5]):
            body = {"items": [{**ITEM, "response_text": None, "response_token_ids": ids}]}
            assert_4xx(await client.post("/v1/score", json=body))


async def test_redis_down_is_a_retryable_503_and_the_service_heals(tmp_path: Path) -> None:
    server = EmbeddedRedis()
    port = server.port
    try:
        async with serve(settings(redis_url=server.url, redis_prefix="t-outage:")) as client:
            eid = (await client.post("/v1/envs/counter/episodes", json={"split": "train", "index": 0})).json()[
                "episode_id"
            ]
            server.stop()
            calls = [
                client.post("/v1/envs/counter/episodes", json={"split": "train", "index": 0}),
                client.post(f"/v1/episodes/{eid}/step", json={"action": "inc", "step": 0}),
                client.post("/v1/episodes:step", json={"steps": [{"episode_id": eid, "action": "inc", "step": 0}]}),
                client.get(f"/v1/episodes/{eid}"),
                client.delete(f"/v1/episodes/{eid}"),
            ]
            for response in await asyncio.gather(*calls):
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "store_unreachable"
                assert response.headers["retry-after"] == "1"
            assert (await client.get("/health")).status_code == 503
            server = EmbeddedRedis(port)  # back, empty (no persistence): the service heals by itself
            assert (await client.get("/health")).status_code == 200
            created = await client.post("/v1/envs/counter/episodes", json={"split": "train", "index": 0})
            assert created.status_code == 201, created.text
    finally:
        server.stop()


async def test_a_service_does_not_come_up_against_an_unreachable_redis() -> None:
    app = create_app(settings(redis_url="redis://127.0.0.1:1/0", redis_wait_s=0.5))
    with pytest.raises(StoreUnreachable, match=r"unreachable after 0\.5 s"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.parametrize("kind", ["long", "corrupt"])
async def test_a_long_or_corrupt_policy_path_is_a_422_and_the_policy_keeps_serving(tmp_path: Path, kind: str) -> None:
    if kind == "long":
        path = str(tmp_path / ("x" * 300))
    else:
        path = str(save_tiny(tmp_path / "ckpt", seed=3))
        (Path(path) / "model.safetensors").write_bytes(b"\x00" * 64)
    async with teacher() as (client, _):
        before = (await client.post("/v1/score", json={"items": [ITEM]})).json()
        assert_4xx(await client.post("/v1/policy", json={"path": path}))
        assert (await client.get("/v1/policy")).json()["policy_version"] == 0
        assert (await client.post("/v1/score", json={"items": [ITEM]})).json() == before


async def test_the_completions_server_gives_top_logprobs_and_refuses_another_model() -> None:
    from tests.service.test_generation_policy import PROMPT, served

    async with served() as (client, generator):
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "logprobs": 5, "return_tokens_as_token_ids": True}
        reply = (await client.post("/v1/completions", json=body)).json()
        logprobs = reply["choices"][0]["logprobs"]
        assert len(logprobs["top_logprobs"]) == 4
        rows = zip(logprobs["top_logprobs"], logprobs["tokens"], logprobs["token_logprobs"], strict=True)
        for top, token, chosen in rows:
            values = list(top.values())
            assert len(top) == 5 and values == sorted(values, reverse=True)
            assert all(k.startswith("token_id:") for k in top)
            assert chosen <= values[0] + 1e-6  # nothing beats the most likely
            if token in top:  # the sampled token's entry is its own log-prob, under the same softmax
                assert abs(top[token] - chosen) < 1e-5
        assert (await client.post("/v1/completions", json={**body, "logprobs": 0})).json()["choices"][0]["logprobs"][
            "top_logprobs"
        ] is None
        other = await client.post("/v1/completions", json={**body, "model": "gpt-4"})
        assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
        await generator.check_model()  # the client's own model is served
        generator.model = "gpt-4"
        with pytest.raises(GenerationError, match="serves 'tiny', not 'gpt-4'"):
            await generator.check_model()


@pytest.mark.redis
async def test_hundreds_of_steps_at_once_wait_for_a_store_connection_rather_than_fail(
    redis_base_url: str, redis_prefix: str
) -> None:
    """A batch of 400 steps runs them concurrently: they share a bounded pool of Redis connections and
    wait for one (redis-py's default pool fails past its size with "Too many connections", a 503)."""
    async with serve(settings(redis_url=redis_base_url, redis_prefix=redis_prefix, max_body_bytes=1 << 22)) as client:
        body = {"split": "train", "index": 6}
        ids = [(await client.post("/v1/envs/counter/episodes", json=body)).json()["episode_id"] for _ in range(400)]
        steps = [{"episode_id": e, "action": "inc", "step": 0} for e in ids]
        response = await client.post("/v1/episodes:step", json={"steps": steps})
        assert response.status_code == 200, response.text[:300]
        assert all("error" not in r for r in response.json()["results"])


def test_a_prompt_the_tokenizer_cannot_encode_is_the_requests_own_error() -> None:
    """In process (no JSON parser in front): a lone surrogate in a message is a `ScoringError` of the
    request, raised while it is prepared, before any batch."""
    from services.teacher.scoring import ScoringError
    from services.teacher.service import TeacherService
    from shared.settings import TeacherSettings
    from shared.teacher_wire import ScoreRequest

    service = TeacherService(TeacherSettings(model="tiny"))
    request = ScoreRequest.model_validate(
        {"items": [{"messages": [{"role": "user", "content": "a\ud800"}], "response_text": "x", "env": "alfworld"}]}
    )
    with pytest.raises(ScoringError, match="cannot be tokenized"):
        service.prepare(request)
