"""The learner's advantages and losses against numbers worked out by hand here."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (
    entropy,
    group_advantages,
    kl_loss,
    policy_loss,
    rlsd_advantages,
    sdar_loss,
    token_mean,
    truncated_is_weights,
)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_group_advantages_normalise_over_every_step_sample_of_a_group() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0])
    groups = ["a", "a", "a", "b"]
    # group a: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1; group b, alone: mean 0, std 1
    expected = [-1 / (1 + 1e-6), 0.0, 1 / (1 + 1e-6), 10 / (1 + 1e-6)]
    assert group_advantages(scores, groups).tolist() == pytest.approx(expected, rel=1e-6)
    assert group_advantages(scores, groups, scale=False).tolist() == pytest.approx([-1.0, 0.0, 1.0, 10.0])
    same = torch.tensor([4.0, 4.0])  # no spread: 0 / (0 + eps)
    assert group_advantages(same, [1, 1]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="3 group ids for 4 scores"):
        group_advantages(scores, groups[:3])


def policy_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    old = torch.zeros(2, 2)
    logprobs = torch.tensor([[math.log(1.5), math.log(0.9)], [math.log(4.0), 0.0]], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return logprobs, old, advantages, mask


def test_policy_loss_clips_and_dual_clips() -> None:
    logprobs, old, advantages, mask = policy_case()
    loss, stats = policy_loss(logprobs, old, advantages, mask)
    # sample 0 (A = +1): ratio 1.5 -> max(-1.5, -1.2) = -1.2 (clipped); ratio 0.9 -> -0.9
    # sample 1 (A = -1): ratio 4.0 -> max(4.0, 1.2) = 4.0, floored by the dual clip at 3.0; its 2nd token is padding
    assert loss.item() == pytest.approx((-1.2 - 0.9 + 3.0) / 3)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    assert stats["clipfrac_lower"].item() == pytest.approx(1 / 3)
    assert stats["ppo_kl"].item() == pytest.approx(-(math.log(1.5) + math.log(0.9) + math.log(4.0)) / 3)
    loss.backward()
    assert logprobs.grad is not None  # only the unclipped token moves: d(-A * ratio) / dlp = -0.9, over 3 tokens
    assert logprobs.grad.flatten().tolist() == pytest.approx([0.0, -0.3, 0.0, 0.0])


def test_a_given_denominator_replaces_the_token_count() -> None:
    logprobs, old, advantages, mask = policy_case()
    loss, stats = policy_loss(logprobs, old, advantages, mask, denominator=6.0)
    assert loss.item() == pytest.approx(0.9 / 6) and stats["clipfrac"].item() == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(logprobs, old, advantages, mask, dual_clip=1.0)


def test_truncated_importance_weights_scale_each_tokens_clipped_loss() -> None:
    old = torch.tensor([[math.log(0.5), math.log(0.2)], [math.log(0.9), 0.0]])
    sampler = torch.tensor([[math.log(0.25), math.log(0.4)], [math.log(0.1), 0.0]])
    weights = truncated_is_weights(old, sampler, cap=2.0)
    assert weights.flatten().tolist() == pytest.approx([2.0, 0.5, 2.0, 1.0])  # 0.5 / 0.25 = 2; 0.9 / 0.1 = 9, capped
    assert truncated_is_weights(old, sampler, cap=10.0)[1, 0].item() == pytest.approx(9.0)
    with pytest.raises(ValueError, match="positive"):
        truncated_is_weights(old, sampler, cap=0.0)
    logprobs, old, advantages, mask = policy_case()
    loss, stats = policy_loss(logprobs, old, advantages, mask, weights_B_T=weights)
    # the per-token losses of the unweighted case (-1.2, -0.9, 3.0) times 2.0, 0.5, 2.0
    assert loss.item() == pytest.approx((-1.2 * 2.0 - 0.9 * 0.5 + 3.0 * 2.0) / 3)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)  # the weights change the loss, not what clipped
    loss.backward()
    assert logprobs.grad is not None
    assert logprobs.grad.flatten().tolist() == pytest.approx([0.0, -0.3 * 0.5, 0.0, 0.0])


def test_micro_batches_with_the_mini_batch_denominator_add_up_to_its_token_mean() -> None:
    generator = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(5, 7, generator=generator)
    old = -torch.rand(5, 7, generator=generator)
    advantages = torch.randn(5, generator=generator)
    mask = (torch.rand(5, 7, generator=generator) > 0.3).float()
    whole, _ = policy_loss(logprobs, old, advantages, mask)
    count = float(mask.sum())
    for split in ([5], [2, 3], [1, 1, 1, 1, 1]):
        parts, start = [], 0
        for size in split:
            rows = slice(start, start + size)
            parts.append(policy_loss(logprobs[rows], old[rows], advantages[rows], mask[rows], denominator=count)[0])
            start += size
        assert sum(p.item() for p in parts) == pytest.approx(whole.item(), rel=1e-6)


def test_kl_loss_is_the_clamped_k3_estimator() -> None:
    logprobs = torch.tensor([[-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-0.5, -2.0, 4.0]])  # ref - lp = 0.5, -1, 5
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    k3 = [math.exp(0.5) - 0.5 - 1, math.exp(-1.0) + 1 - 1]
    assert kl_loss(logprobs, ref, mask).item() == pytest.approx(sum(k3) / 2)
    everything = torch.ones(1, 3)  # exp(5) - 5 - 1 = 142.4, clamped to 10
    assert kl_loss(logprobs, ref, everything).item() == pytest.approx((sum(k3) + 10.0) / 3)
    assert kl_loss(logprobs, logprobs, everything).item() == 0.0


def test_sdar_loss_gates_on_the_detached_gap_and_pulls_only_the_student() -> None:
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    teacher = torch.tensor([[-0.5, -3.0]], requires_grad=True)
    mask = torch.ones(1, 2)
    loss, stats = sdar_loss(logprobs, teacher, mask, beta=5.0)
    # gap = 0.5 and -1.0; gate = sigmoid(2.5) = 0.924 (endorsed) and sigmoid(-5) = 0.0067 (softly ignored)
    g1, g2 = sigmoid(2.5), sigmoid(-5.0)
    assert loss.item() == pytest.approx((g1 * 0.5 + g2 * -1.0) / 2)
    assert stats["gate_mean"].item() == pytest.approx((g1 + g2) / 2)
    assert stats["gate_active_ratio"].item() == pytest.approx(0.5)
    assert stats["gap_mean"].item() == pytest.approx(-0.25)
    loss.backward()
    assert logprobs.grad is not None and logprobs.grad.flatten().tolist() == pytest.approx([-g1 / 2, -g2 / 2])
    assert teacher.grad is None  # the teacher is data: no gradient reaches it
    flat, flat_stats = sdar_loss(logprobs, teacher, mask, beta=0.0)  # GRPO+OPSD: every gate 0.5
    assert flat.item() == pytest.approx(0.5 * (0.5 - 1.0) / 2) and flat_stats["gate_mean"].item() == 0.5


def test_entropy_of_the_full_distribution() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [9.0, -9.0]]])  # p = (1/2, 1/2), (3/4, 1/4)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    quarter = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy(logits, mask).item() == pytest.approx((math.log(2.0) + quarter) / 2)
    assert entropy(logits, mask, denominator=4.0).item() == pytest.approx((math.log(2.0) + quarter) / 4)


def test_an_all_padding_batch_gives_zero_not_nan() -> None:
    assert token_mean(torch.ones(2, 3), torch.zeros(2, 3)).item() == 0.0


def test_rlsd_advantages_take_the_magnitude_from_the_teacher_and_the_sign_from_the_advantage() -> None:
    advantages = torch.tensor([1.0, -2.0, 0.0])
    student = torch.zeros(3, 2)
    teacher = torch.tensor([[0.1, -1.0], [0.1, 0.5], [3.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    # A = +1: w = exp(0.1) = 1.105, exp(-1) = 0.368 -> clipped to 0.8; A = -2: w = exp(-0.1) = 0.905 and padding
    expected = [
        [0.5 + 0.5 * math.exp(0.1), 0.5 + 0.5 * 0.8],
        [-2 * (0.5 + 0.5 * math.exp(-0.1)), 0.0],
        [0.0, 0.0],  # a zero advantage stays zero
    ]
    got = rlsd_advantages(advantages, student, teacher, mask, lam=0.5, clip=0.2)
    assert got.flatten().tolist() == pytest.approx([x for row in expected for x in row])
    assert torch.equal(rlsd_advantages(advantages, student, teacher, mask, lam=0.0), advantages[:, None] * mask)
    logprobs = torch.zeros(3, 2, requires_grad=True)  # a token-level advantage goes straight into the PPO loss
    loss, _ = policy_loss(logprobs, torch.zeros(3, 2), got, mask)
    assert loss.item() == pytest.approx(-sum(x for row in expected for x in row) / 5, rel=1e-5)
