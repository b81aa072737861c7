"""Bad flags of the main job and the evaluation command get a usage error and exit 2. Most cases
call the parser in this process (what a subprocess adds is torch's import, seconds each); one case
of each command runs it as a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--split", "test"], "unrecognized arguments: --split test"),
        (["--env-url", "http://127.0.0.1:1"], "cannot reach the env service at http://127.0.0.1:1"),
        (["--teacher-url", "http://127.0.0.1:1", "--env-url", "http://127.0.0.1:1"], "cannot reach"),
        (["--openai-url", "127.0.0.1:8003"], "--openai-url must be an http(s) URL"),
        (["--weight-sync", "lora"], "--weight-sync lora needs --openai-url and a LoRA run (--lora-rank)"),
        (["--weight-sync", "nccl"], "argument --weight-sync: invalid choice: 'nccl'"),
        (["--openai-url", "http://127.0.0.1:1"], "cannot reach the completions server at http://127.0.0.1:1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--algorithm", "ppo"], "argument --algorithm: invalid choice: 'ppo'"),
        (["--steps", "-1"], "steps: Input should be greater than or equal to 1 (got -1)"),
        (["--group-size", "1"], "group_size: Input should be greater than or equal to 2 (got 1)"),
        (["--max-staleness", "-1"], "max_staleness: Input should be greater than or equal to 0 (got -1)"),
        (["--set", "learner.is_cap=0"], "learner.is_cap: Input should be greater than 0 (got 0)"),
        (
            ["--set", "learner.is_correction=mask"],
            "learner.is_correction: Input should be 'truncate' or 'none' (got 'mask')",
        ),
        (["--device", "gpu"], "device: String should match pattern '^(cpu|cuda(:[0-9]+)?)$' (got 'gpu')"),
        (["--set", "learner.sharding=zero"], "learner.sharding: Input should be 'replicate' or 'fsdp' (got 'zero')"),
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
def test_trainer_run_rejects_bad_flags(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.run import parse_args

    refused(parse_args, "trainer.run", args, says, capsys)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_device_where_there_is_none_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.run import parse_args

    says = "device cuda:1: this machine has no CUDA device (torch.cuda.is_available() is False)"
    refused(parse_args, "trainer.run", ["--device", "cuda:1"], says, capsys)


def refused(parse: Any, module: str, args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2, err
    assert f"usage: python -m {module}" in err and "error:" in err
    error = err.strip().splitlines()[-1]
    assert says in error and error.startswith(f"python -m {module}: error:"), err


@pytest.mark.parametrize(
    ("module", "args", "says"),
    [
        ("trainer.run", ["--set", "learner.lr=-1"], "learner.lr: Input should be greater than 0 (got -1)"),
        ("trainer.eval", ["--checkpoint", "/tmp"], "--checkpoint /tmp: neither a run directory nor a checkpoint"),
    ],
)
def test_the_commands_as_processes_exit_2_with_one_line(module: str, args: list[str], says: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    error = out.stderr.strip().splitlines()[-1]
    assert says in error and error.startswith(f"python -m {module}: error:"), out.stderr


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
def test_trainer_eval_rejects_bad_flags(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.eval import parse_args

    refused(parse_args, "trainer.eval", args, says, capsys)


def test_trainer_eval_of_a_run_with_no_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.eval import parse_args

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text("{}")
    refused(parse_args, "trainer.eval", ["--checkpoint", str(tmp_path)], "the run has no checkpoint yet", capsys)


def test_resume_refuses_a_changed_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same command line with `--resume` is fine; a changed value is refused, naming the field."""
    from trainer.run import parse_args

    (tmp_path / "config.json").write_text('{"seed": 3, "learner": {"lr": 0.001}}')
    for flags, says in (
        (["--lr", "1"], "learner.lr is 0.001 in"),
        (["--set", "seed=4"], "seed is 3 in"),
        (["--preset", "alfworld"], "--preset does not apply"),
    ):
        refused(parse_args, "trainer.run", ["--resume", str(tmp_path), *flags], says, capsys)
    assert parse_args(["--resume", str(tmp_path), "--lr", "0.001", "--seed", "3", "--steps", "9"]).steps == 9


def test_list_presets_prints_each_with_its_settings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trainer.run", "--list-presets"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for name in ("alfworld", "webshop", "searchqa", "cpu-demo"):
        assert f"\n{name}:\n" in out.stdout
    assert '"kl_coef": 0.001' in out.stdout and '"mini_batch_size": 64' in out.stdout
