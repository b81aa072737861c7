"""LoRA: only the adapter trains; the reference log-probs are the base's with the adapter off (no
second model); checkpoints hold the adapter, load back over their base, and merge on request; the
teacher in process scores with the adapter on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from shared.model_specs import check_spec
from shared.models import load_model
from tests.unit.test_learner import varied_groups
from trainer import checkpoint
from trainer.adapters import LoraSettings, attach, is_adapted
from trainer.algorithms import make
from trainer.learner import Learner, LearnerConfig, response_logprobs, shape
from trainer.teacher import LocalTeacher


@pytest.fixture(scope="module")
def tiny() -> Any:
    return load_model("tiny")


def logprobs(model: Any, samples: list[Any]) -> torch.Tensor:
    with torch.no_grad():
        lp, _, mask = response_logprobs(model, samples, with_entropy=False)
    return lp * mask


@pytest.fixture(scope="module")
def trained(tiny: Any) -> tuple[Any, Learner]:
    model = attach(copy.deepcopy(tiny.model), LoraSettings(rank=4, alpha=8), "tiny")
    learner = Learner(model, make({"type": "grpo", "kl_coef": 0.01}), LearnerConfig(lr=5e-2))  # no ref_model
    for step in range(3):
        learner.step(varied_groups(seed=step), step)
    return model, learner


def test_only_the_adapter_trains_and_the_reference_is_the_base(tiny: Any, trained: tuple[Any, Learner]) -> None:
    model, learner = trained
    assert is_adapted(model) and {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if "lora_" in n
    }
    base = dict(tiny.model.named_parameters())
    for name, value in model.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(value, base[name.replace(".base_layer", "")]), name
    samples = shape(varied_groups(seed=9)).samples
    assert not torch.allclose(logprobs(model, samples), logprobs(tiny.model, samples), atol=1e-3)  # it learned
    p = learner.prepare(varied_groups(seed=9), 3)
    for i, s in enumerate(p.batch.samples):
        assert torch.allclose(p.ref[i], logprobs(tiny.model, [s])[0], atol=1e-5)  # the adapter off: the base
    assert not torch.allclose(logprobs(model, samples), logprobs(tiny.model, samples), atol=1e-3)  # back on


def test_a_checkpoint_holds_the_adapter_loads_over_its_base_and_merges(
    tmp_path: Path, trained: tuple[Any, Learner]
) -> None:
    model, learner = trained
    progress = checkpoint.Progress(step=3, policy_version=3)
    path = checkpoint.save(tmp_path, progress, model, load_model("tiny").tokenizer, learner.trainer_state(), merge=True)
    assert (path / "adapter_model.safetensors").is_file() and not (path / "model.safetensors").exists()
    assert (path / "merged" / "model.safetensors").is_file()
    check_spec(str(path))
    samples = shape(varied_groups(seed=5)).samples
    expected = logprobs(model, samples)
    again = load_model(str(path), trainable=True)
    assert is_adapted(again.model) and any(p.requires_grad for p in again.model.parameters())
    assert torch.allclose(logprobs(again.model, samples), expected, atol=1e-5)
    plain = load_model(str(path / "merged"))
    assert not is_adapted(plain.model) and torch.allclose(logprobs(plain.model, samples), expected, atol=1e-4)


def test_the_teacher_in_process_scores_with_the_adapter(tiny: Any, trained: tuple[Any, Learner]) -> None:
    model, _ = trained
    queries = [s.query for s in shape(varied_groups(seed=6)).samples[:4]]
    adapted = LocalTeacher(model, tiny.tokenizer, "tiny").logprobs(queries)
    base = LocalTeacher(tiny.model, tiny.tokenizer, "tiny").logprobs(queries)
    merged = LocalTeacher(copy.deepcopy(model).merge_and_unload(), tiny.tokenizer, "tiny")
    assert all(
        torch.allclose(torch.tensor(a), torch.tensor(m), atol=1e-4)
        for a, m in zip(adapted, merged.logprobs(queries), strict=True)
    )
    assert not all(
        torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-3) for a, b in zip(adapted, base, strict=True)
    )


def test_the_teacher_service_loads_an_adapter_checkpoint_as_its_policy(
    tmp_path: Path, tiny: Any, trained: tuple[Any, Learner]
) -> None:
    model, learner = trained
    path = checkpoint.save(tmp_path, checkpoint.Progress(step=3), model, tiny.tokenizer, learner.trainer_state())
    service = LocalTeacher(copy.deepcopy(tiny.model), tiny.tokenizer, "tiny").service
    policy = service.load_policy(str(path), 1)
    assert policy.version == 1 and is_adapted(policy.model)
    queries = [s.query for s in shape(varied_groups(seed=7)).samples[:3]]
    expected = LocalTeacher(model, tiny.tokenizer, "tiny").logprobs(queries)
    from trainer.teacher import requests

    got = service.teacher_logprobs(requests(queries)[0])[0]
    assert all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5) for a, b in zip(got, expected, strict=True))
