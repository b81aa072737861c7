"""The algorithm units: how they relate to each other exactly, where their gradients flow, and the
one-line errors of a bad choice."""

from __future__ import annotations

import pytest
import torch

from trainer.algorithms import ALGORITHMS, AlgorithmError, Signals, make


def signals(seed: int = 0) -> Signals:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return Signals(
        logprobs=(-torch.rand(2, 3, generator=g) * 3).requires_grad_(),
        entropy=(torch.rand(2, 3, generator=g) * 2).requires_grad_(),
        old_logprobs=-torch.rand(2, 3, generator=g) * 3,
        advantages=torch.tensor([0.7, -1.3]),
        mask=mask,
        ref_logprobs=-torch.rand(2, 3, generator=g) * 3,
        teacher_logprobs=(-torch.rand(2, 3, generator=g) * 3).requires_grad_(),
        step=3,
    )


def loss_and_grads(
    kind: dict[str, object], seed: int = 0
) -> tuple[float, torch.Tensor, torch.Tensor, dict[str, float]]:
    s = signals(seed)
    loss, stats = make(kind).loss(s, None)
    loss.backward()
    assert s.logprobs.grad is not None and s.entropy.grad is not None
    return loss.item(), s.logprobs.grad.clone(), s.entropy.grad.clone(), {k: float(v) for k, v in stats.items()}


def test_sdar_with_beta_zero_is_grpo_opsd() -> None:
    a = loss_and_grads({"type": "sdar", "beta": 0.0})
    b = loss_and_grads({"type": "grpo_opsd"})
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and a[3] == b[3]
    assert b[3]["sdar/gate_mean"] == pytest.approx(0.5)


def test_sdar_with_lambda_zero_is_grpo() -> None:
    sdar = loss_and_grads({"type": "sdar", "lam": 0.0})
    grpo = loss_and_grads({"type": "grpo"})
    assert sdar[0] == grpo[0] and torch.equal(sdar[1], grpo[1]) and torch.equal(sdar[2], grpo[2])
    assert loss_and_grads({"type": "sdar"})[0] != grpo[0]  # the default lambda does add a term


def test_the_sdar_term_moves_only_the_student_and_by_the_gate() -> None:
    s = signals()
    sdar, grpo = make({"type": "sdar", "lam": 0.5}), make({"type": "grpo"})
    loss, _ = sdar.loss(s, None)
    loss.backward()
    assert s.teacher_logprobs is not None and s.teacher_logprobs.grad is None  # the teacher is data
    total = s.logprobs.grad.clone()
    s2 = signals()
    grpo.loss(s2, None)[0].backward()
    extra = total - s2.logprobs.grad
    gate = torch.sigmoid(5.0 * (s.teacher_logprobs.detach() - s.logprobs.detach()))
    # d/dlp of lam * sum(gate * (teacher - lp)) / tokens = -lam * gate / tokens, 0 on padding
    assert torch.allclose(extra, -0.5 * gate * s.mask / 5, atol=1e-7)


def test_opsd_has_no_policy_gradient_term_and_keeps_the_kl() -> None:
    opsd = make({"type": "opsd"})
    assert opsd.pg_coef == 0 and opsd.needs_ref and opsd.needs_teacher
    a, b = signals(), signals()
    b.advantages = torch.tensor([-5.0, 9.0])
    assert opsd.loss(a, None)[0].item() == pytest.approx(opsd.loss(b, None)[0].item())
    no_kl = make({"type": "opsd", "kl_coef": 0.0})
    assert not no_kl.needs_ref and opsd.loss(signals(), None)[0].item() != no_kl.loss(signals(), None)[0].item()


def test_rlsd_at_the_end_of_its_schedule_is_grpo() -> None:
    rlsd = make({"type": "rlsd", "lam_decay_steps": 3})  # signals() are at step 3: lam has decayed to 0
    assert rlsd.lam(0) == 0.5 and rlsd.lam(3) == 0.0
    s, g = signals(), signals()
    assert rlsd.loss(s, None)[0].item() == pytest.approx(make({"type": "grpo"}).loss(g, None)[0].item())
    early = make({"type": "rlsd", "lam_decay_steps": 100})
    assert early.loss(signals(), None)[0].item() != pytest.approx(
        make({"type": "grpo"}).loss(signals(), None)[0].item()
    )


def test_each_algorithm_says_what_it_needs() -> None:
    needs = {name: (make({"type": name}).needs_teacher, make({"type": name}).needs_ref) for name in ALGORITHMS}
    assert needs == {
        "grpo": (False, True),
        "sdar": (True, True),
        "grpo_opsd": (True, True),
        "opsd": (True, True),
        "rlsd": (True, True),
    }
    assert make({"type": "sdar"}).lam == 0.01  # the paper's and the scripts', not the code default 0.1
    with pytest.raises(ValueError, match="needs the teacher"):
        make({"type": "sdar"}).loss(Signals(**{**signals().__dict__, "teacher_logprobs": None}), None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "ppo"}, "unknown algorithm type 'ppo'; choose one of grpo, sdar"),
        ({}, "unknown algorithm type None"),
        ({"type": "sdar", "lam": -1}, "algorithm sdar: lam: Input should be greater than or equal to 0"),
        ({"type": "grpo", "dual_clip": 1.0}, "algorithm grpo: dual_clip: Input should be greater than 1"),
        ({"type": "grpo", "gate": 1}, "algorithm grpo: gate: Extra inputs are not permitted"),
    ],
)
def test_a_bad_algorithm_is_a_one_line_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(AlgorithmError) as e:
        make(fields)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
