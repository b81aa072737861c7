"""`python -m services.launch` as a user runs it, from separate shells (processes): `up` starts the
compose file's services as processes and waits for their healthchecks, `status` and `down` work from
another process, `down` and Ctrl-C leave no process behind; and the whole stack of the repo's
compose file, with the teacher, trains SDAR on each of the three envs through `trainer.run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from services import launch
from shared.launch import free_port
from tests.processes.test_trainer_run import ARGS

pytestmark = pytest.mark.processes


def launcher(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.launch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def recorded(state: Path) -> list[dict[str, Any]]:
    processes: list[dict[str, Any]] = json.loads((state / "state.json").read_text())["processes"]
    return processes


def running(pid: int) -> bool:
    """A live process (a zombie has exited: only its parent has not collected it)."""
    stat = launch._stat(pid)
    return stat is not None and stat[0] != "Z"


def counter_stack(path: Path) -> tuple[Path, int, int]:
    """A compose file of Redis and two counter env replicas on free ports, as the repo's is written."""
    redis_port, env_port = free_port(), free_port()
    path.write_text(
        f"""
services:
  redis:
    image: redis:7.4-alpine
    command: ["redis-server", "--appendonly", "yes"]
    ports: ["127.0.0.1:${{TEST_REDIS_PORT:-{redis_port}}}:6379"]
    healthcheck: {{test: ["CMD", "redis-cli", "ping"], interval: 1s, retries: 5}}
  counter:
    build: .
    command: ["python", "-m", "services.envs", "--envs", "counter", "--host", "0.0.0.0", "--port", "8001"]
    environment:
      SDAR_REDIS_URL: redis://redis:6379/0
      SDAR_REDIS_PREFIX: "test:launch:"
    ports: ["127.0.0.1:{env_port}-{env_port + 1}:8001"]
    depends_on: {{redis: {{condition: service_healthy}}}}
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/health')"]
      interval: 1s
      retries: 30
"""
    )
    return path, redis_port, env_port


def test_up_status_and_down_from_other_processes_leave_nothing_behind(tmp_path: Path) -> None:
    compose_file, redis_port, env_port = counter_stack(tmp_path / "compose.yml")
    state = tmp_path / "state"
    flags = ["--compose-file", str(compose_file), "--state-dir", str(state)]
    up = launcher("up", "-d", "--scale", "counter=2", *flags)
    assert up.returncode == 0, up.stderr
    processes = recorded(state)
    try:
        assert [(p["service"], p["replica"]) for p in processes] == [("redis", 0), ("counter", 0), ("counter", 1)]
        assert all(running(p["pid"]) for p in processes)
        for port in (env_port, env_port + 1):  # both replicas answer, over the one Redis
            assert httpx.get(f"http://127.0.0.1:{port}/health").json()["envs"] == ["counter"]
        body = {"split": "train", "index": 0}
        episode = httpx.post(f"http://127.0.0.1:{env_port}/v1/envs/counter/episodes", json=body).json()
        served = httpx.get(f"http://127.0.0.1:{env_port + 1}/v1/episodes/{episode['episode_id']}")
        assert served.status_code == 200  # the other replica serves it: they share the launcher's Redis
        client = redis.Redis(port=redis_port)
        assert client.config_get("appendonly")["appendonly"] == "yes"  # the compose command's own arguments
        client.close()

        status = launcher("status", *flags)
        assert status.returncode == 0, status.stdout
        states = [line.split()[3] for line in status.stdout.splitlines()[1:]]
        assert states == ["healthy"] * 3 and f"http://127.0.0.1:{env_port + 1}" in status.stdout
        moved = launcher("up", "-d", *flags, env={"TEST_REDIS_PORT": str(free_port())})  # the file now says otherwise
        assert moved.returncode == 1 and "redis is up (pid" in moved.stderr and "with another command" in moved.stderr
        assert [p["pid"] for p in recorded(state)] == [p["pid"] for p in processes]  # nothing changed
        os.kill(processes[2]["pid"], signal.SIGKILL)  # a replica dies; up starts it again, and only it
        wait_for(lambda: not running(processes[2]["pid"]), "the replica's death")  # its port free again
        again = launcher("up", "-d", "--scale", "counter=2", *flags)
        assert again.returncode == 0, again.stderr
        assert "redis is up" in again.stdout and "counter is up" in again.stdout
        assert "starting counter-2" in again.stdout
        now = recorded(state)
        assert [p["pid"] for p in now[:2]] == [p["pid"] for p in processes[:2]] and now[2]["pid"] != processes[2]["pid"]
        assert httpx.get(f"http://127.0.0.1:{env_port + 1}/v1/episodes/{episode['episode_id']}").status_code == 200
        processes = now
    finally:
        down = launcher("down", *flags)
    assert down.returncode == 0 and down.stdout.count("stopped") == 3, down.stdout
    assert not any(running(p["pid"]) for p in processes)
    assert not (state / "state.json").exists()
    after = launcher("status", *flags)
    assert after.returncode == 1 and "no stack is up" in after.stdout


