"""A run as a researcher watches it: evaluation at an interval and at the end, the plots, TensorBoard
events and the summary in the run directory, a LoRA run's adapter checkpoints; then `python -m
trainer.eval` on the run, as processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.processes

TINY = ("--max-turns", "3", "--max-new-tokens", "8", "--concurrency", "4")


@pytest.mark.slow  # ~15 s: a trainer.run launch and a trainer.eval one; run by .ci/run after the default suite
def test_a_lora_run_directory_then_trainer_eval_on_it(tmp_path: Path, redis_base_url: str) -> None:
    """One run for both (each trainer.run process costs ~10 s of imports): the run directory of a LoRA
    run, whose checkpoints hold the adapter (full checkpoints load through the same `load_model` on
    every resume: test_trainer_run.py)."""
    run = subprocess.run(
        [
            *(sys.executable, "-m", "trainer.run", "--env", "counter", "--algorithm", "grpo", "--model", "tiny"),
            *("--lora-rank", "4", "--lr", "1e-2", "--mini-batch-size", "4", "--set", "lora.save_merged=true"),
            *("--steps", "2", "--eval-every", "1", "--eval-tasks", "3", "--autocast", "none", *TINY),
            *("--runs-dir", str(tmp_path), "--redis-url", redis_base_url),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"env": "counter"' in run.stdout  # the config, printed at the start
    (directory,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], "eval" in r) for r in lines] == [(1, False), (1, True), (2, False), (2, True)]
    assert all(r["val/episodes"] == 3 and "val/avg" in r for r in lines if "eval" in r)
    assert lines[0]["actor/kl_loss"] > 0  # the adapter moved away from the base in the step's mini-batches
    plots = {p.name for p in (directory / "plots").iterdir()}
    assert {"training.png", "validation.png", "invalid.png", "response_length.png"} <= plots
    events = EventAccumulator(str(directory / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("critic/score/mean")] == [1, 2]
    assert [e.step for e in events.Scalars("val/success_rate")] == [1, 2]
    readme = (directory / "README.md").read_text()
    assert readme.startswith(f"# Run {directory.name}") and "## Evaluation at step 2 (test, 3 episodes)" in readme

    config = json.loads((directory / "config.json").read_text())
    assert config["lora"]["rank"] == 4 and config["algorithm"]["kl_coef"] == 0.01  # the reference: adapter off
    step = directory / "checkpoints" / "step-000002"
    adapter = json.loads((step / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == "tiny"
    assert not (step / "model.safetensors").exists() and (step / "merged" / "model.safetensors").is_file()

    out = tmp_path / "eval.json"
    evaluated = subprocess.run(  # the adapter over its base (the merged model loads as any: test_lora.py)
        [sys.executable, "-m", "trainer.eval", "--checkpoint", str(directory), "--limit", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "2 episodes, 0 faulted" in evaluated.stdout and "| Avg | Invalid | Length |" in evaluated.stdout
    record = json.loads(out.read_text())
    assert record["model"].endswith("step-000002") and record["env"] == "counter" and record["eval"] == "test"
    assert record["val/episodes"] == 2 and record["temperature"] == 0.4
