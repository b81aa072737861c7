"""RLSD (sdar.md §6, §9b): the teacher sets each token's advantage magnitude and the GRPO advantage its
direction (`losses.rlsd_advantages`), with `lam` decayed linearly from `lam_start` to 0 over
`lam_decay_steps` steps, as the reference's baseline does."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from trainer import losses
from trainer.algorithms.base import Algorithm, Signals


class RLSD(Algorithm):
    type: Literal["rlsd"] = "rlsd"  # type: ignore[assignment]
    lam_start: float = Field(default=0.5, ge=0, le=1)
    lam_decay_steps: int = Field(default=100, ge=1)
    weight_clip: float = Field(default=0.2, gt=0, lt=1)

    needs_teacher: ClassVar[bool] = True

    def lam(self, step: int) -> float:
        return self.lam_start * max(0.0, 1.0 - step / self.lam_decay_steps)

    def token_advantages(self, s: Signals) -> torch.Tensor:
        return losses.rlsd_advantages(
            s.advantages, s.old_logprobs, self.teacher(s), s.mask, lam=self.lam(s.step), clip=self.weight_clip
        )
