"""Algorithms as small units chosen by a `type` field: each is a frozen pydantic model of its
hyperparameters with a `loss` over one micro-batch's `Signals`, and says which signals it needs
(`needs_teacher`, `needs_ref`), so the learner computes only those.

| type | loss |
|---|---|
| `grpo` | PPO-clip with dual clip, `- 0.001 H`, `+ kl_coef KL_k3` (sdar.md §1) |
| `sdar` | GRPO `+ lam * L_SDAR`, `lam = 0.01`, `beta = 5` (sdar.md §3) |
| `grpo_opsd` | SDAR with `beta = 0` (gate 0.5) |
| `opsd` | SDAR with `pg_coef = 0` (the gated term and the KL only) |
| `rlsd` | GRPO whose token advantages the teacher scales (sdar.md §6) |
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from trainer.algorithms.base import Algorithm, Signals, Stats
from trainer.algorithms.grpo import GRPO
from trainer.algorithms.grpo_opsd import GRPOOPSD
from trainer.algorithms.opsd import OPSD
from trainer.algorithms.rlsd import RLSD
from trainer.algorithms.sdar import SDAR

AlgorithmConfig = Annotated[GRPO | SDAR | GRPOOPSD | OPSD | RLSD, Field(discriminator="type")]
ALGORITHMS: dict[str, type[Algorithm]] = {c.model_fields["type"].default: c for c in (GRPO, SDAR, GRPOOPSD, OPSD, RLSD)}
_ADAPTER: TypeAdapter[Algorithm] = TypeAdapter(AlgorithmConfig)


class AlgorithmError(ValueError):
    """An unknown algorithm type or a bad hyperparameter, in one line."""


def make(fields: dict[str, Any]) -> Algorithm:
    """The algorithm its `type` names, with these hyperparameters."""
    kind = fields.get("type")
    if kind not in ALGORITHMS:
        raise AlgorithmError(f"unknown algorithm type {kind!r}; choose one of {', '.join(ALGORITHMS)}")
    try:
        return _ADAPTER.validate_python(fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "type"
        raise AlgorithmError(f"algorithm {kind}: {where}: {first['msg']}") from None


__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmConfig", "AlgorithmError", "Signals", "Stats", "make"]