def test_ctrl_c_on_an_attached_up_stops_what_it_started(tmp_path: Path) -> None:
    compose_file, _, env_port = counter_stack(tmp_path / "compose.yml")
    state = tmp_path / "state"
    up = subprocess.Popen(
        [sys.executable, "-m", "services.launch", "up", "--compose-file", str(compose_file), "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "Ctrl-C stops" in line:
                break
        processes = recorded(state)
        assert len(processes) == 2 and all(running(p["pid"]) for p in processes)
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 130
        assert not any(running(p["pid"]) for p in processes)
        assert not (state / "state.json").exists()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{env_port}/health")
    finally:
        if up.poll() is None:
            up.kill()
        launcher("down", "--state-dir", str(state))  # what a failed check would leave


def test_a_stale_state_is_replaced_and_a_port_in_use_is_named(tmp_path: Path) -> None:
    compose_file, redis_port, _ = counter_stack(tmp_path / "compose.yml")
    state = tmp_path / "state"
    state.mkdir()
    dead = {"service": "counter", "replica": 0, "command": ["x"], "port": 1, "url": "http://x", "pid": 999999999}
    (state / "state.json").write_text(json.dumps({"processes": [dead]}))
    flags = ["--compose-file", str(compose_file), "--state-dir", str(state)]
    with __import__("socket").socket() as taken:  # something else holds Redis's port
        taken.bind(("127.0.0.1", redis_port))
        taken.listen()
        up = launcher("up", "-d", *flags)
    assert "a stale launcher state (no process left)" in up.stdout
    assert up.returncode == 1 and f"port {redis_port} (redis) is in use" in up.stderr
    assert not (state / "state.json").exists()  # nothing left started


@pytest.mark.slow  # ~2 min: the repo's stack, three trainer.run launches; .ci/run runs it after the default suite
def test_the_compose_stack_trains_sdar_on_every_env_with_the_teacher(tmp_path: Path) -> None:
    """The repo's `docker-compose.yml` brought up by the launcher (the teacher on the tiny model, Redis
    on a free port), `python -m trainer.run` with no URLs finding it, two SDAR steps on each env with
    the teacher reloading the policy after each, then `down` with no process left."""
    env = {"SDAR_TEACHER_MODEL": "tiny", "SDAR_REDIS_PORT": str(free_port())}
    state = tmp_path / "state"
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SDAR_REDIS_URL", "SDAR_COMPOSE_FILE")}
    up = launcher("up", "-d", "--state-dir", str(state), env=env)
    assert up.returncode == 0, up.stderr
    processes = recorded(state)
    try:
        assert [p["service"] for p in processes] == ["redis", "alfworld", "webshop", "searchqa", "teacher"]
        for name in ("alfworld", "webshop", "searchqa"):
            args = list(ARGS)
            args[args.index("--env") + 1], args[args.index("--algorithm") + 1] = name, "sdar"
            out = subprocess.run(
                [sys.executable, "-m", "trainer.run", *args, "--runs-dir", str(tmp_path / name)],
                capture_output=True,
                text=True,
                timeout=600,
                env={**clean, **env},
            )
            assert out.returncode == 0, out.stderr[-3000:]
            assert "using the running stack" in out.stdout and "starting the env service" not in out.stdout
            (run,) = (tmp_path / name).iterdir()
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            assert [x["step"] for x in lines] == [1, 2]
            assert all("sdar/gate_mean" in x and x["training/groups"] == 2 for x in lines)
            assert (run / "checkpoints" / "step-000002" / "model.safetensors").is_file()
            policy = httpx.get("http://127.0.0.1:8002/v1/policy").json()  # the teacher reloaded each step
            assert policy["path"] == str((run / "checkpoints" / "step-000002").resolve())
            prefix = json.loads((run / "config.json").read_text())["redis_prefix"]
            client = redis.Redis(port=int(env["SDAR_REDIS_PORT"]))
            assert client.exists(f"{prefix}groups")  # the run's buffer lived in the stack's Redis
            client.close()
    finally:
        down = launcher("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert not any(running(p["pid"]) for p in processes)


def wait_for(condition: Any, what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow  # ~2 min: a stack and a run with four faults; .ci/run runs it after the default suite
def test_a_run_on_the_stack_goes_through_every_fault_and_trains_each_group_once(tmp_path: Path) -> None:
    """With the stack up (Redis, two WebShop replicas, the teacher), a six-step SDAR run goes through:
    a replica SIGKILLed mid-rollout and started again, the teacher SIGKILLed as a step's scoring
    begins and started again, the trainer SIGKILLed between steps and resumed, and Redis stopped and
    started again on its append-only file. Every step is logged once, every group written to Redis is
    trained exactly once, no episode faulted, and nothing is left on the buffer."""
    from tests.conftest import metric

    redis_port = free_port()
    env = {"SDAR_TEACHER_MODEL": "tiny", "SDAR_REDIS_PORT": str(redis_port)}
    state = tmp_path / "state"
    flags = ["--state-dir", str(state), "--scale", "webshop=2"]
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SDAR_REDIS_URL", "SDAR_COMPOSE_FILE")}
    runs = tmp_path / "runs"
    up = launcher("up", "-d", "--only", "webshop", "teacher", *flags, env=env)
    assert up.returncode == 0, up.stderr

    def trainer(*args: str) -> subprocess.Popen[str]:
        log = open(tmp_path / f"trainer-{len(list(tmp_path.glob('trainer-*')))}.log", "w")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "trainer.run", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**clean, **env},
        )

    def by(service: str, replica: int = 0) -> dict[str, Any]:
        return next(p for p in recorded(state) if (p["service"], p["replica"]) == (service, replica))

    def logged() -> list[dict[str, Any]]:
        found = list(runs.glob("*/metrics.jsonl"))
        return [json.loads(x) for x in found[0].read_text().splitlines()] if found else []

    try:
        args = list(ARGS)
        args[args.index("--env") + 1], args[args.index("--algorithm") + 1] = "webshop", "sdar"
        args[args.index("--steps") + 1] = "6"
        run = trainer(*args, "--concurrency", "2", "--runs-dir", str(runs))
        second = f"http://127.0.0.1:{by('webshop', 1)['port']}"

        # 1. a replica dies mid-rollout; the client fails over to the other, and the launcher starts it again
        wait_for(lambda: metric(second, "sdar_env_episode_events_total", env="webshop", event="step") >= 3, "steps")
        os.kill(by("webshop", 1)["pid"], signal.SIGKILL)
        assert launcher("up", "-d", "--only", "webshop", *flags, env=env).returncode == 0

        # 2. the teacher dies as a step's scoring begins; the trainer's client retries, then republishes
        scored = metric("http://127.0.0.1:8002", "sdar_teacher_requests_total", route="/v1/score", status="200")
        wait_for(
            lambda: (
                metric("http://127.0.0.1:8002", "sdar_teacher_requests_total", route="/v1/score", status="200") > scored
            ),
            "the teacher's scoring",
        )
        os.kill(by("teacher")["pid"], signal.SIGKILL)
        assert launcher("up", "-d", "--only", "teacher", *flags, env=env).returncode == 0

        # 3. the trainer is SIGKILLed between two steps, and resumed
        wait_for(lambda: len(logged()) >= 3 or run.poll() is not None, "three steps")
        run.kill()
        run.wait()
        (directory,) = runs.iterdir()
        resumed = trainer("--resume", str(directory))

        # 4. Redis stops (its append-only file written) and starts again under the resumed run
        wait_for(lambda: len(logged()) >= 4 or resumed.poll() is not None, "a step of the resumed run")
        assert launcher("down", "--only", "redis", "--state-dir", str(state)).returncode == 0
        assert launcher("up", "-d", "--only", "redis", *flags, env=env).returncode == 0
        assert resumed.wait(timeout=600) == 0, (tmp_path / "trainer-1.log").read_text()[-3000:]
        prefix = json.loads((directory / "config.json").read_text())["redis_prefix"]
        client = redis.Redis(port=redis_port)
        written = {k.decode().removeprefix(f"{prefix}put:") for k in client.scan_iter(f"{prefix}put:*")}
        left, dead = client.xlen(f"{prefix}groups"), client.exists(f"{prefix}dead")
        client.close()
    finally:
        for child in (run, locals().get("resumed")):
            if child is not None and child.poll() is None:
                child.kill()
        down = launcher("down", "--state-dir", str(state))
    assert down.returncode == 0

    lines = logged()
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]  # each step once
    trained = [g for x in lines for g in x["groups"]]
    assert len(trained) == len(set(trained)) == 12  # no group trained twice
    assert written == set(trained)  # every group written to Redis was trained: none lost
    assert left == 0 and not dead  # nothing left on the buffer, nothing dead-lettered
    assert all(x["training/faulted_episodes"] == 0 and x["training/groups"] == 2 for x in lines)
