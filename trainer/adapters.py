"""LoRA (`peft`) on the policy: the adapter is all that trains, the reference log-probs come from the
same model with the adapter switched off (no second model), the teacher is the same model with the
adapter on and skills in the prompt, and checkpoints hold the adapter (and, asked for, the base
with it merged in)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LoraSettings(BaseModel):
    """The adapter: `rank`, `alpha` (the update is scaled by `alpha / rank`), `dropout`, and the
    layers it wraps (`all-linear`: every linear layer but the output head, peft's shorthand)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(default=16, ge=1, le=1024)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    save_merged: bool = False
    """Each checkpoint also holds `merged/`: the base with the adapter merged in, a plain model."""


def attach(model: Any, settings: LoraSettings, base: str) -> Any:
    """`model` with a fresh LoRA adapter; `base` (the run's model spec) is recorded in the adapter's
    config, so a checkpoint loads back through `shared.models.load_model`."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(model, config)
    wrapped.peft_config["default"].base_model_name_or_path = base
    return wrapped


def is_adapted(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def base_only(model: Any) -> Iterator[Any]:
    """`model` with its adapter switched off for the block: the initial policy, for the KL term."""
    with model.disable_adapter():
        yield model


def merged(model: Any) -> Any:
    """A copy of the base with the adapter merged into its weights (the model itself is unchanged)."""
    return copy.deepcopy(model).merge_and_unload()
