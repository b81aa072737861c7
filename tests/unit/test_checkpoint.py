"""Checkpoints: whole or absent, loadable by transformers, pruned to the last K, state restored."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from shared.models import load_model
from trainer import checkpoint
from trainer.algorithms import make
from trainer.learner import Learner, LearnerConfig


def test_a_checkpoint_round_trips_weights_optimizer_progress_and_rng(tmp_path: Path) -> None:
    loaded = load_model("tiny")
    learner = Learner(loaded.model, make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig(lr=1e-3, warmup_steps=5))
    for p in learner.params:  # one real optimizer step, so the state is not empty
        p.grad = torch.ones_like(p)
    learner.optimizer.step()
    learner.scheduler.step()
    progress = checkpoint.Progress(step=3, policy_version=3, tokens_seen=99, samples_seen=7, consumer="learner-x")
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = checkpoint.save(tmp_path, progress, loaded.model, loaded.tokenizer, learner.trainer_state())
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    again = AutoModelForCausalLM.from_pretrained(path)
    for (name, a), b in zip(loaded.model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    read, rng = checkpoint.read_progress(path)
    assert read == progress
    checkpoint.set_rng_state(rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected

    fresh = Learner(again, make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig(lr=1e-3, warmup_steps=5))
    fresh.load_trainer_state(checkpoint.trainer_state(path))
    assert fresh.scheduler.get_last_lr() == learner.scheduler.get_last_lr()
    state, other = learner.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert all(torch.equal(state[k]["exp_avg"], other[k]["exp_avg"]) for k in state)


def test_only_whole_checkpoints_count_and_the_last_k_are_kept(tmp_path: Path) -> None:
    loaded = load_model("tiny")
    learner = Learner(loaded.model, make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig())
    for step in (1, 2, 3):
        progress = checkpoint.Progress(step=step, policy_version=step)
        checkpoint.save(tmp_path, progress, loaded.model, loaded.tokenizer, learner.trainer_state(), keep=2)
    (tmp_path / ".tmp-step-000004-123").mkdir()  # a save killed before its rename
    (tmp_path / "step-000005").mkdir()  # a directory without progress.json is not a checkpoint
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    assert checkpoint.checkpoints(tmp_path / "nowhere") == []
