"""Bad flags of the main job get a usage error and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--split", "test"], "unrecognized arguments: --split test"),
        (["--env-url", "http://127.0.0.1:1"], "cannot reach the env service at http://127.0.0.1:1"),
        (["--teacher-url", "http://127.0.0.1:1", "--env-url", "http://127.0.0.1:1"], "cannot reach"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--algorithm", "ppo"], "argument --algorithm: invalid choice: 'ppo'"),
        (["--steps", "-1"], "--steps must be at least 1, not -1"),
        (["--group-size", "1"], "--group-size must be at least 2"),
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


COMMANDS = ["services.envs", "services.teacher", "trainer.rollout", "trainer.openai_server", "trainer.run"]


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
