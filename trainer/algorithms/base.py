"""What every algorithm shares: the inputs of one micro-batch (`Signals`) and the RL loss of the
reference (sdar.md §1): `pg_coef * PPO-clip - entropy_coef * H + kl_coef * KL_k3`. An algorithm adds
its own term in `extra`, says which signals it needs, and names its statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from trainer import losses

Stats = dict[str, torch.Tensor]


@dataclass
class Signals:
    """One micro-batch, `B` samples by `T` response tokens (right-padded; `mask` marks the tokens)."""

    logprobs: torch.Tensor
    """The current policy's log-prob of each sampled token, with gradient."""
    entropy: torch.Tensor
    """The current policy's entropy at each response position, with gradient."""
    old_logprobs: torch.Tensor
    """The log-probs of the policy that sampled the batch (recomputed, or the sampler's)."""
    advantages: torch.Tensor
    """One GRPO advantage a sample, `[B]`."""
    mask: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    """The initial policy's log-probs (when `needs_ref`)."""
    teacher_logprobs: torch.Tensor | None = None
    """The teacher's log-probs under the privileged prompt (when `needs_teacher`)."""
    step: int = 0
    """The training step (for schedules)."""
    is_weights: torch.Tensor | None = None
    """Importance weights of the policy-gradient term's tokens (`losses.truncated_is_weights`), for
    samples an older policy drew (asynchronous training); None: all on-policy, weight 1."""


class Algorithm(BaseModel):
    """The reference's RL loss; subclasses add a term and set `type`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    pg_coef: float = Field(default=1.0, ge=0)
    """Weight of the policy-gradient term (0: no RL loss, as OPSD)."""
    clip_low: float = Field(default=0.2, gt=0, lt=1)
    clip_high: float = Field(default=0.2, gt=0)
    dual_clip: float = Field(default=3.0, gt=1)
    kl_coef: float = Field(default=0.01, ge=0)
    """Weight of the k3 KL to the initial policy (0.01 ALFWorld and WebShop, 0.001 Search-QA)."""
    entropy_coef: float = Field(default=0.001, ge=0)

    needs_teacher: ClassVar[bool] = False

    @property
    def needs_ref(self) -> bool:
        return self.kl_coef > 0

    def token_advantages(self, s: Signals) -> torch.Tensor:
        """The advantages the PPO term uses: `[B]` (one a sample) or `[B, T]` (one a token)."""
        return s.advantages

    def loss(self, s: Signals, denominator: float | None) -> tuple[torch.Tensor, Stats]:
        pg, pg_stats = losses.policy_loss(
            s.logprobs,
            s.old_logprobs,
            self.token_advantages(s),
            s.mask,
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            dual_clip=self.dual_clip,
            denominator=denominator,
            weights_B_T=s.is_weights,
        )
        entropy = losses.token_mean(s.entropy, s.mask, denominator)
        total = self.pg_coef * pg - self.entropy_coef * entropy
        stats: Stats = {
            "actor/pg_loss": pg.detach(),
            "actor/pg_clipfrac": pg_stats["clipfrac"],
            "actor/pg_clipfrac_lower": pg_stats["clipfrac_lower"],
            "actor/ppo_kl": pg_stats["ppo_kl"],
            "actor/entropy": entropy.detach(),
        }
        if self.needs_ref:
            if s.ref_logprobs is None:
                raise ValueError(f"{self.type} with kl_coef > 0 needs the reference log-probs")
            kl = losses.kl_loss(s.logprobs, s.ref_logprobs, s.mask, denominator=denominator)
            total = total + self.kl_coef * kl
            stats["actor/kl_loss"] = kl.detach()
        extra, extra_stats = self.extra(s, denominator)
        return total + extra, stats | extra_stats

    def extra(self, s: Signals, denominator: float | None) -> tuple[torch.Tensor, Stats]:
        """The algorithm's own term (none here)."""
        return torch.zeros((), dtype=s.logprobs.dtype, device=s.logprobs.device), {}

    def teacher(self, s: Signals) -> torch.Tensor:
        if s.teacher_logprobs is None:
            raise ValueError(f"{self.type} needs the teacher's log-probs")
        return s.teacher_logprobs
