"""GRPO as verl-agent runs it (sdar.md §1): the base RL loss and nothing else."""

from __future__ import annotations

from typing import Literal

from trainer.algorithms.base import Algorithm


class GRPO(Algorithm):
    type: Literal["grpo"] = "grpo"
