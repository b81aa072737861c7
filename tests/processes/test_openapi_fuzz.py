"""Each service's OpenAPI, fuzzed with schemathesis against the service as a process: seeded, a bounded
number of examples an operation, valid and invalid ones. No answer is a 5xx, and every answer is one
the page documents (its status, its content type, its body's schema). Real env names and episode ids
are put into the generated paths, so the fuzzer reaches past 404."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation import GenerationMode

from shared.launch import ServiceProcess

pytestmark = pytest.mark.processes

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def env_service() -> Iterator[tuple[ServiceProcess, list[str]]]:
    with ServiceProcess("services.envs", ["--envs", "counter,searchqa"]) as process:
        body = {"split": "train", "index": 3}
        ids = [httpx.post(f"{process.url}/v1/envs/counter/episodes", json=body).json()["episode_id"] for _ in range(30)]
        yield process, ids


def fuzz(schema: schemathesis.BaseSchema, seeded: Callable[[schemathesis.Case], None] = lambda case: None) -> int:
    """Every operation of `schema`, with valid and with invalid examples; returns the calls made."""
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @FUZZ
            def run(case: schemathesis.Case) -> None:
                nonlocal calls
                seeded(case)
                case.call_and_validate(checks=CHECKS)
                calls += 1

            try:
                run()
            except Unsatisfiable:  # an operation with nothing to get wrong (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
    return calls


def test_the_env_service_answers_every_input_as_documented(env_service: tuple[ServiceProcess, list[str]]) -> None:
    process, episodes = env_service

    def seeded(case: schemathesis.Case) -> None:
        rng = random.Random(repr(case.path_parameters))
        path = case.path_parameters or {}
        if "episode_id" in path and rng.random() < 0.8:
            path["episode_id"] = rng.choice(episodes)
        if "env" in path and rng.random() < 0.8:
            path["env"] = rng.choice(["counter", "searchqa"])

    assert fuzz(schemathesis.openapi.from_url(f"{process.url}/openapi.json"), seeded) > 300


def test_the_teacher_answers_every_input_as_documented() -> None:
    with ServiceProcess("services.teacher", ["--model", "tiny"]) as process:
        assert fuzz(schemathesis.openapi.from_url(f"{process.url}/openapi.json")) > 200


def test_the_completions_server_answers_every_input_as_documented() -> None:
    # a short context keeps every generated completion small; a client's /pause would hold the rest
    with ServiceProcess("trainer.openai_server", ["--model", "tiny", "--max-context", "32"]) as process:
        schema = schemathesis.openapi.from_url(f"{process.url}/openapi.json").exclude(path_regex="^/(pause|resume)$")
        assert fuzz(schema) > 200
