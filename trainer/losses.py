"""Advantages and losses of the learner, as pure functions of tensors (sdar.md §1, §3; the reference's
arithmetic: verl-agent's `core_algos` and SDAR's `sdar_utils`).

Axes: `N` step-samples (one turn of one episode each), `B` samples of a batch, `T` response tokens,
`V` vocabulary. `mask_B_T` is 1.0 on response tokens and 0.0 on padding.

Every loss is a token-mean: the sum of its masked per-token values over the number of masked tokens,
or over `denominator` when one is given. A learner that splits a mini-batch into micro-batches passes
the mini-batch's token count as `denominator`, so the sum of the micro-batches' losses is the
mini-batch's token-mean whatever the split (the reference instead averages per-micro-batch means).
The statistics use the same denominator, so they add up across micro-batches the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import torch


def token_mean(values_B_T: torch.Tensor, mask_B_T: torch.Tensor, denominator: float | None = None) -> torch.Tensor:
    """`sum(values * mask) / denominator`, the denominator being the mask's sum by default (an all-padding
    batch gives 0, as the reference's `masked_mean` with its 1e-8 does)."""
    total = (values_B_T * mask_B_T).sum()
    if denominator is None:
        return total / mask_B_T.sum().clamp_min(1.0)
    return total / denominator


def group_advantages(
    scores_N: torch.Tensor, group_ids: Sequence[Hashable], *, eps: float = 1e-6, scale: bool = True
) -> torch.Tensor:
    """GRPO over all step-samples of a group (the reference's `compute_mean_std_cross_steps=True`):
    `(score - mean_g) / (std_g + eps)`, with `torch.std`'s unbiased std; a group of one sample has mean 0
    and std 1, as in the reference. Without `scale`, only the mean is subtracted."""
    if len(group_ids) != len(scores_N):
        raise ValueError(f"{len(group_ids)} group ids for {len(scores_N)} scores")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, group in enumerate(group_ids):
        members[group].append(i)
    mean_N = torch.zeros_like(scores_N)
    std_N = torch.ones_like(scores_N)
    for rows in members.values():
        if len(rows) > 1:
            scores = scores_N[rows]
            mean_N[rows] = scores.mean()
            std_N[rows] = scores.std()
    centred = scores_N - mean_N
    return centred / (std_N + eps) if scale else centred


