"""Bad flags of the main job get a usage error and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--split", "test"], "unrecognized arguments: --split test"),
        (["--env-url", "http://127.0.0.1:1"], "cannot reach the env service at http://127.0.0.1:1"),
        (["--teacher-url", "http://127.0.0.1:1", "--env-url", "http://127.0.0.1:1"], "cannot reach"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--algorithm", "ppo"], "argument --algorithm: invalid choice: 'ppo'"),
        (["--steps", "-1"], "steps: Input should be greater than or equal to 1 (got -1)"),
        (["--group-size", "1"], "group_size: Input should be greater than or equal to 2 (got 1)"),
        (["--preset", "huge"], "unknown preset 'huge'; choose one of alfworld, webshop, searchqa, cpu-demo"),
        (["--set", "learner.lr"], "--set 'learner.lr': expected KEY=VALUE"),
        (["--set", "learner.lr=-1"], "learner.lr: Input should be greater than 0 (got -1)"),
        (["--set", "learner.bogus=1"], "learner.bogus: unknown key"),
        (["--set", "eval.every=often"], "eval.every: Input should be a valid integer"),
        (["--algorithm", "grpo", "--lam", "0.1"], "algorithm.lam: unknown key"),
        (["--model", "/nowhere/model"], "/nowhere/model"),
        (["--resume", "/tmp"], "--resume /tmp: not a run directory (no config.json)"),
    ],
)
def test_trainer_run_rejects_bad_flags(args: list[str], says: str) -> None:
    out = subprocess.run([sys.executable, "-m", "trainer.run", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "usage: python -m trainer.run" in out.stderr and "error:" in out.stderr
    error = out.stderr.strip().splitlines()[-1]
    assert says in error and error.startswith("python -m trainer.run: error:"), out.stderr


COMMANDS = [
    "services.envs",
    "services.teacher",
    "trainer.rollout",
    "trainer.openai_server",
    "trainer.run",
    "trainer.eval",
]


@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize("flag", ["--bogus", "--help"])
def test_every_command_answers_its_flags_before_importing_torch(module: str, flag: str) -> None:
    """A bad flag or `--help` is answered at once: argparse runs before torch and transformers load."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, flag], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == (2 if flag == "--bogus" else 0), out.stderr[-2000:]
    assert f"usage: python -m {module}" in (out.stderr if flag == "--bogus" else out.stdout)
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "transformers", "textworld"))
    assert heavy == [], f"{module} {flag} imported {heavy[:5]}"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "one of the arguments --checkpoint --model is required"),
        (["--model", "tiny", "--checkpoint", "/tmp"], "not allowed with argument"),
        (["--checkpoint", "/tmp"], "--checkpoint /tmp: neither a run directory nor a checkpoint"),
        (["--model", "/nowhere/model"], "/nowhere/model"),
        (["--model", "tiny", "--limit", "0"], "--limit must be at least 1, not 0"),
        (["--model", "tiny", "--temperature", "-1"], "--temperature must be in [0, 10], not -1.0"),
        (["--model", "tiny", "--env", "chess"], "argument --env: invalid choice: 'chess'"),
        (["--model", "tiny", "--env-url", "ftp://x"], "--env-url must be an http(s) URL"),
    ],
)
def test_trainer_eval_rejects_bad_flags(args: list[str], says: str) -> None:
    out = subprocess.run([sys.executable, "-m", "trainer.eval", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    error = out.stderr.strip().splitlines()[-1]
    assert says in error and error.startswith("python -m trainer.eval: error:"), out.stderr


def test_trainer_eval_of_a_run_with_no_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text("{}")
    out = subprocess.run(
        [sys.executable, "-m", "trainer.eval", "--checkpoint", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "the run has no checkpoint yet" in out.stderr, out.stderr


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    """The same command line with `--resume` is fine; a changed value is refused, naming the field."""
    (tmp_path / "config.json").write_text('{"seed": 3, "learner": {"lr": 0.001}}')
    for flags, says in (
        (["--lr", "1"], "learner.lr is 0.001 in"),
        (["--set", "seed=4"], "seed is 3 in"),
        (["--preset", "alfworld"], "--preset does not apply"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "trainer.run", "--resume", str(tmp_path), *flags],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2 and "--resume" in out.stderr and says in out.stderr, out.stderr


def test_list_presets_prints_each_with_its_settings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trainer.run", "--list-presets"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for name in ("alfworld", "webshop", "searchqa", "cpu-demo"):
        assert f"\n{name}:\n" in out.stdout
    assert '"kl_coef": 0.001' in out.stdout and '"mini_batch_size": 64' in out.stdout
