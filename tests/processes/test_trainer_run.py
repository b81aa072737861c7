"""`python -m trainer.run` as a process: a run SIGKILLed in the middle of a step and resumed ends with
the weights of the same run uninterrupted, and Redis shows no group lost or trained twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from safetensors.torch import load_file

pytestmark = pytest.mark.processes

ARGS = [
    *("--env", "counter", "--algorithm", "grpo", "--model", "tiny", "--steps", "2", "--groups", "2"),
    *("--group-size", "4", "--max-turns", "3", "--max-new-tokens", "8", "--eval-tasks", "0"),
    *("--concurrency", "1", "--lr", "1e-3", "--autocast", "none", "--micro-batch-tokens", "64"),
]


def command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "trainer.run", *ARGS, *extra]


def run_dir(parent: Path) -> Path:
    (only,) = [p for p in parent.iterdir() if p.is_dir()]
    return only


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def gone(pids: list[int], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() and "zombie" not in status(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def weights(run: Path, step: int) -> dict[str, object]:
    return load_file(run / "checkpoints" / f"step-{step:06d}" / "model.safetensors")


@pytest.mark.slow  # ~30 s: three trainer.run launches; run by .ci/run after the default suite
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path, redis_base_url: str) -> None:
    store = redis.Redis.from_url(redis_base_url)
    prefixes = []
    try:
        done = subprocess.run(
            command("--runs-dir", str(tmp_path / "a"), "--redis-url", redis_base_url),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        a = run_dir(tmp_path / "a")
        prefixes.append(json.loads((a / "config.json").read_text())["redis_prefix"])

        killed = subprocess.Popen(
            command("--runs-dir", str(tmp_path / "b"), "--redis-url", redis_base_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert killed.stdout is not None
        for line in killed.stdout:
            if line.startswith("step 2: learning"):
                started = children(killed.pid)  # the env service it started
                killed.send_signal(signal.SIGKILL)  # in the middle of step 2: its groups taken, not trained
                break
        killed.wait(timeout=60)
        assert started and gone(started), "a SIGKILLed run left its env service running"
        b = run_dir(tmp_path / "b")
        prefix = json.loads((b / "config.json").read_text())["redis_prefix"]
        prefixes.append(prefix)
        assert killed.returncode == -signal.SIGKILL
        assert [p.name for p in (b / "checkpoints").iterdir() if p.name.startswith("step-")] == ["step-000001"]
        assert store.xpending(f"{prefix}groups", "learners")["pending"] == 2  # held by the dead learner

        resumed = subprocess.run(
            command("--resume", str(b), "--redis-url", redis_base_url), capture_output=True, text=True, timeout=300
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming from" in resumed.stdout

        for name, tensor in weights(a, 2).items():
            assert (weights(b, 2)[name] - tensor).abs().max() < 1e-5, name  # type: ignore[operator]
        steps = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in steps] == [1, 2]
        trained = [g for r in steps for g in r["groups"]]
        assert len(trained) == len(set(trained)) == 4  # every group trained once
        assert store.xlen(f"{prefix}groups") == 0 and store.xpending(f"{prefix}groups", "learners")["pending"] == 0
        assert store.xlen(f"{prefix}dead") == 0
    finally:
        for prefix in prefixes:
            for key in store.scan_iter(f"{prefix}*"):
                store.delete(key)
        store.close()


@pytest.mark.slow  # ~25 s: two trainer.run launches; run by .ci/run after the default suite
def test_an_asynchronous_run_killed_and_resumed_trains_every_group_once_within_its_staleness(
    tmp_path: Path, redis_base_url: str
) -> None:
    """`--max-staleness 1`: round k + 1 is played while step k trains, so step 2 on trains samples one
    version old, weighted by truncated IS; a SIGKILL with rounds made ahead loses and repeats nothing."""
    store = redis.Redis.from_url(redis_base_url)
    prefix = ""
    try:
        args = command("--runs-dir", str(tmp_path), "--redis-url", redis_base_url, "--max-staleness", "1")
        killed = subprocess.Popen([*args, "--steps", "4"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert killed.stdout is not None
        for line in killed.stdout:
            if line.startswith("step 3: learning"):
                killed.send_signal(signal.SIGKILL)
                break
        killed.wait(timeout=60)
        assert killed.returncode == -signal.SIGKILL
        run = run_dir(tmp_path)
        config = json.loads((run / "config.json").read_text())
        prefix = config["redis_prefix"]
        assert config["max_staleness"] == 1
        resumed = subprocess.run(
            command("--resume", str(run), "--redis-url", redis_base_url, "--steps", "4"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming from" in resumed.stdout
        steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in steps] == [1, 2, 3, 4]
        trained = [g for r in steps for g in r["groups"]]
        assert len(trained) == len(set(trained)) == 8  # every group trained once
        assert all(r["off_policy/staleness_max"] <= 1 for r in steps)
        assert steps[0]["off_policy/staleness_max"] == 0  # the first round: nothing older exists
        assert steps[1]["off_policy/stale_sample_ratio"] > 0  # round 2 began under policy 0, trained at 1
        assert "off_policy/is_weight_mean" in steps[1]
        assert store.xlen(f"{prefix}groups") == 0 and store.xpending(f"{prefix}groups", "learners")["pending"] == 0
    finally:
        if prefix:
            for key in store.scan_iter(f"{prefix}*"):
                store.delete(key)
        store.close()