def policy_loss(
    logprobs_B_T: torch.Tensor,
    old_logprobs_B_T: torch.Tensor,
    advantages_B: torch.Tensor,
    mask_B_T: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float = 3.0,
    denominator: float | None = None,
    weights_B_T: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO clipped objective, with the dual clip (`dual_clip * advantage` as a floor of the loss) on
    negative advantages. `advantages_B` is one advantage a sample, or `[B, T]`, one a token (RLSD).
    `weights_B_T`, when given, multiplies each token's loss and carries no gradient: the importance
    weights of an off-policy correction (`truncated_is_weights`), applied after the clip as verl's
    rollout correction does. Stats: `clipfrac` (tokens where the clipped term won), `clipfrac_lower`
    (where the dual clip did), `ppo_kl` (the mean of `old - new` log-probs)."""
    if dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be above 1, not {dual_clip}")
    advantages_B_T = advantages_B[:, None].expand_as(logprobs_B_T) if advantages_B.dim() == 1 else advantages_B
    log_ratio = logprobs_B_T - old_logprobs_B_T
    ratio = torch.exp(log_ratio)
    unclipped = -advantages_B_T * ratio
    clipped = -advantages_B_T * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    ppo = torch.maximum(unclipped, clipped)
    floor = -advantages_B_T * dual_clip
    losses = torch.where(advantages_B_T < 0, torch.minimum(floor, ppo), ppo)
    if weights_B_T is not None:
        losses = losses * weights_B_T.detach()
    with torch.no_grad():
        stats = {
            "clipfrac": token_mean(torch.gt(clipped, unclipped).float(), mask_B_T, denominator),
            "clipfrac_lower": token_mean((torch.gt(ppo, floor) & (advantages_B_T < 0)).float(), mask_B_T, denominator),
            "ppo_kl": token_mean(-log_ratio, mask_B_T, denominator),
        }
    return token_mean(losses, mask_B_T, denominator), stats


def truncated_is_weights(
    old_logprobs_B_T: torch.Tensor, sampler_logprobs_B_T: torch.Tensor, *, cap: float
) -> torch.Tensor:
    """Token-level truncated importance sampling: `min(exp(old - sampler), cap)`, no gradient. It
    weighs a token drawn by the sampler's policy mu (an older one, in asynchronous training) towards
    the policy the PPO ratio is taken against; the cap bounds the variance (verl's
    `rollout_is_threshold` and ms-swift's `rollout_importance_sampling_threshold`, both 2.0 by
    default; TRL's `vllm_importance_sampling_cap`). Padding positions are the caller's to mask."""
    if cap <= 0:
        raise ValueError(f"the importance-weight cap must be positive, not {cap}")
    with torch.no_grad():
        return torch.clamp(torch.exp(old_logprobs_B_T - sampler_logprobs_B_T), max=cap)


def kl_loss(
    logprobs_B_T: torch.Tensor,
    ref_logprobs_B_T: torch.Tensor,
    mask_B_T: torch.Tensor,
    *,
    denominator: float | None = None,
) -> torch.Tensor:
    """KL to the reference policy by the low-variance k3 estimator, `exp(ref - lp) - (ref - lp) - 1`,
    clamped to [-10, 10] per token (the reference's `low_var_kl`)."""
    log_ratio = ref_logprobs_B_T - logprobs_B_T
    k3 = torch.clamp(torch.exp(log_ratio) - log_ratio - 1, min=-10.0, max=10.0)
    return token_mean(k3, mask_B_T, denominator)


def sdar_loss(
    logprobs_B_T: torch.Tensor,
    teacher_logprobs_B_T: torch.Tensor,
    mask_B_T: torch.Tensor,
    *,
    beta: float = 5.0,
    denominator: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SDAR's gated self-distillation term (sdar.md §3): `gap = teacher - sg(student)`,
    `gate = sg(sigmoid(beta * gap))`, loss = token-mean of `gate * (teacher - logprobs)`; the gradient
    flows only through `logprobs` (the teacher's log-probs are data). Stats: `gate_mean`,
    `gate_active_ratio` (gate > 0.5), `gap_mean`. `beta = 0` gives GRPO+OPSD's flat gate of 0.5."""
    teacher = teacher_logprobs_B_T.detach()
    gap = teacher - logprobs_B_T.detach()
    gate = torch.sigmoid(beta * gap)
    loss = token_mean(gate * (teacher - logprobs_B_T), mask_B_T, denominator)
    stats = {
        "gate_mean": token_mean(gate, mask_B_T, denominator),
        "gate_active_ratio": token_mean((gate > 0.5).float(), mask_B_T, denominator),
        "gap_mean": token_mean(gap, mask_B_T, denominator),
    }
    return loss, stats


def token_entropy(logits_T_V: torch.Tensor) -> torch.Tensor:
    """The entropy of the full distribution at each position (any leading axes), in float32."""
    logp = torch.log_softmax(logits_T_V.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def entropy(logits_B_T_V: torch.Tensor, mask_B_T: torch.Tensor, *, denominator: float | None = None) -> torch.Tensor:
    """The token-mean entropy of the full distribution at each response position."""
    return token_mean(token_entropy(logits_B_T_V), mask_B_T, denominator)


def rlsd_advantages(
    advantages_B: torch.Tensor,
    logprobs_B_T: torch.Tensor,
    teacher_logprobs_B_T: torch.Tensor,
    mask_B_T: torch.Tensor,
    *,
    lam: float = 0.5,
    clip: float = 0.2,
) -> torch.Tensor:
    """RLSD's token advantages (sdar.md §6; the reference's `compute_rlsd_token_advantage`):
    `A * ((1 - lam) + lam * clip(exp(sign(A) * (teacher - student)), 1 - clip, 1 + clip))` on response
    tokens, 0 on padding, no gradient. The teacher sets each token's magnitude, the advantage its
    direction; `lam = 0` is GRPO (the reference decays it linearly from 0.5 to 0 over 100 steps: the
    caller's schedule). Returns `[B, T]`, for `policy_loss`."""
    with torch.no_grad():
        sign_B_1 = torch.sign(advantages_B)[:, None]
        weight = torch.clamp(torch.exp(sign_B_1 * (teacher_logprobs_B_T - logprobs_B_T)), 1 - clip, 1 + clip)
        return advantages_B[:, None] * ((1 - lam) + lam * weight) * mask_B_T
