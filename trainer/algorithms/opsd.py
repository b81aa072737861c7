"""OPSD as the reference's baseline (sdar.md §3): the gated term alone, `pg_coef = 0` (no RL loss);
the KL to the initial policy stays on (`examples/opsd_trainer`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainer.algorithms.sdar import SDAR


class OPSD(SDAR):
    type: Literal["opsd"] = "opsd"  # type: ignore[assignment]
    pg_coef: float = Field(default=0.0, ge=0, le=0)
