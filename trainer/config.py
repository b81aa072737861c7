"""The main job's one typed config (`RunConfig`), saved as `RUN_DIR/config.json`. `trainer.presets`
holds the named starting points; `python -m trainer.run` lays flags and `--set KEY=VALUE` over one and
validates the result here, so a bad key or value is one line naming the field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.model_specs import DEVICE_PATTERN, DTYPE_NAMES
from trainer.adapters import LoraSettings
from trainer.algorithms import AlgorithmConfig
from trainer.algorithms.sdar import SDAR
from trainer.learner import LearnerConfig

Logger = Literal["tensorboard", "wandb", "trackio"]
EVAL_TEMPERATURE = 0.4
"""Validation sampling of the reference for ALFWorld and WebShop (Search-QA is greedy)."""


class EvalConfig(BaseModel):
    """Validation: `tasks` tasks spread over `split`, each played once, no skills in the prompt."""

    model_config = ConfigDict(extra="forbid")

    split: str | None = None
    """Default: `valid_seen` for ALFWorld, `test` for the others."""
    tasks: int = Field(default=4, ge=0)
    """Validation tasks (0: no evaluation)."""
    every: int = Field(default=0, ge=0)
    """Evaluate every this many steps, and at the end (0: only at the end)."""
    temperature: float | None = Field(default=None, ge=0, le=10)
    """Default: 0.4, and greedy (0) for Search-QA, as the reference."""

    def split_for(self, env: str) -> str:
        return self.split or ("valid_seen" if env == "alfworld" else "test")

    def temperature_for(self, env: str) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.0 if env == "searchqa" else EVAL_TEMPERATURE


class RunConfig(BaseModel):
    """Everything a run is made of. The defaults are the `cpu-demo` preset on ALFWorld."""

    model_config = ConfigDict(extra="forbid")

    env: Literal["alfworld", "webshop", "searchqa", "counter"] = "alfworld"
    model: str = "smollm2"
    """`smollm2` (packaged), `tiny` (a small random model), or a model directory."""
    dtype: Literal[DTYPE_NAMES] = "float32"  # type: ignore[valid-type]
    """The weights' type (the optimizer's state follows it)."""
    steps: int = Field(default=2, ge=1)
    groups: int = Field(default=2, ge=1)
    """Tasks per step (each played `group_size` times)."""
    group_size: int = Field(default=4, ge=2)
    """Episodes per task, G (GRPO compares the episodes of a group: at least 2)."""
    split: str = "train"
    max_turns: int | None = Field(default=2, ge=1)
    """Env steps per episode (None: the env's own limit)."""
    history: int | None = Field(default=None, ge=0)
    """Past steps shown in the prompt (None: the env's, 2; 4 for Search-QA)."""
    max_prompt_tokens: int | None = Field(default=None, ge=16)
    """Longer prompts lose their oldest history (None: what the context leaves after a response)."""
    max_new_tokens: int = Field(default=96, ge=1)
    """Response tokens per turn."""
    temperature: float = Field(default=1.0, gt=0, le=10)
    """Rollout sampling temperature (keep 1 with a teacher algorithm: the teacher scores at 1)."""
    concurrency: int = Field(default=64, ge=1)
    """Episodes in flight at once (1 makes the rollouts of a seed reproducible)."""
    seed: int = 0
    """Task draws, sampling, and (unless `learner.seed` is set) the learner's shuffles."""
    max_staleness: int = Field(default=0, ge=0)
    """0: synchronous on-policy training, as the reference (a step's rollout starts after the last
    update). N >= 1: rollout goes on while the learner trains, at most N policy versions ahead; a
    group older than that is dropped (and counted), and off-policy samples are corrected by truncated
    importance sampling (`learner.is_correction`, `learner.is_cap`). In process, generation then runs
    on a copy of the weights."""
    device: str = Field(default="cpu", pattern=DEVICE_PATTERN)
    """Where the models run: `cpu`, `cuda` (under torchrun each process its `LOCAL_RANK`'s GPU, the
    process group NCCL's for the tensors and gloo's for the rest) or `cuda:N`."""
    keep_checkpoints: int = Field(default=2, ge=1)
    redis_prefix: str = ""
    """Default: `sdar:run:<run name>-<random>:`, so runs never share a stream."""
    consumer: str = "learner-0"
    """The buffer consumer of this run (set once at creation, so a resume takes back what it held)."""
    loggers: list[Logger] = Field(default_factory=lambda: list[Logger](["tensorboard"]))
    """Where the metrics go beside `metrics.jsonl`: TensorBoard event files in the run directory, and
    Weights & Biases or trackio when installed and asked for."""
    lora: LoraSettings | None = None
    """Train a LoRA adapter instead of all the weights (`--set lora.rank=16`, or `--lora-rank 16`)."""
    algorithm: AlgorithmConfig = Field(default_factory=SDAR)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """The learner; a run's defaults differ from the library's in two fields: `autocast` is
    `bfloat16` (the reference trains bf16 mixed precision) and `seed` is the run's."""
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _teacher_has_skills(self) -> RunConfig:
        from services.teacher.skills import ENVS as SKILLED

        if self.algorithm.needs_teacher and self.env not in SKILLED:
            raise ValueError(
                f"algorithm {self.algorithm.type} needs a teacher with skills, and env {self.env} has none "
                f"(skills exist for {', '.join(SKILLED)}); use grpo"
            )
        return self

    @model_validator(mode="after")
    def _learner_defaults(self) -> RunConfig:
        given = self.learner.model_fields_set
        update: dict[str, Any] = {"seed": self.seed} if "seed" not in given else {}
        update |= {"autocast": "bfloat16"} if "autocast" not in given else {}
        if update:
            self.learner = self.learner.model_copy(update=update)
        return self


def validate(fields: dict[str, Any]) -> RunConfig:
    """`fields` as a `RunConfig`, or a `ValueError` of one line naming the first bad field."""
    try:
        return RunConfig.model_validate(fields)
    except ValidationError as e:
        raise ValueError(describe(e)) from None


def describe(e: ValidationError) -> str:
    first = e.errors()[0]
    loc = [str(part) for part in first["loc"]]
    if loc[:1] == ["algorithm"] and len(loc) > 1:
        loc = loc[:1] + loc[2:]  # drop the union's tag (`algorithm.sdar.lam` reads `algorithm.lam`)
    where = ".".join(loc) or "config"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if first["type"] == "union_tag_invalid":
        return f"{where}.type: {first['msg']}"
    given = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"{where}: {first['msg']}{given}"
