"""On a CUDA host (`pytest -m gpu`): the learner on a GPU makes the update it makes on the CPU, FSDP
over NCCL on two GPUs makes one process's, and the main job trains on a GPU (its rollouts draw other
random numbers there, so it is not compared with a CPU run). Skipped where there is no GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from tests.processes.test_data_parallel import alone, same_weights, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
]


def test_the_learner_on_a_gpu_makes_the_cpu_update(tmp_path: Path) -> None:
    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    gpu.mkdir(), cpu.mkdir()
    alone(gpu, device="cuda")
    alone(cpu)
    # another device sums in another order: float32 rounding, which Adam's first steps magnify a little
    same_weights(torch.load(cpu / "weights-1-replicate-0.pt"), torch.load(gpu / "weights-1-replicate-0.pt"), 1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP over NCCL needs two GPUs")
@pytest.mark.parametrize("sharding", ["replicate", "fsdp"])
def test_two_gpus_make_the_update_of_one_process(tmp_path: Path, sharding: str) -> None:
    mp.spawn(train, args=(2, tmp_path, sharding, (0, 1), None, None, "cuda"), nprocs=2, join=True)
    alone(tmp_path)
    one: dict[str, Any] = torch.load(tmp_path / "weights-1-replicate-0.pt")
    same_weights(one, torch.load(tmp_path / f"weights-2-{sharding}-0.pt"), 1e-4)


def test_the_main_job_trains_on_a_gpu(tmp_path: Path, redis_base_url: str) -> None:
    from tests.processes.test_trainer_run import ARGS

    flags = ["--steps", "1", "--runs-dir", str(tmp_path), "--redis-url", redis_base_url, "--device", "cuda"]
    out = subprocess.run(
        [sys.executable, "-m", "trainer.run", *ARGS, *flags], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((run / "config.json").read_text())["device"] == "cuda"
    assert (run / "checkpoints" / "step-000001" / "model.safetensors").is_file()
