"""Presets: the reference's per-env settings (sdar.md §5) to the letter, and how flags and `--set` lay
over them."""

from __future__ import annotations

import pytest

from trainer.algorithms.base import Algorithm
from trainer.config import RunConfig, validate
from trainer.presets import PRESETS, SHARED_ALGORITHM_FIELDS, PresetError, assignment, nested, resolve


def config(preset: str, **overrides: object) -> RunConfig:
    return validate(resolve(preset, overrides))


@pytest.mark.parametrize(
    ("preset", "tasks", "turns", "history", "prompt", "mini", "kl", "penalty", "warmup", "eval_t", "eval_n"),
    [
        ("alfworld", 16, 50, 2, 2048, 256, 0.01, 0.1, 0, 0.4, 128),
        ("webshop", 16, 15, 2, 4096, 64, 0.01, 0.1, 0, 0.4, 128),
        ("searchqa", 128, 4, 4, 4096, 256, 0.001, 0.01, 15, 0.0, 512),
    ],
)
def test_reference_presets_are_sdar_md_section_5(
    preset: str,
    tasks: int,
    turns: int,
    history: int,
    prompt: int,
    mini: int,
    kl: float,
    penalty: float,
    warmup: int,
    eval_t: float,
    eval_n: int,
) -> None:
    c = config(preset)
    assert (c.env, c.groups, c.group_size, c.steps, c.max_turns, c.history) == (preset, tasks, 8, 150, turns, history)
    assert (c.max_prompt_tokens, c.max_new_tokens, c.temperature) == (prompt, 512, 1.0)
    assert (c.learner.lr, c.learner.mini_batch_size, c.learner.invalid_penalty) == (1e-6, mini, penalty)
    assert c.learner.warmup_steps == warmup  # Search-QA: a warm-up ratio of 0.1 over 150 steps
    assert c.algorithm.type == "sdar" and c.algorithm.kl_coef == kl
    assert (c.algorithm.lam, c.algorithm.beta) == (0.01, 5.0)  # type: ignore[union-attr]
    assert (c.eval.temperature, c.eval.tasks) == (eval_t, eval_n)
    assert (c.algorithm.clip_low, c.algorithm.clip_high, c.algorithm.entropy_coef) == (0.2, 0.2, 0.001)


def test_cpu_demo_is_the_default_config_and_keeps_the_envs_reference_settings() -> None:
    demo, default = config("cpu-demo"), RunConfig()
    # the preset names what the defaults leave to the env (history 2, penalty 0.1, valid_seen at 0.4)
    explicit = {"eval": True, "history": True, "learner": {"invalid_penalty", "gradient_checkpointing"}}
    assert demo.model_dump(exclude=explicit) == default.model_dump(exclude=explicit)  # type: ignore[arg-type]
    assert demo.learner.gradient_checkpointing and not default.learner.gradient_checkpointing  # fits 24 GiB
    assert (demo.history, demo.learner.invalid_penalty, default.history, default.learner.invalid_penalty) == (
        2,
        0.1,
        None,
        None,
    )
    assert (demo.eval.tasks, demo.eval.every) == (RunConfig().eval.tasks, RunConfig().eval.every)
    search = config("cpu-demo", env="searchqa")
    assert (search.steps, search.groups, search.max_turns) == (2, 2, 2)  # shrunk
    assert search.algorithm.kl_coef == 0.001 and search.eval.temperature == 0.0 and search.history == 4
    assert config("cpu-demo", steps=40, env="searchqa").learner.warmup_steps == 4
    assert config("cpu-demo", steps=40, env="searchqa", learner={"warmup_steps": 1}).learner.warmup_steps == 1


def test_another_algorithm_keeps_the_shared_fields_and_drops_sdars() -> None:
    grpo = config("searchqa", algorithm={"type": "grpo"})
    assert grpo.algorithm.type == "grpo" and grpo.algorithm.kl_coef == 0.001
    with pytest.raises(ValueError, match=r"^algorithm\.lam: unknown key$"):
        config("searchqa", algorithm={"type": "grpo", "lam": 0.1})
    same = config("alfworld", algorithm={"type": "sdar", "beta": 2.0})
    assert (same.algorithm.beta, same.algorithm.lam) == (2.0, 0.01)  # type: ignore[union-attr]
    base = set(Algorithm.model_fields) - {"type"}
    assert set(SHARED_ALGORITHM_FIELDS) == base


def test_set_reads_json_values_and_dotted_keys() -> None:
    assert assignment("learner.lr=2e-6") == (["learner", "lr"], 2e-6)
    assert assignment("eval.split=valid_unseen") == (["eval", "split"], "valid_unseen")
    assert assignment("max_turns=null") == (["max_turns"], None)
    assert assignment("learner.bucket=false") == (["learner", "bucket"], False)
    assert assignment("model=a=b") == (["model"], "a=b")
    assert nested(["a", "b", "c"], 1) == {"a": {"b": {"c": 1}}}
    for bad in ("lr", "=3", "learner..lr=1", "learner.=1"):
        with pytest.raises(PresetError, match="expected KEY=VALUE"):
            assignment(bad)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"learner": {"lr": 0}}, "learner.lr: Input should be greater than 0 (got 0)"),
        ({"eval": {"tasks": -1}}, "eval.tasks: Input should be greater than or equal to 0 (got -1)"),
        ({"algorithm": {"type": "ppo"}}, "algorithm.type: Input tag 'ppo'"),
        ({"algorithm": {"beta": -1}}, "algorithm.beta: Input should be greater than or equal to 0 (got -1)"),
        ({"gpus": 8}, "gpus: unknown key"),
        ({"env": "minecraft"}, "env: Input should be"),
        ({"learner": 3}, "learner: Input should be"),
        (
            {"env": "counter"},
            "config: Value error, algorithm sdar needs a teacher with skills, and env counter has none",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_field(overrides: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError) as e:
        validate(resolve("cpu-demo", overrides))
    assert str(e.value).startswith(says) and "\n" not in str(e.value)


def test_unknown_preset() -> None:
    with pytest.raises(PresetError, match="unknown preset 'big'; choose one of"):
        resolve("big", {})
    assert set(PRESETS) == {"alfworld", "webshop", "searchqa", "cpu-demo"}


def test_learner_seed_follows_the_runs_unless_set() -> None:
    assert config("cpu-demo", seed=7).learner.seed == 7
    assert config("cpu-demo", seed=7, learner={"seed": 1}).learner.seed == 1
    saved = config("cpu-demo", seed=7)
    assert validate(saved.model_dump()) == saved  # what config.json holds reads back the same


def test_a_runs_learner_autocasts_to_bf16_unless_told() -> None:
    assert config("cpu-demo").learner.autocast == "bfloat16"
    assert config("alfworld", learner={"autocast": "none"}).learner.autocast == "none"


def test_the_command_lines_envs_are_the_configs() -> None:
    from typing import get_args

    from trainer.presets import ENVS, REFERENCE

    assert get_args(RunConfig.model_fields["env"].annotation) == ENVS and set(REFERENCE) == set(ENVS)
