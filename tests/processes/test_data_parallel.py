"""Data-parallel learning on CPU (gloo): two processes, each training its share of every mini-batch,
make the same update as one process on the whole batch."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shared.models import load_model
from tests.unit.test_learner import varied_groups
from trainer.algorithms import make
from trainer.learner import Learner, LearnerConfig

pytestmark = pytest.mark.processes

ALGORITHM = {"type": "grpo", "kl_coef": 0.01}
CONFIG = {"lr": 1e-2, "mini_batch_size": 7, "micro_batch_tokens": 48, "autocast": "none"}


def train(rank: int, world: int, out: Path) -> None:
    """Two steps of the learner on this process's share; the weights and metrics written out."""
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{out / 'rendezvous'}", rank=rank, world_size=world)
    tiny = load_model("tiny")
    model = copy.deepcopy(tiny.model)
    if rank == 1:  # another start (a random LoRA init would be one): the learner takes the first process's
        with torch.no_grad():
            for q in model.parameters():
                q.add_(torch.randn_like(q))
    learner = Learner(model, make(ALGORITHM), LearnerConfig(**CONFIG), ref_model=tiny.model)
    metrics = [learner.step(varied_groups(seed=step), step) for step in range(2)]
    torch.save(learner.model.state_dict(), out / f"weights-{world}-{rank}.pt")
    (out / f"metrics-{world}-{rank}.json").write_text(json.dumps(metrics))
    if world > 1:
        dist.destroy_process_group()


def test_two_processes_make_the_update_of_one(tmp_path: Path) -> None:
    mp.spawn(train, args=(2, tmp_path), nprocs=2, join=True)
    threads = torch.get_num_threads()
    try:
        train(0, 1, tmp_path)
    finally:
        torch.set_num_threads(threads)  # the rest of the suite runs at its own
    one: dict[str, Any] = torch.load(tmp_path / "weights-1-0.pt")
    for rank in (0, 1):
        two: dict[str, Any] = torch.load(tmp_path / f"weights-2-{rank}.pt")
        for name, value in one.items():
            assert float((two[name] - value).norm() / value.norm()) < 1e-5, name
    base = load_model("tiny").model.state_dict()
    assert any(not torch.allclose(one[k], base[k]) for k in one)  # it trained
    single = json.loads((tmp_path / "metrics-1-0.json").read_text())
    for rank in (0, 1):
        double = json.loads((tmp_path / f"metrics-2-{rank}.json").read_text())
        for a, b in zip(single, double, strict=True):
            for key in (
                "actor/pg_loss",
                "actor/kl_loss",
                "actor/entropy",
                "actor/grad_norm",
                "critic/score/mean",
                "training/rollout_mismatch_kl",
                "training/tokens",
                "actor/pg_clipfrac",
            ):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key


@pytest.mark.slow  # ~30 s: three trainer.run launches; run by .ci/run after the default suite
def test_the_main_job_under_torchrun_trains_as_one_process(tmp_path: Path, redis_base_url: str) -> None:
    """`torchrun --nproc-per-node 2 -m trainer.run`: the first process rolls out and checkpoints, both
    learn; with rollouts reproducible (`--concurrency 1`) the weights equal those of one process."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from tests.processes.test_trainer_run import ARGS

    def run(directory: Path, *launcher: str, resume: list[str] | None = None) -> Path:
        flags = ["--mini-batch-size", "5", "--steps", "1", "--runs-dir", str(directory), "--redis-url", redis_base_url]
        out = subprocess.run(
            [sys.executable, *launcher, "-m", "trainer.run", *(resume or [*ARGS, *flags])],
            capture_output=True,
            text=True,
            timeout=300,
            # torchrun gives each process one thread; the sampled tokens depend on the float sums' order
            env=os.environ | {"OMP_NUM_THREADS": "1"},
        )
        assert out.returncode == 0, out.stderr[-3000:]
        (only,) = [p for p in directory.iterdir() if p.is_dir()]
        return only

    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")

    two = run(tmp_path / "two", *torchrun)
    one = run(tmp_path / "one")
    a = load_file(one / "checkpoints" / "step-000001" / "model.safetensors")
    b = load_file(two / "checkpoints" / "step-000001" / "model.safetensors")
    for name, value in a.items():
        assert float((b[name] - value).norm() / value.norm()) < 1e-5, name
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # one writer: the first process

    # a checkpoint is the whole state: a run of one process goes on under two
    run(tmp_path / "one", *torchrun, resume=["--resume", str(one), "--steps", "2", "--redis-url", redis_base_url])
    assert [json.loads(line)["step"] for line in (one / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (one / "checkpoints" / "step-000002" / "model.safetensors").is_file()
