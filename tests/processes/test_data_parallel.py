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


def train(
    rank: int,
    world: int,
    out: Path,
    sharding: str = "replicate",
    steps: tuple[int, ...] = (0, 1),
    start: Path | None = None,
    save: Path | None = None,
    device: str = "cpu",
) -> None:
    """`steps` of the learner on this process's share (from the weights and optimizer state under
    `start`, when given), on `device` (`cuda`: the process's own GPU, over NCCL); the whole weights
    and the metrics written out, and the whole state under `save`."""
    torch.set_num_threads(1)
    where = torch.device(device, rank) if device == "cuda" else torch.device(device)
    if world > 1:
        if device == "cuda":
            torch.cuda.set_device(where)
        backend = "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo"
        rendezvous = f"file://{out / f'rendezvous-{sharding}'}"
        dist.init_process_group(backend, init_method=rendezvous, rank=rank, world_size=world)
    tiny = load_model("tiny")
    model = copy.deepcopy(tiny.model).to(where)
    if start is not None:
        model.load_state_dict(torch.load(start / "weights.pt"))
    elif rank == 1:  # another start (a random LoRA init would be one): the learner takes the first process's
        with torch.no_grad():
            for q in model.parameters():
                q.add_(torch.randn_like(q))
    config = LearnerConfig(**CONFIG, sharding=sharding)
    learner = Learner(model, make(ALGORITHM), config, ref_model=copy.deepcopy(tiny.model).to(where))
    if start is not None:
        learner.load_trainer_state(torch.load(start / "trainer_state.pt"))
    if sharding == "fsdp":  # each process holds about half of every layer's weights
        whole = sum(q.numel() for q in tiny.model.parameters())
        held = sum(q.to_local().numel() for q in learner.model.parameters())
        assert 0.4 * whole < held < 0.6 * whole
    metrics = [learner.step(varied_groups(seed=step), step) for step in steps]
    state = learner.trainer_state()  # every process takes part under FSDP; the first holds it whole
    tag = f"{world}-{sharding}-{rank}"
    assert (learner.policy is None) == (rank > 0 and sharding == "fsdp")  # FSDP: only the first holds it whole
    if learner.policy is not None:
        torch.save({k: v.cpu() for k, v in learner.policy.state_dict().items()}, out / f"weights-{tag}.pt")
    if save is not None and rank == 0:
        save.mkdir(exist_ok=True)
        torch.save(learner.policy.state_dict(), save / "weights.pt")
        torch.save(state, save / "trainer_state.pt")
    (out / f"metrics-{tag}.json").write_text(json.dumps(metrics))
    (out / f"empty-{tag}.json").write_text(json.dumps(learner.empty_passes))
    if world > 1:
        dist.destroy_process_group()


def alone(out: Path, **kwargs: Any) -> None:
    threads = torch.get_num_threads()
    try:
        train(0, 1, out, **kwargs)
    finally:
        torch.set_num_threads(threads)  # the rest of the suite runs at its own


def same_weights(a: dict[str, Any], b: dict[str, Any], tolerance: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert float((b[name] - value).norm() / value.norm()) < tolerance, name


@pytest.mark.parametrize("sharding", ["replicate", "fsdp"])
def test_two_processes_make_the_update_of_one(tmp_path: Path, sharding: str) -> None:
    mp.spawn(train, args=(2, tmp_path, sharding), nprocs=2, join=True)
    alone(tmp_path)
    one: dict[str, Any] = torch.load(tmp_path / "weights-1-replicate-0.pt")
    for rank in (0, 1) if sharding == "replicate" else (0,):
        same_weights(one, torch.load(tmp_path / f"weights-2-{sharding}-{rank}.pt"))
    base = load_model("tiny").model.state_dict()
    assert any(not torch.allclose(one[k], base[k]) for k in one)  # it trained
    empty = [json.loads((tmp_path / f"empty-2-{sharding}-{rank}.json").read_text()) for rank in (0, 1)]
    if sharding == "fsdp":  # the shares cut unevenly (4 and 3 samples of 7): a process ran empty passes
        assert sum(empty) > 0
    single = json.loads((tmp_path / "metrics-1-replicate-0.json").read_text())
    for rank in (0, 1):
        double = json.loads((tmp_path / f"metrics-2-{sharding}-{rank}.json").read_text())
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


@pytest.mark.slow  # ~25 s: three learner launches; run by .ci/run after the default suite
def test_a_sharded_state_resumes_on_another_number_of_processes(tmp_path: Path) -> None:
    """Two steps on one process equal a step under FSDP on two and the next alone, and a step alone
    and the next under FSDP on two: the optimizer state is whole and keyed the same either way."""
    alone(tmp_path)
    straight: dict[str, Any] = torch.load(tmp_path / "weights-1-replicate-0.pt")
    sharded_first, single_first = tmp_path / "sharded-first", tmp_path / "single-first"
    sharded_first.mkdir(), single_first.mkdir()
    mp.spawn(train, args=(2, sharded_first, "fsdp", (0,), None, sharded_first / "state"), nprocs=2, join=True)
    alone(sharded_first, steps=(1,), start=sharded_first / "state")
    same_weights(straight, torch.load(sharded_first / "weights-1-replicate-0.pt"))
    alone(single_first, steps=(0,), save=single_first / "state")
    mp.spawn(train, args=(2, single_first, "fsdp", (1,), single_first / "state"), nprocs=2, join=True)
    same_weights(straight, torch.load(single_first / "weights-2-fsdp-0.pt"))


@pytest.mark.slow  # ~30 s each: three trainer.run launches; run by .ci/run after the default suite
@pytest.mark.parametrize("sharding", ["replicate", "fsdp"])
def test_the_main_job_under_torchrun_trains_as_one_process(tmp_path: Path, redis_base_url: str, sharding: str) -> None:
    """`torchrun --nproc-per-node 2 -m trainer.run`: the first process rolls out and checkpoints, both
    learn; with rollouts reproducible (`--concurrency 1`) the weights equal those of one process."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from tests.processes.test_trainer_run import ARGS

    def run(directory: Path, *launcher: str, resume: list[str] | None = None) -> Path:
        flags = ["--mini-batch-size", "5", "--steps", "1", "--runs-dir", str(directory), "--redis-url", redis_base_url]
        flags += ["--set", f"learner.sharding={sharding}"]
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
