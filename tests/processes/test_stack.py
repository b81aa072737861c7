"""`python -m trainer.run` with no URLs uses a running stack found at its compose file's published
addresses (here a compose file of the test's own, on free ports), and says so in one line; without one
it starts its own services, as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from shared import compose
from shared.launch import ServiceProcess, free_port
from shared.redis import EmbeddedRedis
from tests.conftest import metric
from tests.processes.test_trainer_run import ARGS
from trainer.stack import running_stack

pytestmark = pytest.mark.processes


def compose_file(path: Path, env_port: int, redis_port: int) -> Path:
    path.write_text(
        "services:\n"
        "  redis:\n    image: redis:7.4-alpine\n"
        f'    ports: ["127.0.0.1:${{SDAR_TEST_UNSET_PORT:-{redis_port}}}:6379"]\n'
        "  counter:\n    image: sdar-stack:latest\n"
        f'    ports: ["127.0.0.1:{env_port}-{env_port + 3}:8001"]\n'
        "  teacher:\n    image: sdar-stack:latest\n"
        f'    ports: ["127.0.0.1:{free_port()}:8002"]\n'
    )
    return path


def test_the_compose_files_addresses_are_read_and_a_missing_stack_is_said_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_port, redis_port = free_port(), free_port()
    path = compose_file(tmp_path / "compose.yml", env_port, redis_port)
    found = compose.addresses(compose.load(path))
    assert found["counter"] == [f"http://127.0.0.1:{env_port + i}" for i in range(4)]
    assert found["redis"] == [f"redis://127.0.0.1:{redis_port}/0"]
    monkeypatch.setenv("SDAR_COMPOSE_FILE", str(path))
    stack, why = running_stack("counter", "tiny", needs_teacher=False)
    assert stack is None and why == f"no counter env service at http://127.0.0.1:{env_port}"
    repo = compose.addresses(compose.load(compose.COMPOSE_FILE))  # the real file's
    assert repo["alfworld"][0] == "http://127.0.0.1:8101" and repo["teacher"] == ["http://127.0.0.1:8002"]


@pytest.mark.slow  # ~17 s: a trainer.run launch; run by .ci/run after the default suite
def test_the_main_job_with_no_urls_uses_a_running_stack(tmp_path: Path) -> None:
    store = EmbeddedRedis()
    try:
        with ServiceProcess("services.envs", ["--envs", "counter", "--redis-url", store.url]) as env:
            path = compose_file(tmp_path / "compose.yml", env.port, store.port)
            child = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SDAR_REDIS_URL")}
            out = subprocess.run(
                [sys.executable, "-m", "trainer.run", *ARGS, "--runs-dir", str(tmp_path / "runs")],
                env={**child, "SDAR_COMPOSE_FILE": str(path)},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert out.returncode == 0, out.stderr[-3000:]
            line = f"using the running stack: env service {env.url}, Redis {store.url}"
            assert line in out.stdout and "starting the env service" not in out.stdout
            assert metric(env.url, "sdar_env_episode_events_total", env="counter", event="step") > 0
        (run,) = (tmp_path / "runs").iterdir()
        prefix = json.loads((run / "config.json").read_text())["redis_prefix"]
        client = redis.Redis.from_url(store.url)
        assert client.exists(f"{prefix}groups")  # the run's buffer lived in the stack's Redis
        client.close()
    finally:
        store.stop()
