"""SDAR (sdar.md §3): GRPO plus `lam * L_SDAR`, the gated self-distillation term, the teacher being the
current policy given retrieved skills. `lam` is 0.01 as the paper and all nine reference scripts set
it (the reference code's own default is 0.1); `beta` 5.0."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from trainer import losses
from trainer.algorithms.base import Algorithm, Signals, Stats


class SDAR(Algorithm):
    type: Literal["sdar"] = "sdar"  # type: ignore[assignment]
    lam: float = Field(default=0.01, ge=0)
    """Weight of the gated term (the reference's `sdar_coef`)."""
    beta: float = Field(default=5.0, ge=0)
    """Gate sharpness (`gate_beta`); 0 gives the flat gate 0.5 of GRPO+OPSD."""

    needs_teacher: ClassVar[bool] = True

    def extra(self, s: Signals, denominator: float | None) -> tuple[torch.Tensor, Stats]:
        loss, stats = losses.sdar_loss(s.logprobs, self.teacher(s), s.mask, beta=self.beta, denominator=denominator)
        return self.lam * loss, {
            "sdar/loss": loss.detach(),
            "sdar/gate_mean": stats["gate_mean"],
            "sdar/gate_active_ratio": stats["gate_active_ratio"],
            "sdar/teacher_gap_mean": stats["gap_mean"],
        }
