"""Faults as processes (issue 15 item 12): Redis restarted under a rollout, and a teacher killed and
restarted under a waiting client."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from shared.launch import ServiceProcess, free_port
from shared.model_specs import chat_prompt_ids
from shared.models import load_model
from shared.redis import EmbeddedRedis
from tests.conftest import metric
from tests.service.test_teacher import save_tiny
from trainer.teacher import HTTPTeacher, Query

STEPS = "sdar_env_episode_events_total"
pytestmark = [pytest.mark.processes, pytest.mark.slow]  # ~20 s: run by .ci/run after the default suite


def test_a_rollout_goes_through_a_redis_restart_and_loses_nothing(tmp_path: Path) -> None:
    """Redis (append-only file on) is stopped under a rollout and started again on the same port and
    file: the env service answers 503 meanwhile, the clients retry, and every episode and group
    arrives: none faulted, none lost."""
    data = tmp_path / "redis"
    data.mkdir()
    store = EmbeddedRedis(append_only_dir=str(data))
    port = store.port
    try:
        env_args = ["--envs", "counter", "--redis-url", store.url, "--live-cache-size", "1"]
        with ServiceProcess("services.envs", env_args) as env:
            args = ["--env", "counter", "--groups", "4", "--group-size", "4", "--max-steps", "8"]
            args += ["--max-new-tokens", "8", "--model", "tiny", "--env-url", env.url, "--redis-url", store.url]
            args += ["--redis-prefix", "faults:"]
            rollout = subprocess.Popen(
                [sys.executable, "-m", "trainer.rollout", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while (
                metric(env.url, STEPS, env="counter", event="step") < 20
                and rollout.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert rollout.poll() is None, "the rollout ended before Redis could be restarted"
            store.stop()
            time.sleep(1.5)  # the rollout runs into the outage
            store = EmbeddedRedis(port, append_only_dir=str(data))
            out, err = rollout.communicate(timeout=240)
            assert rollout.returncode == 0, err[-3000:]
            assert "groups 4, episodes 16" in out and ", 0 fault)" in out, out
            assert "4 of 4 groups written" in out, out
            assert metric(env.url, "sdar_env_requests_total", status="503") > 0  # seen, answered as retryable
            client = redis.Redis.from_url(store.url)
            assert client.xlen("faults:groups") == 4
            client.close()
    finally:
        store.stop()


def test_a_teacher_killed_and_restarted_under_a_waiting_client_gives_the_same_scores(tmp_path: Path) -> None:
    """The client retries through the outage; the teacher comes back on its base weights (version 0),
    and the client gives it the checkpoint it had published (version 3) before it scores."""
    loaded = load_model("tiny")
    checkpoint = save_tiny(tmp_path / "step-3", seed=3)  # other weights than the base the teacher restarts on
    prompt = chat_prompt_ids(loaded.tokenizer, [{"role": "user", "content": "Your task is to: heat some egg."}])
    queries = [
        Query(prompt, [27, 4113, 29, 1257], "alfworld", "heat some egg", {"task_type": "pick_heat_then_place_in_recep"})
    ]
    port = free_port()
    # the first teacher holds each batch 1 s, so the client's request is in flight when it is killed
    first = ServiceProcess("services.teacher", ["--model", "tiny", "--batch-wait-ms", "1000"], port=port)
    client = HTTPTeacher(first.url, backoff_s=0.5, retries=8)
    client.publish(checkpoint, 3)
    reference = client.logprobs(queries)
    got: list[list[list[float]]] = []
    waiting = threading.Thread(target=lambda: got.append(client.logprobs(queries)))
    waiting.start()
    time.sleep(0.3)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    time.sleep(1.0)
    with ServiceProcess("services.teacher", ["--model", "tiny"], port=port) as second:
        waiting.join(timeout=120)
        assert not waiting.is_alive()
        assert httpx.get(f"{second.url}/v1/policy").json()["policy_version"] == 3  # published again
    client.close()
    (again,) = got
    for a, b in zip(again, reference, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
