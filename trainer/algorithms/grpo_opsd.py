"""GRPO+OPSD (sdar.md §3): SDAR's path with `beta = 0`, so every token's gate is 0.5: an un-gated
self-likelihood term (the reference's `examples/grpo_opsd_trainer`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainer.algorithms.sdar import SDAR


class GRPOOPSD(SDAR):
    type: Literal["grpo_opsd"] = "grpo_opsd"  # type: ignore[assignment]
    beta: float = Field(default=0.0, ge=0, le=0)
