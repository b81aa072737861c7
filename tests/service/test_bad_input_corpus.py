"""A hand-made corpus of bad requests, sent to every route of every service (in process): each is a
4xx with the contract's error body, never a 5xx, and leaves the service answering the next request."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.envs.app import create_app as env_app
from services.teacher.app import create_app as teacher_app
from services.teacher.service import TeacherService
from shared.models import LoadedModel, load_model
from shared.settings import TeacherSettings
from tests.conftest import in_process, settings
from trainer.generation import Sampling
from trainer.openai_server import create_app as completions_app

LIMIT = 1 << 20  # the env service's body limit in this test
UNPARSABLE = {  # refused by the JSON parser itself, before any route's model: 422 "JSON decode error"
    "lone surrogate",
    "NUL character",
    "bad UTF-8",
    "deep nesting",
    "huge float",
    "huge integer",
    "NaN",
    "Infinity",
    "not JSON",
}
BODIES: dict[str, bytes] = {
    "lone surrogate": b'{"action": "a\\ud800", "prompt": "\\udc00x", "query": "\\ud800"}',
    "NUL character": b'{"action": "inc\\u0000", "prompt": "a\\u0000", "query": "\\u0000"}',
    "bad UTF-8": b'{"action": "\xff\xfe"}',
    "deep nesting": b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "huge float": b'{"step": 1e999, "max_tokens": 1e999}',
    "huge integer": b'{"step": ' + b"9" * 5000 + b"}",
    "NaN": b'{"step": NaN, "temperature": NaN}',
    "Infinity": b'{"beta": -Infinity}',
    "not JSON": b"{'step': 0,",
    "a JSON string": b'"hello"',
    "empty object": b"{}",
    "out-of-vocabulary ids": b'{"prompt": [99999999], "items": [{"prompt_token_ids": [99999999], '
    b'"response_token_ids": [99999999]}], "prompt_token_ids": [-1]}',
    "oversize": b'{"action": "' + b"x" * (LIMIT + 10) + b'"}',
}
JSON = {"content-type": "application/json"}
LIMITS = {"env service": LIMIT, "teacher": 64 << 20, "completions server": 16 << 20}
EPISODE = "no-such-episode"
PATH_VALUES = {"env": "counter", "collection": "products", "key": "x", "episode_id": EPISODE}


def service(name: str) -> Any:
    """The app called `name`, built on its own."""
    if name == "env service":
        return env_app(settings(max_body_bytes=LIMIT))
    tiny = load_model("tiny")
    if name == "teacher":
        teacher_settings = TeacherSettings(model="tiny")
        return teacher_app(teacher_settings, service=TeacherService(teacher_settings, tiny))
    served = LoadedModel(copy.deepcopy(tiny.model), tiny.tokenizer, "tiny", "tiny")
    return completions_app(served, Sampling(1.0), max_context=64)


def routes(app: Any) -> list[tuple[str, str, bool]]:
    """`(method, path, takes a body)` of every route its OpenAPI page lists, path parameters filled in."""
    out = []
    for template, operations in app.openapi()["paths"].items():
        if template == "/pause":  # it would hold every request after it
            continue
        path = template
        for name, value in PATH_VALUES.items():
            path = path.replace("{" + name + "}", value)
        out += [(method.upper(), path, "requestBody" in op) for method, op in sorted(operations.items())]
    return out


def assert_error_body(response: httpx.Response, what: str) -> None:
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["message"], what


@pytest.mark.parametrize("name", ["env service", "teacher", "completions server"])
async def test_every_route_answers_the_corpus_with_a_4xx_and_the_error_body(name: str) -> None:
    app = service(name)
    async with in_process(app) as client:
        posts = [path for method, path, body in routes(app) if method == "POST" and body]
        assert posts, name
        for path in posts:
            for label, body in BODIES.items():
                response = await client.post(path, content=body, headers=JSON)
                assert_error_body(response, f"{name} POST {path} with {label}")
                if label in UNPARSABLE:
                    assert response.status_code == 422, f"{name} POST {path} with {label}: {response.status_code}"
                    assert "JSON decode error" in response.json()["error"]["message"], (name, path, label)

            async def chunked() -> AsyncIterator[bytes]:  # just over the limit, with no length
                for _ in range(LIMITS[name] // (1 << 16) + 1):
                    yield b" " * (1 << 16)

            response = await client.post(path, content=chunked(), headers=JSON)
            assert response.status_code == 413, f"{name} POST {path} chunked: {response.status_code}"
        for method, path, _ in routes(app):  # NUL where the routes take text in the URL
            if method in ("GET", "DELETE"):
                url = path.replace(EPISODE, "ep%00x").replace("/counter/", "/count%00er/")
                response = await client.request(method, url, params={"split": "\x00", "env": "\x00"})
                assert response.status_code < 500, f"{name} {method} {url}: {response.status_code}"
        assert (await client.get("/health")).status_code == 200  # and it goes on answering
