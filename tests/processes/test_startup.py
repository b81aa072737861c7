"""Each service says where it listens once it is up, the port the system chose for `--port 0`; an env
service pointed at an unreachable Redis exits non-zero with one line instead of coming up."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.processes


@pytest.mark.parametrize(
    ("module", "args", "name"),
    [
        ("services.envs", ["--envs", "counter"], "env service"),
        pytest.param("services.teacher", ["--model", "tiny"], "teacher", marks=pytest.mark.slow),  # ~7 s
        pytest.param(  # ~9 s; .ci/run runs it after the default suite
            "trainer.openai_server", ["--model", "tiny"], "completions server", marks=pytest.mark.slow
        ),
    ],
)
@pytest.mark.timeout(120)  # a service that never says where it listens would block the read
def test_a_service_on_port_0_prints_the_address_it_listens_on(module: str, args: list[str], name: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        prefix = f"{name} listening on http://127.0.0.1:"
        assert line.startswith(prefix) and int(line.removeprefix(prefix)) > 0, line
        assert httpx.get(f"{line.split()[-1]}/health", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_env_service_will_not_come_up_against_an_unreachable_redis() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.envs", "--envs", "counter", "--redis-url", "redis://127.0.0.1:1/0"],
        env={**os.environ, "SDAR_REDIS_WAIT_S": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert (
        out.stderr.strip().splitlines()[-1].startswith("python -m services.envs: error: the redis store is unreachable")
    )


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("services.teacher", []),
        ("trainer.openai_server", []),
        ("trainer.rollout", ["--env", "counter", "--groups", "1", "--group-size", "2"]),
    ],
)
def test_a_model_name_too_long_for_the_system_is_a_one_line_error(module: str, args: list[str]) -> None:
    name = "/tmp/" + "m" * 300  # ENAMETOOLONG from the file system, not a traceback
    out = subprocess.run(
        [sys.executable, "-m", module, *args, "--model", name], capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"python -m {module}: error: no model at") and "File name too long" in last, last
