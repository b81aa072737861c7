"""Named starting points for `python -m trainer.run --preset NAME`, as plain data (no torch: the
command line lists them at once).

`alfworld`, `webshop` and `searchqa` are the reference's per-env runs (sdar.md §5, from the
`examples/sdar_trainer/*.sh` scripts): tasks per step x group size, turns, history, prompt and
response limits, mini-batch, learning rate and warm-up, KL, invalid-action penalty, λ and β, and the
validation sampling. They keep the packaged SmolLM2 as the model (the reference trains Qwen2.5-3B/7B
and Qwen3-1.7B, which are not shipped offline): pass `--model DIR` for yours. `cpu-demo` is the main
job's default: the reference's settings of the chosen env, shrunk to minutes on a 2-core CPU.

A preset is a partial `RunConfig` (nested dicts, dotted in `--set`), laid over the reference settings
of its env; `warmup_ratio` is resolved into `learner.warmup_steps` once the number of steps is known.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

ENVS = ("alfworld", "webshop", "searchqa", "counter")
"""The envs a run can train on (`RunConfig.env`; a test holds the two equal)."""

_ALFWORLD: dict[str, Any] = {
    "groups": 16,
    "group_size": 8,
    "steps": 150,
    "max_turns": 50,
    "history": 2,
    "max_prompt_tokens": 2048,
    "max_new_tokens": 512,
    "temperature": 1.0,
    "algorithm": {"type": "sdar", "kl_coef": 0.01, "lam": 0.01, "beta": 5.0},
    "learner": {"lr": 1e-6, "mini_batch_size": 256, "invalid_penalty": 0.1},
    "warmup_ratio": 0.0,
    "eval": {"split": "valid_seen", "tasks": 128, "temperature": 0.4},
}


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`, dicts merged key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


REFERENCE: dict[str, dict[str, Any]] = {
    "alfworld": _ALFWORLD,
    "webshop": merge(
        _ALFWORLD,
        {
            "max_turns": 15,
            "max_prompt_tokens": 4096,
            "learner": {"mini_batch_size": 64},
            "eval": {"split": "test"},
        },
    ),
    "searchqa": merge(
        _ALFWORLD,
        {
            "groups": 128,
            "max_turns": 4,
            "history": 4,
            "max_prompt_tokens": 4096,
            "algorithm": {"kl_coef": 0.001},
            "learner": {"invalid_penalty": 0.01},
            "warmup_ratio": 0.1,
            "eval": {"split": "test", "tasks": 512, "temperature": 0.0},
        },
    ),
    "counter": merge(_ALFWORLD, {"max_turns": 10, "eval": {"split": "test"}}),  # the test env
}
"""The reference's settings per env (sdar.md §5): WebShop and Search-QA as they differ from ALFWorld."""

EVAL_EVERY = 10
"""Steps between evaluations in the reference presets (ours: the reference scripts' value is not
recorded in sdar.md)."""

PRESETS: dict[str, dict[str, Any]] = {
    "alfworld": {"env": "alfworld", "eval": {"every": EVAL_EVERY}},
    "webshop": {"env": "webshop", "eval": {"every": EVAL_EVERY}},
    "searchqa": {"env": "searchqa", "eval": {"every": EVAL_EVERY}},
    "cpu-demo": {
        "steps": 2,
        "groups": 2,
        "group_size": 4,
        "max_turns": 2,
        "max_prompt_tokens": None,
        "max_new_tokens": 96,
        "eval": {"tasks": 4, "every": 0},
        # a 24 GiB machine: SmolLM2's activations over 8,192-token micro-batches peak near 10 GiB a
        # pass without it, 3.4 with it (BENCHMARKS.md), beside the policy, reference, optimizer and KV cache
        "learner": {"gradient_checkpointing": True},
    },
}
DESCRIPTIONS = {
    "alfworld": "the reference's ALFWorld run: 16 tasks x 8, 50 turns, 150 steps (sdar.md §5)",
    "webshop": "the reference's WebShop run: 16 tasks x 8, 15 turns, mini-batch 64, 150 steps",
    "searchqa": "the reference's Search-QA run: 128 tasks x 8, 4 turns, KL 0.001, warm-up 0.1, greedy eval",
    "cpu-demo": "the default: the env's reference settings shrunk to minutes on a 2-core CPU",
}
DEFAULT = "cpu-demo"


class PresetError(ValueError):
    """An unknown preset or a malformed `--set`, in one line."""


def assignment(text: str) -> tuple[list[str], Any]:
    """`learner.lr=2e-6` as (["learner", "lr"], 2e-06): the value read as JSON where it parses
    (numbers, true/false, null, lists), else kept as the string."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise PresetError(f"--set {text!r}: expected KEY=VALUE, e.g. learner.lr=2e-6")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def nested(path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return out


def resolve(preset: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run's fields: the env's reference settings, the preset, then the overrides (flags and
    `--set`, in that order). Not validated: `RunConfig` does that and names the bad field."""
    if preset not in PRESETS:
        raise PresetError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    env = overrides.get("env", chosen.get("env", "alfworld"))
    base = REFERENCE.get(env, REFERENCE["alfworld"]) if isinstance(env, str) else REFERENCE["alfworld"]
    fields = {"env": env} | merge(merge(base, chosen), overrides)
    algorithm = fields.get("algorithm")
    user_algorithm = overrides.get("algorithm", {})
    preset_type = merge(base, chosen).get("algorithm", {}).get("type")
    if (
        isinstance(algorithm, dict)
        and isinstance(user_algorithm, Mapping)
        and user_algorithm.get("type", preset_type) != preset_type
    ):
        # another algorithm than the preset's: keep only the preset's fields it has (lam and beta are
        # SDAR's), and every field the user gave (a wrong one is then the user's error, named)
        from_preset = {k: v for k, v in algorithm.items() if k not in user_algorithm}
        fields["algorithm"] = {k: v for k, v in from_preset.items() if k in SHARED_ALGORITHM_FIELDS} | dict(
            user_algorithm
        )
    ratio = fields.pop("warmup_ratio", 0.0)
    learner = fields.setdefault("learner", {})
    if isinstance(learner, dict) and "warmup_steps" not in learner and isinstance(ratio, int | float):
        steps = fields.get("steps")
        learner["warmup_steps"] = int(ratio * steps) if isinstance(steps, int) else 0
    return fields


SHARED_ALGORITHM_FIELDS = ("pg_coef", "clip_low", "clip_high", "dual_clip", "kl_coef", "entropy_coef")
"""The fields every algorithm has (`trainer.algorithms.base.Algorithm`; a test holds the two equal)."""


def listing() -> str:
    """The presets, one line each, then each one's resolved settings."""
    width = max(map(len, PRESETS))
    lines = [f"{name:<{width}}  {DESCRIPTIONS[name]}" for name in PRESETS]
    for name in PRESETS:
        fields = resolve(name, {})
        lines += ["", f"{name}:", *(f"  {k}: {json.dumps(v)}" for k, v in fields.items())]
    return "\n".join(lines)
